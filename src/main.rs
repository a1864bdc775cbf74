//! The `sparsegpt-mi` binary: the command line (`cli`) over the `sparsegpt_mi` library.

mod cli;

fn main() {
    // One line, no backtrace, for anything that slips through as a panic.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        eprintln!("error: internal error: {}", msg.replace('\n', " "));
    }));
    // Temporary files and directories go when the run is interrupted (exit 130 / 143).
    if let Err(e) = sparsegpt_mi::output::cleanup::install_signal_handler() {
        eprintln!("warning: no SIGINT/SIGTERM handler ({e}): an interrupted run may leave temporary files");
    }
    if let Err(e) = cli::run() {
        eprintln!("error: {}", cli::error_line(&e));
        std::process::exit(1);
    }
}
