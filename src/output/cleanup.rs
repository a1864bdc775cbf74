//! Temporary paths this process creates beside its outputs (`.NAME.tmpPID` JSON files,
//! `.NAME.partialPID` save directories, `.NAME.probePID` write probes): each is registered
//! while it exists, so that SIGINT/SIGTERM remove them before the process exits (130/143),
//! and those a killed run left behind (its process gone) are removed by the next run that
//! writes beside the same target, with one line on stderr.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The temporary paths that exist now, by registration id.
static REGISTRY: Mutex<Vec<(u64, PathBuf)>> = Mutex::new(Vec::new());
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The file that marks a directory as this tool's: every export holds it (written first into
/// the temporary directory), so stale temporary directories are known as ours by it.
pub const MARKER: &str = ".sparsegpt-mi-export";

/// The kinds of temporary names this tool gives, `.NAME.KINDPID`.
const KINDS: [&str; 4] = ["partial", "tmp", "probe", "old"];

fn registry() -> MutexGuard<'static, Vec<(u64, PathBuf)>> {
    // A panic while the lock was held leaves the list as it was: still the right list.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The longest file name the filesystems this tool writes to accept (Linux NAME_MAX).
const NAME_MAX: usize = 255;

/// The widest `.{stem}.KINDPID` suffix and prefix: a dot, a dot, the longest kind, a 32-bit PID.
const TEMP_OVERHEAD: usize = 2 + "partial".len() + 10;

/// The part of a temporary name that stands for the output named `name`: the name itself where
/// the longest temporary name still fits NAME_MAX, else its first bytes (at a character
/// boundary) and a hash of the whole name, so that a legal name of up to 255 bytes keeps a
/// legal temporary name, and two long names that share their start keep distinct ones.
pub fn temp_stem(name: &str) -> String {
    if name.len() + TEMP_OVERHEAD <= NAME_MAX {
        return name.to_string();
    }
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(name.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
    let mut keep = NAME_MAX - TEMP_OVERHEAD - hash.len() - 1;
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}~{hash}", &name[..keep])
}

/// The temporary name of `kind` for the output named `name`, in this process.
pub fn temp_name(name: &str, kind: &str) -> String {
    debug_assert!(KINDS.contains(&kind));
    format!(".{}.{kind}{}", temp_stem(name), std::process::id())
}

/// A temporary file or directory of this process, removed when dropped unless persisted.
/// Creation and persisting hold the registry lock, which the signal handler takes before it
/// removes anything: a path is never created after the handler's sweep, nor removed halfway
/// through being renamed into place.
pub struct TempPath {
    id: u64,
    path: PathBuf,
}

impl TempPath {
    fn register<T>(path: PathBuf, create: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<(TempPath, T)> {
        let mut reg = registry();
        let made = create(&path)?;
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        reg.push((id, path.clone()));
        Ok((TempPath { id, path }, made))
    }

    /// Creates a new file (it must not exist yet).
    pub fn create_file(path: PathBuf) -> io::Result<(TempPath, File)> {
        Self::register(path, |p| File::options().write(true).create_new(true).open(p))
    }

    /// Creates a new directory (it must not exist yet).
    pub fn create_dir(path: PathBuf) -> io::Result<TempPath> {
        Ok(Self::register(path, |p| std::fs::create_dir(p))?.0)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the temporary path into place with `finish` (a rename), with signals held off
    /// until it is done; the path is no longer this process's to remove afterwards.
    pub fn persist<T>(self, finish: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
        let mut reg = registry();
        let r = finish(&self.path);
        if r.is_ok() {
            reg.retain(|(id, _)| *id != self.id);
            std::mem::forget(self);
        }
        r
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let mut reg = registry();
        remove_path(&self.path);
        reg.retain(|(id, _)| *id != self.id);
    }
}

fn remove_path(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            // A writer on another thread (the export, while the signal handler sweeps) can add
            // a file between remove_dir_all's listing and its final rmdir, which then fails
            // (not empty): try again until the directory is gone. Once it is, nothing can be
            // created inside it (the writers never recreate it).
            for _ in 0..1000 {
                if std::fs::remove_dir_all(p).is_ok() || std::fs::symlink_metadata(p).is_err() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// Installs the SIGINT/SIGTERM handler: a thread that, on the first signal, removes every
/// registered temporary path, says so on one line, and exits with 128 + the signal number.
pub fn install_signal_handler() -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        if let Some(sig) = signals.forever().next() {
            // Held until the process exits: nothing is created or renamed after the sweep.
            let reg = registry();
            for (_, p) in reg.iter() {
                remove_path(p);
            }
            let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
            let removed = match reg.len() {
                0 => String::new(),
                n => format!("; removed {n} temporary path{}", if n == 1 { "" } else { "s" }),
            };
            // A progress bar may hold the line: start a new one on a terminal.
            let newline = if std::io::IsTerminal::is_terminal(&std::io::stderr()) { "\n" } else { "" };
            eprintln!("{newline}error: interrupted by {name}{removed}");
            std::process::exit(128 + sig);
        }
    })?;
    Ok(())
}

/// Whether process `pid` exists (on Unix: signal 0 reaches it, or it exists but is not ours).
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The PID in a temporary name of this tool for `name` (`.NAME.KINDPID`), if it is one.
fn temp_pid(entry: &str, name: &str) -> Option<(&'static str, u32)> {
    let rest = entry.strip_prefix('.')?.strip_prefix(temp_stem(name).as_str())?.strip_prefix('.')?;
    KINDS.iter().find_map(|&k| {
        let digits = rest.strip_prefix(k)?;
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok().map(|p| (k, p)))?
    })
}

/// Removes the temporary paths beside `dir/name` that a run of this tool left when it was
/// killed (their process is gone): files, and directories that are empty or hold this tool's
/// export marker. One line on stderr says what was removed.
pub fn remove_stale(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(entry) = file_name.to_str() else { continue };
        let Some((kind, pid)) = temp_pid(entry, name) else { continue };
        if process_alive(pid) {
            continue;
        }
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let ours = if meta.is_dir() {
            (kind == "partial" || kind == "old")
                && (path.join(MARKER).is_file()
                    || std::fs::read_dir(&path).map(|mut d| d.next().is_none()).unwrap_or(false))
        } else {
            meta.is_file() && kind != "partial"
        };
        if ours {
            remove_path(&path);
            if std::fs::symlink_metadata(&path).is_err() {
                removed.push(entry.to_string());
            }
        }
    }
    if !removed.is_empty() {
        removed.sort();
        eprintln!(
            "note: removed {} left in {} by an interrupted run: {}",
            if removed.len() == 1 {
                "a temporary path".to_string()
            } else {
                format!("{} temporary paths", removed.len())
            },
            dir.display(),
            removed.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_removed_while_another_thread_writes_into_it() {
        let t = tempfile::tempdir().unwrap();
        for round in 0..20 {
            let dir = t.path().join(format!("d{round}"));
            std::fs::create_dir(&dir).unwrap();
            let writer = {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    // Files keep coming, as an export writes them, until the directory is gone
                    // (or a bound, where it survived).
                    let mut i = 0u64;
                    while i < 5000 && File::create(dir.join(i.to_string())).is_ok() {
                        i += 1;
                        std::thread::sleep(std::time::Duration::from_micros(20));
                    }
                })
            };
            std::thread::sleep(std::time::Duration::from_millis(2));
            remove_path(&dir);
            writer.join().unwrap();
            assert!(!dir.exists(), "round {round}: the directory survived its removal");
        }
    }

    #[test]
    fn temporary_names_are_recognised_only_for_their_target() {
        assert_eq!(temp_pid(".out.partial123", "out"), Some(("partial", 123)));
        assert_eq!(temp_pid(".r.json.tmp9", "r.json"), Some(("tmp", 9)));
        assert_eq!(temp_pid(".r.json.tmp9", "r"), None);
        assert_eq!(temp_pid(".out.partial", "out"), None);
        assert_eq!(temp_pid(".out.partial12x", "out"), None);
        assert_eq!(temp_pid("out.partial12", "out"), None);
    }

    #[test]
    fn temporary_names_of_long_names_fit_name_max() {
        let long = "é".repeat(127) + "x"; // 255 bytes, a character boundary off the cut
        let other = "é".repeat(127) + "y";
        for name in [long.as_str(), other.as_str(), &"a".repeat(236), &"a".repeat(237)] {
            for kind in KINDS {
                let t = format!(".{}.{kind}{}", temp_stem(name), u32::MAX);
                assert!(t.len() <= NAME_MAX, "{} bytes for a {}-byte name", t.len(), name.len());
                assert_eq!(temp_pid(&format!(".{}.{kind}77", temp_stem(name)), name), Some((kind, 77)));
            }
        }
        // Short names are kept as they are; long ones that share a start stay apart.
        assert_eq!(temp_stem(&"a".repeat(236)), "a".repeat(236));
        assert_ne!(temp_stem(&"a".repeat(237)), "a".repeat(237));
        assert_ne!(temp_stem(&long), temp_stem(&other));
    }

    #[test]
    fn stale_paths_of_dead_processes_are_removed_and_others_kept() {
        let t = tempfile::tempdir().unwrap();
        // A PID above the kernel's maximum (4194304) is never alive.
        let dead = 4_999_999u32;
        std::fs::write(t.path().join(format!(".r.json.tmp{dead}")), b"{").unwrap();
        std::fs::create_dir(t.path().join(format!(".out.partial{dead}"))).unwrap();
        std::fs::write(t.path().join(format!(".out.partial{dead}")).join(super::MARKER), b"").unwrap();
        // Not ours: a directory without the marker, a live process's file, another name.
        std::fs::create_dir(t.path().join(format!(".out.old{dead}"))).unwrap();
        std::fs::write(t.path().join(format!(".out.old{dead}")).join("user.txt"), b"x").unwrap();
        let live = format!(".out.tmp{}", std::process::id());
        std::fs::write(t.path().join(&live), b"").unwrap();
        std::fs::write(t.path().join(format!(".other.tmp{dead}")), b"").unwrap();
        remove_stale(t.path(), "out");
        remove_stale(t.path(), "r.json");
        let mut left: Vec<String> =
            std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, vec![format!(".other.tmp{dead}"), format!(".out.old{dead}"), live]);
    }

    #[test]
    fn a_temp_path_is_removed_unless_persisted() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join(".a.tmp1");
        drop(TempPath::create_file(p.clone()).unwrap());
        assert!(!p.exists());
        let (tmp, _) = TempPath::create_file(p.clone()).unwrap();
        let dest = t.path().join("a");
        tmp.persist(|from| std::fs::rename(from, &dest)).unwrap();
        assert!(dest.is_file() && !p.exists());
        assert!(registry().iter().all(|(_, q)| q != &p));
    }
}
