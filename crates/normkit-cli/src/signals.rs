//! Leaving no temporary file behind when stopped by a signal: a process killed
//! by SIGINT (Ctrl-C), SIGTERM or SIGHUP runs no destructors, so the
//! temporary files of outputs being written (normkit-scale's
//! [`normkit_scale::atomic`]) would stay beside their destinations.
//!
//! [`remove_temp_files_on_signal`] blocks those signals in the calling thread,
//! and so in every thread it starts later (they inherit its signal mask), and
//! starts one thread that waits for them with `sigwait`: no signal handler
//! runs, so the clean-up may do anything. It then exits with status
//! 128 + the signal's number, as a shell reports a process killed by it.

/// Call before any other thread is started (rayon's pool included).
#[cfg(unix)]
pub fn remove_temp_files_on_signal() {
    let set = termination_signals();
    // SAFETY: `set` is an initialised signal set; a null old-set pointer is
    // allowed. This changes the calling thread's mask only.
    let blocked = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if blocked != 0 {
        return; // The signals keep their default action: no clean-up, no harm.
    }
    std::thread::spawn(move || {
        let mut signal: libc::c_int = 0;
        // SAFETY: `set` is initialised and `signal` is a valid place to write.
        if unsafe { libc::sigwait(&set, &mut signal) } == 0 {
            normkit_scale::atomic::remove_pending();
            std::process::exit(128 + signal);
        }
    });
}

/// Elsewhere the signals keep their default action.
#[cfg(not(unix))]
pub fn remove_temp_files_on_signal() {}

/// SIGINT, SIGTERM and SIGHUP as a `sigset_t`.
#[cfg(unix)]
fn termination_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set before sigaddset adds to
    // it; both only write into `set`, and fail only for invalid signals.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}
