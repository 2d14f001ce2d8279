//! `normkit bench`'s refusals of bad options, through the binary: each is a
//! one-line error with exit status 2, given before anything is measured (the
//! benchmark itself is a program, not a test: nothing here times anything).

use std::process::Command;

fn refused(args: &[&str], needle: &str) {
    let out = match Command::new(env!("CARGO_BIN_EXE_normkit")).arg("bench").args(args).output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run normkit: {e}"),
    };
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{args:?}: stdout {stdout}, stderr {stderr}");
    assert!(stderr.contains(needle), "{args:?}: {stderr:?} lacks {needle:?}");
    assert!(!stdout.contains("copy_gbps") && !stderr.contains("copy_gbps"), "{args:?} measured first");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_options_are_refused_before_measuring() {
    refused(&["--threads", "0"], "--threads must be at least 1");
    refused(&["--dtype", "f16"], "unknown --dtype \"f16\": expected f32 or f64");
    refused(&["--op", "nosuchop"], "--op \"nosuchop\" matches no op (ops: layer_norm, rms_norm, batch_norm_train");
    refused(&["--compare", "/no/such/peers.json"], "cannot read /no/such/peers.json");
}
