//! Third-party readers of untrusted bytes (candle's unpickler, the parquet crate) panic on some
//! malformed input (the fuzz campaign found `Vec::remove` out of range in candle's tensor
//! records and negative column offsets in parquet footers). [`contain`] runs such a reader
//! with its panic caught and turned into an error, with the process's panic hook (which
//! prints "internal error") held off meanwhile, so a damaged file is refused in one line and,
//! where it came from the hub cache, removed like any other unreadable file.

use std::sync::Mutex;

/// Serialises the swaps of the process-wide panic hook.
static HOOK: Mutex<()> = Mutex::new(());

/// `read()`'s result, or an error saying `what` failed (with the panic's message) where it
/// panicked.
pub fn contain<T>(what: &str, read: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let guard = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read));
    std::panic::set_hook(previous);
    drop(guard);
    result.unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(anyhow::anyhow!("{what} failed on malformed input ({})", crate::hub::one_line(&msg)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_reader_becomes_an_error_and_the_hook_comes_back() {
        let e = contain("the reader", || -> anyhow::Result<()> {
            // What candle's tensor records did with a short tuple.
            Vec::<u8>::new().remove(3);
            Ok(())
        })
        .unwrap_err()
        .to_string();
        assert_eq!(e, "the reader failed on malformed input (removal index (is 3) should be < len (is 0))");
        assert_eq!(contain("x", || Ok(5)).unwrap(), 5);
        assert!(contain("x", || -> anyhow::Result<()> { anyhow::bail!("plain") }).unwrap_err().to_string() == "plain");
    }
}
