//! Progress bars for every long step (hidden automatically when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(len: usize, label: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_prefix(label.to_string());
    pb
}

/// With `SPARSEGPT_MI_TRACE` set, one timestamped line per step of the layer loop and of
/// planning on stderr (where a long run spends its time, or where it stalls, without a
/// debugger on the GPU machine). The message is only formed when tracing.
pub fn trace(message: impl FnOnce() -> String) {
    use std::sync::OnceLock;
    static START: OnceLock<Option<std::time::Instant>> = OnceLock::new();
    if let Some(start) = START.get_or_init(|| std::env::var_os("SPARSEGPT_MI_TRACE").map(|_| std::time::Instant::now()))
    {
        eprintln!("trace {:>9.3} s [{:?}] {}", start.elapsed().as_secs_f64(), std::thread::current().id(), message());
    }
}
