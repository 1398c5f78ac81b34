//! The cairn binary: install signal handlers, run the CLI, exit with its code.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn main() {
    cairn::sys::bound_allocator();
    let cancel = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal ends the process at once, as users expect from a stuck Ctrl-C.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, cancel.clone());
        let _ = signal_hook::flag::register(sig, cancel.clone());
    }
    let env = cairn::cli::Env::from_process(&cancel);
    let code = cairn::cli::run(
        std::env::args_os().collect(),
        &env,
        &mut cairn::sys::QuietStdout(std::io::stdout()),
        &mut std::io::stderr(),
    );
    std::process::exit(code);
}
