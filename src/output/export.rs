//! Saving a compressed model as a Hugging Face directory (config.json, model.safetensors,
//! tokenizer files) that `OPTForCausalLM.from_pretrained` loads.
//!
//! The directory's life: `check_save_target` (before any work) refuses a target whose end
//! would fail or would delete what this tool did not write — an existing non-empty directory
//! that is not a previous export (the `MARKER` file lists what an export wrote) unless
//! `--overwrite`, the current directory or one above it, a symbolic link; `check_not_model`
//! (once the model's files are known) refuses any target that holds one of them. `save` fills
//! a temporary sibling `.NAME.partialPID` (registered for removal on a signal), gives its
//! files ordinary modes (0666/0777 less the umask), writes the marker, checks the target
//! again and swaps it into place (an atomic exchange where the filesystem has one), so a
//! failed or interrupted run never leaves half a model nor loses the previous one.

use super::atomic::{check_folder_above, last_component, parent_dir};
use super::cleanup::{self, TempPath};
use crate::model::files::{ModelFiles, TokenizerFiles};
use crate::model::{LinearKind, OptModel};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The file every export holds: the tool, its version, and the files the export wrote.
pub const MARKER: &str = ".sparsegpt-mi-export";

/// Every tensor of the model under its `OPTForCausalLM` name.
fn named_tensors(model: &OptModel, dtype: DType) -> Result<HashMap<String, Tensor>> {
    let mut m = HashMap::new();
    let mut put = |name: String, t: &Tensor| -> Result<()> {
        m.insert(name, t.to_dtype(dtype)?.to_device(&candle_core::Device::Cpu)?.contiguous()?);
        Ok(())
    };
    put("model.decoder.embed_tokens.weight".into(), &model.embed_tokens)?;
    put("model.decoder.embed_positions.weight".into(), &model.embed_positions)?;
    if let Some(p) = &model.project_in {
        put("model.decoder.project_in.weight".into(), p.weight())?;
    }
    if let Some(p) = &model.project_out {
        put("model.decoder.project_out.weight".into(), p.weight())?;
    }
    if let Some(ln) = &model.final_layer_norm {
        put("model.decoder.final_layer_norm.weight".into(), ln.weight())?;
        if let Some(b) = ln.bias() {
            put("model.decoder.final_layer_norm.bias".into(), b)?;
        }
    }
    for (i, layer) in model.layers.iter().enumerate() {
        let p = format!("model.decoder.layers.{i}");
        for kind in LinearKind::ALL {
            let lin = layer.linear(kind);
            put(format!("{p}.{}.weight", kind.path()), lin.weight())?;
            if let Some(b) = lin.bias() {
                put(format!("{p}.{}.bias", kind.path()), b)?;
            }
        }
        for (name, ln) in
            [("self_attn_layer_norm", &layer.self_attn_layer_norm), ("final_layer_norm", &layer.final_layer_norm)]
        {
            put(format!("{p}.{name}.weight"), ln.weight())?;
            if let Some(b) = ln.bias() {
                put(format!("{p}.{name}.bias"), b)?;
            }
        }
    }
    Ok(m)
}

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
    fn parent(&self) -> &Path {
        parent_dir(&self.dir)
    }
    fn name(&self) -> String {
        last_component(&self.dir)
    }
}

/// `path` absolute: the existing folders above its last component canonical (symlinks and
/// `..` resolved as the kernel resolves them), the rest with `.` and `..` applied; the last
/// component itself is kept as written (a symlink there stays visible).
fn resolved(path: &Path) -> Result<PathBuf> {
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
fn model_paths(files: &ModelFiles) -> Vec<PathBuf> {
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

/// Gives everything under `dir` the modes a new file or folder gets here (0666 / 0777 less
/// the umask): writers may create files with private modes (safetensors writes 0600 through
/// a temp file) and copies keep their source's (read-only) mode. Returns the files, relative.
fn ordinary_modes(dir: &Path) -> Result<Vec<String>> {
    use std::os::unix::fs::PermissionsExt;
    let mask = umask();
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

/// The model's files written into the (temporary) export directory `dir`: the one place a
/// new export format adds its writer.
fn write_model_files(model: &OptModel, files: &ModelFiles, dir: &Path, dtype: DType) -> Result<()> {
    std::fs::copy(&files.config, dir.join("config.json"))?;
    for f in &files.extra {
        if let Some(n) = f.file_name() {
            std::fs::copy(f, dir.join(n))?;
        }
    }
    let tensors = named_tensors(model, dtype)?;
    for (name, t) in &tensors {
        if !crate::numerics::all_finite(t)? {
            bail!(
                "tensor {name} holds non-finite values in the {dtype:?} it is saved in ({}); nothing was saved",
                crate::numerics::describe_non_finite(t)
            );
        }
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    Ok(())
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

/// Writes the model as an export at `target` (see the module's text).
pub fn save(model: &OptModel, files: &ModelFiles, target: &SaveTarget, dtype: DType) -> Result<()> {
    let shown = target.given.display();
    let parent = target.parent();
    std::fs::create_dir_all(parent).with_context(|| format!("--save {shown}: cannot create {}", parent.display()))?;
    let tmp = TempPath::create_dir(parent.join(cleanup::temp_name(&target.name(), "partial")))
        .with_context(|| format!("--save {shown}: cannot create a temporary directory in {}", parent.display()))?;
    // Marked at once, so that a run killed now leaves a directory the next one knows as ours.
    write_marker(tmp.path(), &[])?;
    let written = write_model_files(model, files, tmp.path(), dtype)
        .and_then(|()| ordinary_modes(tmp.path()))
        .with_context(|| format!("saving to {shown} failed"))?;
    write_marker(tmp.path(), &written)?;
    // The target may have changed during the run.
    check_existing(target)?;
    tmp.persist(|p| replace_dir(p, &target.dir))
        .with_context(|| format!("--save {shown}: cannot move the export into place"))?;
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
}
