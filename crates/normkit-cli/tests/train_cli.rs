//! `normkit train` end to end, through the binary: a 200-step smoke run on the
//! bundled digits, `--json`, `--plot`, `--save`, `--compare`, `--data`,
//! determinism, and every kind of bad input (one-line error, exit status 2).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn normkit(args: &[&str]) -> Output {
    match Command::new(env!("CARGO_BIN_EXE_normkit")).arg("train").args(args).output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run normkit: {e}"),
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("normkit-train-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v.get(key).and_then(serde_json::Value::as_f64).unwrap_or_else(|| panic!("no number {key} in {v}"))
}

#[test]
fn smoke_run_of_200_steps_learns_and_writes_json_plot_and_model() {
    let dir = scratch("smoke");
    let (plot, model) = (dir.join("curves.svg"), dir.join("model.safetensors"));
    let out = normkit(&[
        "--steps",
        "200",
        "--eval-every",
        "100",
        "--json",
        "--plot",
        plot.to_str().unwrap_or_default(),
        "--save",
        model.to_str().unwrap_or_default(),
    ]);
    assert!(out.status.success(), "normkit train failed: {}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 4, "evaluations at steps 0, 100, 200 and a final line: {lines:?}");
    for (line, step) in lines.iter().zip([0.0, 100.0, 200.0]) {
        assert_eq!(num(line, "step"), step);
        let (loss, acc) = (num(line, "train_loss"), num(line, "test_accuracy"));
        assert!(loss.is_finite() && loss > 0.0 && (0.0..=1.0).contains(&acc), "{line}");
        let (p15, p50, p85) = (num(line, "probe_p15"), num(line, "probe_p50"), num(line, "probe_p85"));
        assert!(p15 <= p50 && p50 <= p85, "percentiles out of order: {line}");
    }
    // 200 steps of BatchNorm + SGD take the 10-class network well past chance
    // (about 0.1 at step 0).
    let (first, last) = (num(&lines[0], "test_accuracy"), num(&lines[2], "test_accuracy"));
    assert!(first < 0.3 && last > 0.5, "test accuracy {first} at step 0, {last} at step 200");
    assert!(num(&lines[0], "train_loss") > num(&lines[2], "train_loss"));
    assert_eq!(num(&lines[3], "final_test_accuracy"), last);
    assert!(num(&lines[3], "wall_s") > 0.0);

    let svg = std::fs::read_to_string(&plot).unwrap_or_default();
    assert!(svg.contains("<svg") && svg.contains("test accuracy") && svg.contains("85th percentile"), "{svg:.200}");
    let tensors = candle_core::safetensors::load(&model, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", model.display()));
    for name in ["hidden0.weight", "hidden2.norm.running_mean", "hidden2.norm.running_var", "out.weight", "out.bias"] {
        assert!(tensors.contains_key(name), "{name} missing from the saved model: {:?}", tensors.keys());
    }
    // Written atomically: no temporary file is left beside them.
    assert_eq!(files_in(&dir), ["curves.svg", "model.safetensors"]);
    // With the modes `File::create` gives (the model's was 0600 whatever the umask).
    if let Some(umask) = umask() {
        for path in [&plot, &model] {
            assert_eq!(mode_of(path), 0o666 & !umask, "{}", path.display());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// This process's umask (Linux only), which the command inherits.
fn umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

#[cfg(unix)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or_default()
}

#[cfg(not(unix))]
fn mode_of(_: &Path) -> u32 {
    0
}

#[test]
fn a_seed_and_thread_count_determine_the_run() {
    let run = |seed: &str, threads: &str| -> Vec<String> {
        let out = normkit(&["--steps", "40", "--eval-every", "20", "--seed", seed, "--threads", threads, "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        // Everything but the wall time.
        stdout(&out).lines().filter(|l| !l.contains("wall_s")).map(str::to_string).collect()
    };
    let a = run("7", "2");
    assert_eq!(a.len(), 3);
    assert_eq!(a, run("7", "2"), "same seed and threads, different runs");
    assert_ne!(a, run("8", "2"), "the seed changes nothing");
}

#[test]
fn compare_prints_one_table_and_draws_one_plot() {
    let dir = scratch("compare");
    let plot = dir.join("both.png");
    let args = ["--compare", "norm=none,batch", "--steps", "20", "--eval-every", "10", "--plot"];
    let out = normkit(&[&args[..], &[plot.to_str().unwrap_or_default()]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.matches("test accuracy\n").count(), 1, "one table: {text}");
    let table: Vec<&str> = text.lines().skip_while(|l| *l != "test accuracy").collect();
    assert!(table[1].contains("norm=none") && table[1].contains("norm=batch"), "{text}");
    for (row, step) in table[2..5].iter().zip(["0", "10", "20"]) {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells.len(), 3, "step and one accuracy per run: {row}");
        assert_eq!(cells[0], step);
    }
    let png = std::fs::read(&plot).unwrap_or_default();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG: {} bytes", png.len());
    assert_eq!(files_in(&dir), ["both.png"]);

    // With --json, each line names its configuration.
    let out = normkit(&["--compare", "lr=0.01,0.1", "--steps", "10", "--eval-every", "10", "--json"]);
    let lines = json_lines(&out);
    let configs: Vec<&str> = lines.iter().filter_map(|l| l.get("config").and_then(|c| c.as_str())).collect();
    assert_eq!(configs, ["lr=0.01", "lr=0.01", "lr=0.01", "lr=0.1", "lr=0.1", "lr=0.1"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An IDX file of unsigned bytes: magic `0x0000_08_<rank>`, the dimensions, the data.
fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// `n` 4x4 images whose class (0..3) is where the bright pixel is.
fn tiny(n: usize) -> (Vec<u8>, Vec<u8>) {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for i in 0..n {
        let class = (i * 7 + i / 3) % 3;
        let mut img = [10u8; 16];
        img[class * 5] = 250;
        images.extend_from_slice(&img);
        labels.push(class as u8);
    }
    (idx(&[n as u32, 4, 4], &images), idx(&[n as u32], &labels))
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

#[test]
fn data_dir_reads_idx_files_plain_or_split() {
    // One prefix: split at --train-size; uncompressed files.
    let dir = scratch("data-one");
    let (images, labels) = tiny(30);
    write(&dir.join("toy-images-idx3-ubyte"), &images);
    write(&dir.join("toy-labels-idx1-ubyte"), &labels);
    let d = dir.to_str().unwrap_or_default();
    let common = ["--steps", "30", "--eval-every", "30", "--hidden", "8", "--batch-size", "5"];
    let out = normkit(&[&["--data", d, "--train-size", "24"][..], &common].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("(24 train, 6 test, 4x4 pixels, 3 classes)"), "{}", stdout(&out));
    // The default cut (8,000) does not fit 30 samples: a clear error.
    let out = normkit(&[&["--data", d][..], &common].concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot split 30 samples into 8000"), "{}", stderr(&out));

    // train-* and t10k-*: the two splits as they come.
    let dir2 = scratch("data-two");
    let (ti, tl) = tiny(20);
    let (vi, vl) = tiny(9);
    write(&dir2.join("train-images-idx3-ubyte"), &ti);
    write(&dir2.join("train-labels-idx1-ubyte"), &tl);
    write(&dir2.join("t10k-images-idx3-ubyte"), &vi);
    write(&dir2.join("t10k-labels-idx1-ubyte"), &vl);
    let out = normkit(&[&["--data", dir2.to_str().unwrap_or_default()][..], &common].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("(20 train, 9 test, 4x4 pixels, 3 classes)"), "{}", stdout(&out));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir2);
}

/// Runs `normkit train ARGS` and checks: exit status 2, and one line on stderr
/// that contains `needle`.
fn refused(args: &[&str], needle: &str) {
    let out = normkit(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "normkit train {args:?}: status {:?}, stderr {err}", out.status);
    assert_eq!(err.trim_end().lines().count(), 1, "normkit train {args:?}: not one line: {err}");
    assert!(err.contains(needle), "normkit train {args:?}: {err:?} does not say {needle:?}");
    assert!(stdout(&out).is_empty(), "normkit train {args:?} printed {}", stdout(&out));
}

#[test]
fn bad_data_is_a_one_line_error_with_status_2() {
    let dir = scratch("bad-data");
    let d = dir.to_str().unwrap_or_default();
    let missing = dir.join("nowhere");
    refused(&["--data", missing.to_str().unwrap_or_default()], "cannot read --data");
    refused(&["--data", d], "no *-images-idx3-ubyte[.gz] file found");

    let (images, labels) = tiny(12);
    write(&dir.join("x-images-idx3-ubyte"), &images);
    refused(&["--data", d], "no labels file x-labels-idx1-ubyte");

    // Truncated data, then a truncated header.
    write(&dir.join("x-labels-idx1-ubyte"), &labels[..labels.len() - 3]);
    refused(&["--data", d], "truncated: dimensions [12] need 12 bytes of data, found 9");
    write(&dir.join("x-labels-idx1-ubyte"), &labels[..6]);
    refused(&["--data", d], "truncated: 6 bytes, the header needs 8");

    // Wrong magic number: an images file given as labels.
    write(&dir.join("x-labels-idx1-ubyte"), &images);
    refused(&["--data", d], "wrong magic number 0x00000803, expected 0x00000801");

    // Images and labels that do not match.
    write(&dir.join("x-labels-idx1-ubyte"), &idx(&[11], &[0; 11]));
    refused(&["--data", d], "12 images but 11 labels");

    // A gzip file cut short.
    std::fs::remove_file(dir.join("x-labels-idx1-ubyte")).unwrap_or_default();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &labels).unwrap_or_default();
    let gz = gz.finish().unwrap_or_default();
    write(&dir.join("x-labels-idx1-ubyte.gz"), &gz[..gz.len() / 2]);
    refused(&["--data", d], "cannot decompress (gzip)");

    // The same images twice, plain and compressed.
    write(&dir.join("x-labels-idx1-ubyte"), &labels);
    std::fs::remove_file(dir.join("x-labels-idx1-ubyte.gz")).unwrap_or_default();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &images).unwrap_or_default();
    write(&dir.join("x-images-idx3-ubyte.gz"), &gz.finish().unwrap_or_default());
    refused(&["--data", d], "hold the images of 'x'; keep one");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Outputs that could not be written, or would replace an input or each
/// other, are refused before training (found by an outside review: `--save`
/// onto a data file replaced it, exit 0; `--plot` and `--save` of one name kept
/// the plot; an unwritable place was found after the whole run).
#[test]
fn outputs_that_cannot_be_written_are_refused_before_training() {
    let dir = scratch("outputs");
    let (images, labels) = tiny(30);
    write(&dir.join("x-images-idx3-ubyte"), &images);
    write(&dir.join("x-labels-idx1-ubyte"), &labels);
    let (d, data_file) = (dir.to_str().unwrap_or_default(), dir.join("x-images-idx3-ubyte"));
    let data = ["--data", d, "--train-size", "24", "--batch-size", "5", "--hidden", "8", "--steps", "2"];
    let data_path = data_file.to_str().unwrap_or_default();
    refused(&[&data[..], &["--save", data_path]].concat(), "is an input of this run");
    let both = dir.join("out.png");
    let both = both.to_str().unwrap_or_default();
    refused(&["--plot", both, "--save", both, "--steps", "2"], "--plot and --save name the same file");
    std::fs::create_dir_all(dir.join("sub.png")).unwrap_or_default();
    let sub = dir.join("sub.png");
    refused(&["--plot", sub.to_str().unwrap_or_default(), "--steps", "2"], "is a directory");
    // Data and outputs are as they were.
    assert_eq!(std::fs::read(&data_file).unwrap_or_default(), images);
    assert_eq!(files_in(&dir), ["sub.png", "x-images-idx3-ubyte", "x-labels-idx1-ubyte"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A table of runs that evaluate at different steps has a row for every step
/// any run evaluated at, and each run's accuracy in its own row (it followed
/// the first run's steps and filled the cells by position).
#[test]
fn compare_table_rows_are_the_steps_of_every_run() {
    let out = normkit(&["--compare", "steps=15,20", "--eval-every", "10"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let table: Vec<Vec<&str>> =
        text.lines().skip_while(|l| *l != "test accuracy").skip(2).map(|l| l.split_whitespace().collect()).collect();
    let steps: Vec<&str> = table.iter().map(|cells| cells[0]).collect();
    assert_eq!(steps, ["0", "10", "15", "20", "wall"], "{text}");
    assert_eq!(table[2][2], "-", "the run of 20 steps has no evaluation at step 15: {text}");
    assert_eq!(table[3][1], "-", "the run of 15 steps has none at step 20: {text}");
}

#[test]
fn bad_options_are_one_line_errors_with_status_2() {
    refused(&["--hidden", "100,0,100"], "a hidden size of 0");
    refused(&["--hidden", "100,,100"], "is not a layer size");
    refused(&["--norm", "banana"], "--norm 'banana': unknown value (one of none, batch, layer, rms, group)");
    refused(&["--activation", "gelu"], "--activation 'gelu': unknown value");
    refused(&["--optimizer", "lbfgs"], "--optimizer 'lbfgs': unknown value");
    refused(&["--arch", "rnn"], "--arch 'rnn': unknown value");
    refused(&["--lr=-1"], "--lr -1: must be a positive number");
    refused(&["--lr", "fast"], "--lr 'fast': not a valid number");
    refused(&["--steps", "0"], "--steps 0: must be at least 1");
    refused(&["--dropout", "1"], "--dropout 1: must lie in [0, 1)");
    refused(&["--threads", "0"], "--threads '0'");
    refused(&["--batch-size", "1"], "BatchNorm needs at least 2 samples");
    refused(&["--norm", "group", "--groups", "3"], "hidden width 100 is not divisible");
    refused(&["--plot", "curves.jpg"], "unknown format (use a .svg or .png file name)");
    refused(&["--compare", "norm"], "expected OPTION=V1,V2");
    refused(&["--compare", "colour=red,blue"], "unknown option 'colour'");
    refused(&["--compare", "norm=none,banana"], "--norm 'banana': unknown value");
    refused(&["--train-size", "0"], "--train-size '0'");
    // Refused before training, not after it.
    refused(&["--plot", "/no/such/dir/curves.svg"], "--plot: no directory /no/such/dir");
    refused(&["--save", "/no/such/dir/m.safetensors"], "--save: no directory /no/such/dir");
    refused(&["--hidden", ""], "--hidden '': give a value");
    refused(&["--batch-size", "100000"], "--batch-size 100000: the training set has 8000 samples");
    refused(&["--train-size", "1"], "--batch-size 60: the training set has 1 samples");
    // clap's own usage errors exit with status 2 as well.
    let out = normkit(&["--no-such-option"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_closed_standard_output_stops_the_run_quietly() {
    let out = close_after_first_line(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    // Unless a plot was asked for, which is then not written: that is said.
    let dir = scratch("closed");
    let plot = dir.join("p.svg");
    let out = close_after_first_line(&["--plot", plot.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--plot/--save not written"), "{}", stderr(&out));
    assert_eq!(files_in(&dir), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `normkit train --json` with `extra` arguments, reads one line of its
/// output and closes the pipe, as `normkit train --json | head -1` does.
fn close_after_first_line(extra: &[&str]) -> Output {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let spawned = Command::new(env!("CARGO_BIN_EXE_normkit"))
        .args(["train", "--steps", "400", "--eval-every", "100", "--json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = spawned.unwrap_or_else(|e| panic!("cannot run normkit: {e}"));
    let Some(out) = child.stdout.take() else { panic!("no stdout") };
    let mut first = String::new();
    BufReader::new(out).read_line(&mut first).unwrap_or_default();
    assert!(first.contains("\"step\":0"), "{first}");
    child.wait_with_output().unwrap_or_else(|e| panic!("normkit did not finish: {e}"))
}
