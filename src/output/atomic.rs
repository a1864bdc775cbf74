//! Result files: written atomically (temp file + rename, never half-written), and every
//! output path checked before any work for each way the final write could fail.

use super::cleanup::{self, TempPath};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `value` as pretty JSON to `path` through a temp file in the same directory.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomic(path, text.as_bytes())
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let (tmp, mut file) = TempPath::create_file(dir.join(cleanup::temp_name(name, "tmp")))
        .with_context(|| format!("cannot write beside {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("cannot write {}", tmp.path().display()))?;
    drop(file);
    tmp.persist(|from| std::fs::rename(from, path))
        .with_context(|| format!("cannot move the result into place at {}", path.display()))?;
    Ok(())
}

/// The directory a path's last component lives in ("." for a bare name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// The path's last component as written: `Path::file_name` reads "a/." as "a".
pub(crate) fn last_component(path: &Path) -> String {
    let s = path.to_string_lossy();
    s.rsplit('/').next().unwrap_or("").to_string()
}

/// The umask of this process (from /proc where it says, else read and restored once).
pub fn umask() -> u32 {
    static MASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:").and_then(|v| u32::from_str_radix(v.trim(), 8).ok()))
            .unwrap_or_else(|| {
                // SAFETY: umask only swaps the process's mask; it is put back at once.
                unsafe {
                    let m = libc::umask(0o022);
                    libc::umask(m);
                    m as u32
                }
            })
    })
}

/// Checks before any work that a file can be written at `path` at the end of the run: the
/// path names a file (not `.`, `..` or a path ending in `/`), is not an existing directory or
/// other non-file, every existing folder above it is a directory, and the nearest existing one
/// can be written (a probe file is created and removed there). Removes stale temporary files
/// of this tool beside it.
pub fn check_writable(path: &Path, flag: &str) -> Result<()> {
    let shown = path.display();
    if path.as_os_str().is_empty() {
        bail!("{flag} is empty: give a file name");
    }
    let last = last_component(path);
    if last.is_empty() || last == "." || last == ".." {
        bail!("{flag} {shown}: names a directory; give a file name");
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => bail!("{flag} {shown}: is an existing directory; give a file name"),
        Ok(m) if !m.is_file() => bail!("{flag} {shown}: exists and is not a regular file"),
        // A name the filesystem refuses (too long, a loop of links…) fails here, not at the end.
        Err(e) if e.kind() != std::io::ErrorKind::NotFound && e.raw_os_error() != Some(libc::ENOTDIR) => {
            bail!("{flag} {shown}: cannot be used ({e})")
        }
        _ => {}
    }
    check_folder_above(path, flag)?;
    cleanup::remove_stale(parent_dir(path), &last);
    Ok(())
}

/// Checks before any work that files can be written into folder `dir` (it may not exist
/// yet): an existing `dir` must be a directory, and so must every existing folder above it;
/// the nearest existing one is probed for writing.
pub fn check_folder_writable(dir: &Path, flag: &str) -> Result<()> {
    if dir.as_os_str().is_empty() {
        bail!("{flag} is empty: give a folder");
    }
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => probe(dir, dir, flag),
        Ok(_) => bail!("{flag} {}: exists and is not a directory", dir.display()),
        Err(_) => check_folder_above(&dir.join("x"), flag),
    }
}

/// The folders above `path` (its parent first): every existing one must be a directory, and
/// the nearest existing one writable.
pub(crate) fn check_folder_above(path: &Path, flag: &str) -> Result<()> {
    let mut dir = parent_dir(path).to_path_buf();
    loop {
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => return probe(&dir, path, flag),
            Ok(_) => bail!("{flag} {}: {} is not a directory", path.display(), dir.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
                dir = match dir.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ if dir != Path::new(".") => PathBuf::from("."),
                    _ => bail!("{flag} {}: no existing folder above it", path.display()),
                };
            }
            Err(e) => bail!("{flag} {}: cannot use {} ({e})", path.display(), dir.display()),
        }
    }
}

/// Creates and removes a probe file in `dir`, which `path` needs to be writable.
fn probe(dir: &Path, path: &Path, flag: &str) -> Result<()> {
    let name = last_component(path);
    let name = if name.is_empty() || name == "." || name == ".." { "out".to_string() } else { name };
    match TempPath::create_file(dir.join(cleanup::temp_name(&name, "probe"))) {
        Ok((tmp, _)) => {
            drop(tmp);
            Ok(())
        }
        Err(e) => bail!("{flag} {}: cannot write under {} ({e})", path.display(), dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_targets_that_would_fail_at_the_end_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let dir = t.path().display().to_string();
        for (p, why) in [
            (format!("{dir}/"), "names a directory"),
            (format!("{dir}/."), "names a directory"),
            (format!("{dir}/.."), "names a directory"),
            (dir.clone(), "is an existing directory"),
            (format!("{dir}/f/r.json"), "is not a directory"),
            (format!("{dir}/f/a/b/r.json"), "is not a directory"),
            ("/proc/forbidden/r.json".to_string(), "cannot write under /proc"),
            ("/dev/null".to_string(), "not a regular file"),
        ] {
            let e = check_writable(Path::new(&p), "--json").unwrap_err().to_string();
            assert!(e.contains(why), "{p}: {e}");
        }
        check_writable(&t.path().join("new/deeper/r.json"), "--json").unwrap();
        check_writable(&file, "--json").unwrap();
        let e = check_folder_writable(&file, "--out").unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        check_folder_writable(t.path(), "--out").unwrap();
        // Nothing left behind by the probes.
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_255_byte_name_is_probed_and_written_through_a_temporary_name_that_fits() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("r".repeat(250) + ".json");
        check_writable(&p, "--json").unwrap();
        write_atomic(&p, b"{}").unwrap();
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
        let e = check_writable(&t.path().join("r".repeat(256)), "--json").unwrap_err().to_string();
        assert!(e.contains("cannot be used (File name too long"), "{e}");
    }

    #[test]
    fn atomic_writes_leave_no_temporary_file_and_ordinary_modes() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("sub/r.json");
        write_json_atomic(&p, &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\n  \"a\": 1\n}");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask(), "{mode:o}");
    }
}
