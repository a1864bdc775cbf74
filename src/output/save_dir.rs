//! The `--save` directory's life. `check_save_target` (before any work) refuses a target whose
//! end would fail or would delete what this tool did not write — an existing non-empty
//! directory that is not a previous export (the `MARKER` file lists what an export wrote)
//! unless `--overwrite`, the current directory or one above it, a symbolic link, a mount point
//! (the final swap is a rename, which a mount point refuses) or, with `--overwrite`, a
//! directory holding one (its removal would reach into the mounted filesystem);
//! `check_not_model` (once the model's files are known) refuses any target that holds one of
//! them. [`PartialExport`] is the export being written: a temporary sibling `.NAME.partialPID`
//! (registered for removal on a signal), marked at once; `finish` gives its files ordinary
//! modes (0666/0777 less the umask), writes the marker listing them, checks the target again
//! and swaps it into place (an atomic exchange where the filesystem has one), so a failed or
//! interrupted run never leaves half a model nor loses the previous one.

use super::atomic::{check_folder_above, last_component, parent_dir};
use super::cleanup::{self, TempPath};
use crate::model::files::{ModelFiles, TokenizerFiles};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The file every export holds: the tool, its version, and the files the export wrote.
pub use super::cleanup::MARKER;

/// A checked `--save` target.
#[derive(Debug, Clone)]
pub struct SaveTarget {
    /// As the user gave it (for messages).
    pub given: PathBuf,
    /// Absolute, with `.` and `..` resolved (symbolic links in the folders above resolved
    /// where they exist).
    pub dir: PathBuf,
    pub overwrite: bool,
}

impl SaveTarget {
    pub(crate) fn parent(&self) -> &Path {
        parent_dir(&self.dir)
    }
    pub(crate) fn name(&self) -> String {
        last_component(&self.dir)
    }
}

/// `path` absolute: the existing folders above its last component canonical (symlinks and
/// `..` resolved as the kernel resolves them), the rest with `.` and `..` applied; the last
/// component itself is kept as written (a symlink there stays visible).
pub(crate) fn resolved(path: &Path) -> Result<PathBuf> {
    use std::path::Component;
    let abs = std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let comps: Vec<Component> = abs.components().collect();
    let Some((last, above)) = comps.split_last() else { return Ok(abs) };
    let mut n = above.len();
    let mut base = loop {
        if n == 0 {
            break PathBuf::from("/");
        }
        if let Ok(c) = std::fs::canonicalize(above[..n].iter().collect::<PathBuf>()) {
            break c;
        }
        n -= 1;
    };
    for c in above[n..].iter().chain([last]) {
        match c {
            Component::ParentDir => {
                base.pop();
            }
            Component::CurDir => {}
            c => base.push(c),
        }
    }
    Ok(base)
}

/// Checks before any work that `dir` can be made an export at the end of the run without
/// deleting anything this tool did not write (see the module's text); removes stale
/// temporary directories of this tool beside it.
pub fn check_save_target(dir: &Path, overwrite: bool) -> Result<SaveTarget> {
    let shown = dir.display();
    if dir.as_os_str().is_empty() {
        bail!("--save is empty: give a directory");
    }
    let last = last_component(Path::new(dir.to_string_lossy().trim_end_matches('/')));
    if last.is_empty() || last == "." || last == ".." {
        bail!("--save {shown}: name the export directory itself ('.', '..' and '/' cannot be replaced)");
    }
    let target = SaveTarget { given: dir.to_path_buf(), dir: resolved(dir)?, overwrite };
    if let Ok(cwd) = std::env::current_dir().and_then(std::fs::canonicalize) {
        if cwd.starts_with(&target.dir) {
            bail!("--save {shown}: is the current directory or holds it; save somewhere else");
        }
    }
    check_existing(&target)?;
    check_mounts(&target)?;
    check_folder_above(&target.dir, "--save")?;
    cleanup::remove_stale(target.parent(), &target.name());
    Ok(target)
}

/// The target as it is now: absent, an empty directory, a previous export (nothing in it but
/// what the marker lists), or, with `--overwrite`, any directory.
fn check_existing(target: &SaveTarget) -> Result<()> {
    let shown = target.given.display();
    let meta = match std::fs::symlink_metadata(&target.dir) {
        Ok(m) => m,
        // Absent, or a file above it (which the check of the folders above names).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(()),
        Err(e) => bail!("--save {shown}: cannot read it ({e})"),
    };
    if meta.file_type().is_symlink() {
        bail!("--save {shown}: is a symbolic link; name the directory itself");
    }
    if !meta.is_dir() {
        bail!("--save {shown}: exists and is not a directory");
    }
    if target.overwrite {
        return Ok(());
    }
    let entries: Vec<String> = std::fs::read_dir(&target.dir)
        .with_context(|| format!("--save {shown}: cannot list it"))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let Some(written) = read_marker(&target.dir) else {
        bail!(
            "--save {shown}: exists and is not empty, and is not an export of this tool (no {MARKER}); choose a new directory, or pass --overwrite to replace it and everything in it"
        );
    };
    let mut foreign: Vec<&String> = entries.iter().filter(|e| *e != MARKER && !written.contains(e)).collect();
    if !foreign.is_empty() {
        foreign.sort();
        bail!(
            "--save {shown}: is a previous export but also holds files it did not write ({}); move them, choose a new directory, or pass --overwrite",
            foreign.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// The files a previous export says it wrote, if `dir` holds a readable marker of this tool.
fn read_marker(dir: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(dir.join(MARKER)).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    if json.get("tool")?.as_str()? != env!("CARGO_PKG_NAME") {
        return None;
    }
    json.get("files")?.as_array()?.iter().map(|f| f.as_str().map(str::to_string)).collect()
}

fn write_marker(dir: &Path, files: &[String]) -> Result<()> {
    let marker = serde_json::json!({
        "tool": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        "files": files,
    });
    std::fs::write(dir.join(MARKER), serde_json::to_string_pretty(&marker)?)
        .with_context(|| format!("cannot write {}", dir.join(MARKER).display()))
}

/// Every file of the input model, as given and with symlinks resolved.
pub(crate) fn model_paths(files: &ModelFiles) -> Vec<PathBuf> {
    let mut list = vec![files.config.clone()];
    list.extend(files.weights.iter().cloned());
    match &files.tokenizer {
        TokenizerFiles::Json(p) => list.push(p.clone()),
        TokenizerFiles::VocabMerges { vocab, merges } => list.extend([vocab.clone(), merges.clone()]),
    }
    list.extend(files.extra.iter().cloned());
    let mut all = Vec::new();
    for p in list {
        if let Ok(c) = std::fs::canonicalize(&p) {
            all.push(c);
        }
        if let Ok(r) = resolved(&p) {
            all.push(r);
        }
    }
    all
}

/// Refuses a target that is the input model's directory or holds any of its files (also
/// through symlinks or `..`): replacing it would delete the model.
pub fn check_not_model(target: &SaveTarget, files: &ModelFiles) -> Result<()> {
    let dir = std::fs::canonicalize(&target.dir).unwrap_or_else(|_| target.dir.clone());
    for p in model_paths(files) {
        if p.starts_with(&dir) || p.starts_with(&target.dir) {
            bail!(
                "--save {}: holds the input model's {}; replacing it would delete the model: save somewhere else",
                target.given.display(),
                p.display()
            );
        }
    }
    Ok(())
}

/// Gives everything under `dir` the modes a new file or folder gets here (0666 / 0777 less
/// the umask): writers may create files with private modes (safetensors writes 0600 through
/// a temp file) and copies keep their source's (read-only) mode. Returns the files, relative.
fn ordinary_modes(dir: &Path) -> Result<Vec<String>> {
    use std::os::unix::fs::PermissionsExt;
    let mask = super::atomic::umask();
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777 & !mask))?;
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o666 & !mask))?;
                if d == dir {
                    files.push(e.file_name().to_string_lossy().to_string());
                }
            }
        }
        if d != dir {
            if let Ok(rel) = d.strip_prefix(dir) {
                files.push(rel.to_string_lossy().to_string());
            }
        }
    }
    files.retain(|f| f != MARKER);
    files.sort();
    Ok(files)
}

/// Swaps the complete temporary export `tmp` into place at `dir`, and removes what was there.
fn replace_dir(tmp: &Path, dir: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        return std::fs::rename(tmp, dir);
    }
    match exchange(tmp, dir) {
        Ok(()) => std::fs::remove_dir_all(tmp),
        Err(_) => {
            // No atomic exchange here: old out of the way, new in, old removed.
            let old = parent_dir(dir).join(cleanup::temp_name(&last_component(dir), "old"));
            std::fs::rename(dir, &old)?;
            if let Err(e) = std::fs::rename(tmp, dir) {
                let _ = std::fs::rename(&old, dir);
                return Err(e);
            }
            std::fs::remove_dir_all(&old)
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let b = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two NUL-terminated paths; renameat2 only reads them.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "no atomic exchange"))
}

/// An export being written: a temporary sibling of the target, marked as this tool's.
pub struct PartialExport<'a> {
    tmp: TempPath,
    target: &'a SaveTarget,
}

impl<'a> PartialExport<'a> {
    /// Creates the temporary directory beside the target and marks it at once, so that a run
    /// killed now leaves a directory the next one knows as ours.
    pub fn begin(target: &'a SaveTarget) -> Result<Self> {
        let shown = target.given.display();
        let parent = target.parent();
        std::fs::create_dir_all(parent)
            .with_context(|| format!("--save {shown}: cannot create {}", parent.display()))?;
        let tmp = TempPath::create_dir(parent.join(cleanup::temp_name(&target.name(), "partial")))
            .with_context(|| format!("--save {shown}: cannot create a temporary directory in {}", parent.display()))?;
        write_marker(tmp.path(), &[])?;
        Ok(PartialExport { tmp, target })
    }

    /// Where the export's files are written.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Ordinary modes, the marker listing the files, the target checked again (it may have
    /// changed during the run), and the swap into place.
    pub fn finish(self) -> Result<()> {
        let shown = self.target.given.display();
        let names = ordinary_modes(self.tmp.path()).with_context(|| format!("saving to {shown} failed"))?;
        write_marker(self.tmp.path(), &names)?;
        check_existing(self.target)?;
        check_mounts(self.target)?;
        let dir = &self.target.dir;
        self.tmp
            .persist(|p| replace_dir(p, dir))
            .with_context(|| format!("--save {shown}: cannot move the export into place"))?;
        Ok(())
    }
}

/// Every mount point of this process's mount namespace (`/proc/self/mountinfo`'s fifth field,
/// octal escapes undone); empty where the file cannot be read.
pub(crate) fn mount_points() -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|field| {
            let b = field.as_bytes();
            let mut out = Vec::with_capacity(b.len());
            let mut i = 0;
            while i < b.len() {
                let octal =
                    b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
                match octal {
                    Some(d) => {
                        out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8).wrapping_add(c - b'0')));
                        i += 4;
                    }
                    None => {
                        out.push(b[i]);
                        i += 1;
                    }
                }
            }
            PathBuf::from(std::ffi::OsString::from_vec(out))
        })
        .collect()
}

/// Whether the existing directory `dir` is a mount point: listed as one, or on another device
/// than its parent.
pub(crate) fn is_mount_point(dir: &Path, mounts: &[PathBuf]) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(canon) = std::fs::canonicalize(dir) else { return false };
    if mounts.contains(&canon) {
        return true;
    }
    match (std::fs::metadata(&canon), canon.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// A target the swap cannot replace or whose removal would reach another filesystem: a mount
/// point, or (an existing directory replaced) a directory holding one.
fn check_mounts(target: &SaveTarget) -> Result<()> {
    let shown = target.given.display();
    let Ok(meta) = std::fs::symlink_metadata(&target.dir) else { return Ok(()) };
    if !meta.is_dir() {
        return Ok(());
    }
    let mounts = mount_points();
    if is_mount_point(&target.dir, &mounts) {
        bail!("--save {shown}: is a mount point, which the final swap (a rename) cannot replace; save to a new folder inside it or elsewhere");
    }
    let canon = std::fs::canonicalize(&target.dir).unwrap_or_else(|_| target.dir.clone());
    if let Some(m) = mounts.iter().find(|m| m.starts_with(&canon) && **m != canon) {
        bail!(
            "--save {shown}: holds the mount point {}; replacing the directory would delete what is mounted there: save somewhere else",
            m.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_that_would_lose_user_files_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let user = t.path().join("user");
        std::fs::create_dir(&user).unwrap();
        std::fs::write(user.join("notes.txt"), b"mine").unwrap();
        let e = check_save_target(&user, false).unwrap_err().to_string();
        assert!(e.contains("not an export of this tool"), "{e}");
        assert!(check_save_target(&user, true).is_ok(), "--overwrite allows it");
        // A previous export with a file added by the user.
        let prev = t.path().join("prev");
        std::fs::create_dir(&prev).unwrap();
        write_marker(&prev, &["config.json".to_string()]).unwrap();
        std::fs::write(prev.join("config.json"), b"{}").unwrap();
        assert!(check_save_target(&prev, false).is_ok());
        std::fs::write(prev.join("README.md"), b"mine").unwrap();
        let e = check_save_target(&prev, false).unwrap_err().to_string();
        assert!(e.contains("README.md"), "{e}");
        for (p, why) in [(".", "cannot be replaced"), ("..", "cannot be replaced"), ("/", "cannot be replaced")] {
            let e = check_save_target(Path::new(p), true).unwrap_err().to_string();
            assert!(e.contains(why), "{p}: {e}");
        }
        let file = t.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(check_save_target(&file, true).unwrap_err().to_string().contains("not a directory"));
        assert!(check_save_target(&file.join("sub"), true).unwrap_err().to_string().contains("is not a directory"));
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&prev, &link).unwrap();
        assert!(check_save_target(&link, true).unwrap_err().to_string().contains("symbolic link"));
    }

    #[test]
    fn the_model_directory_and_its_ancestors_are_refused_however_named() {
        let t = tempfile::tempdir().unwrap();
        let model = t.path().join("models/m");
        std::fs::create_dir_all(&model).unwrap();
        std::fs::write(model.join("config.json"), b"{}").unwrap();
        std::fs::write(model.join("model.safetensors"), b"").unwrap();
        let files = ModelFiles {
            source: model.display().to_string(),
            config: model.join("config.json"),
            weights: vec![model.join("model.safetensors")],
            tokenizer: TokenizerFiles::Json(model.join("tokenizer.json")),
            extra: vec![],
        };
        let via_dots = t.path().join("models/m/../m");
        for p in [model.clone(), t.path().join("models"), via_dots] {
            let target = check_save_target(&p, true).unwrap();
            let e = check_not_model(&target, &files).unwrap_err().to_string();
            assert!(e.contains("input model"), "{}: {e}", p.display());
        }
        let link = t.path().join("link");
        std::os::unix::fs::symlink(t.path().join("models"), &link).unwrap();
        let target = check_save_target(&link.join("m"), true).unwrap();
        assert!(check_not_model(&target, &files).is_err(), "through a symlinked folder");
        // A new folder inside the model's directory holds none of its files.
        let inside = check_save_target(&model.join("out"), false).unwrap();
        assert!(check_not_model(&inside, &files).is_ok());
    }

    #[test]
    fn mount_points_are_refused_as_targets() {
        // The root of the filesystem holding /proc: /proc itself is a mount point.
        let mounts = mount_points();
        assert!(mounts.contains(&PathBuf::from("/proc")), "{mounts:?}");
        assert!(is_mount_point(Path::new("/proc"), &mounts));
        let t = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(t.path(), &mounts));
        let target = SaveTarget { given: "/proc".into(), dir: "/proc".into(), overwrite: true };
        let e = check_mounts(&target).unwrap_err().to_string();
        assert!(e.contains("is a mount point"), "{e}");
        // A directory above a mount point, replaced, would reach into it.
        let target = SaveTarget { given: "/".into(), dir: "/".into(), overwrite: true };
        assert!(check_mounts(&target).is_err());
    }
}
