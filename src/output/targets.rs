//! Every path a run writes, checked together before any work. A command lists its outputs in
//! an [`OutputRequest`] (a result file, a folder, the `--save` directory, each under the flag
//! that names it); [`OutputRequest::check`] checks each on its own (`atomic`, `save_dir`) and
//! then against each other: two outputs may not name the same path, nor one lie inside
//! another (a result file inside the export directory would be swapped away with it, an
//! export under a result file cannot be made), nor a file be a mount point. What it returns,
//! [`CheckedOutputs`], is the only way to the paths the run writes, so an output a command
//! adds later is checked with the others by construction. Once the model's files are known,
//! [`CheckedOutputs::check_inputs`] refuses outputs that would overwrite or delete them.

use super::atomic;
use super::save_dir::{self, SaveTarget};
use crate::model::files::ModelFiles;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// What an output is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// A file written atomically at the end.
    File,
    /// A folder the run writes files into (its files are listed under the same flag).
    Folder,
    /// The `--save` directory, replaced as a whole at the end.
    SaveDir { overwrite: bool },
}

#[derive(Clone, Debug)]
struct Requested {
    flag: &'static str,
    path: PathBuf,
    kind: Kind,
}

/// The outputs a command will write, as its flags name them (not checked yet).
#[derive(Clone, Debug, Default)]
pub struct OutputRequest {
    entries: Vec<Requested>,
}

impl OutputRequest {
    pub fn new() -> Self {
        Self::default()
    }

    /// A file written at the end (a result JSON, logits, a picture).
    pub fn file(mut self, flag: &'static str, path: impl Into<PathBuf>) -> Self {
        self.entries.push(Requested { flag, path: path.into(), kind: Kind::File });
        self
    }

    /// A folder files are written into; list its files with [`OutputRequest::file`] under the
    /// same flag (parts of one output are not compared with each other).
    pub fn folder(mut self, flag: &'static str, path: impl Into<PathBuf>) -> Self {
        self.entries.push(Requested { flag, path: path.into(), kind: Kind::Folder });
        self
    }

    /// The export directory (`--save`).
    pub fn save_dir(mut self, flag: &'static str, path: impl Into<PathBuf>, overwrite: bool) -> Self {
        self.entries.push(Requested { flag, path: path.into(), kind: Kind::SaveDir { overwrite } });
        self
    }

    /// Each output checked on its own, in the order given, then every pair of outputs of
    /// different flags against each other (see the module's text).
    pub fn check(self) -> Result<CheckedOutputs> {
        let mut checked = Vec::new();
        let mut save = None;
        for r in &self.entries {
            match &r.kind {
                Kind::File => {
                    atomic::check_writable(&r.path, r.flag)?;
                    check_not_mounted_file(&r.path, r.flag)?;
                }
                Kind::Folder => atomic::check_folder_writable(&r.path, r.flag)?,
                Kind::SaveDir { overwrite } => {
                    save = Some(save_dir::check_save_target(&r.path, *overwrite)?);
                }
            }
            checked.push(Checked { resolved: save_dir::resolved(&r.path)?, req: r.clone() });
        }
        for (i, a) in checked.iter().enumerate() {
            for b in &checked[i + 1..] {
                if a.req.flag != b.req.flag {
                    check_pair(a, b)?;
                }
            }
        }
        Ok(CheckedOutputs { outputs: checked, save })
    }
}

#[derive(Clone, Debug)]
struct Checked {
    req: Requested,
    /// Absolute, `..` and the symlinks of existing folders above it resolved.
    resolved: PathBuf,
}

impl Checked {
    fn shown(&self) -> String {
        format!("{} {}", self.req.flag, self.req.path.display())
    }
}

/// Two outputs of different flags: not the same path, neither inside the other.
fn check_pair(a: &Checked, b: &Checked) -> Result<()> {
    if a.resolved == b.resolved {
        bail!(
            "{} and {} name the same path: one output would overwrite the other; give each its own",
            a.shown(),
            b.shown()
        );
    }
    for (outer, inner) in [(a, b), (b, a)] {
        if inner.resolved.starts_with(&outer.resolved) {
            let why = match outer.req.kind {
                Kind::SaveDir { .. } => "the export replaces that directory as a whole at the end",
                Kind::Folder => "it would be mixed with that folder's files",
                Kind::File => "a file cannot also be a folder",
            };
            bail!("{} lies inside {}: {why}; put it elsewhere", inner.shown(), outer.shown());
        }
    }
    Ok(())
}

/// An existing file that is a mount point (a bind-mounted file) cannot be renamed over.
fn check_not_mounted_file(path: &Path, flag: &str) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if save_dir::mount_points().contains(&canon) {
            bail!(
                "{flag} {}: is a mount point, which the final rename cannot replace; give another file",
                path.display()
            );
        }
    }
    Ok(())
}

/// A run's outputs, checked: where it writes.
#[derive(Clone, Debug)]
pub struct CheckedOutputs {
    outputs: Vec<Checked>,
    save: Option<SaveTarget>,
}

impl CheckedOutputs {
    /// The path of the file output named by `flag` (as given), if the command requested one.
    pub fn file(&self, flag: &str) -> Option<&Path> {
        self.outputs.iter().find(|c| c.req.flag == flag && c.req.kind == Kind::File).map(|c| c.req.path.as_path())
    }

    /// The checked `--save` target, if any.
    pub fn save(&self) -> Option<&SaveTarget> {
        self.save.as_ref()
    }

    /// With the model's files known: no output may be one of them, and the export directory
    /// may not hold any (replacing it would delete the model).
    pub fn check_inputs(&self, files: &ModelFiles) -> Result<()> {
        if let Some(target) = &self.save {
            save_dir::check_not_model(target, files)?;
        }
        let inputs = save_dir::model_paths(files);
        for c in self.outputs.iter().filter(|c| c.req.kind == Kind::File) {
            let canon = std::fs::canonicalize(&c.req.path).ok();
            if let Some(p) = inputs.iter().find(|p| **p == c.resolved || Some(*p) == canon.as_ref()) {
                bail!(
                    "{}: is the input model's {}; writing it would damage the model: give another file",
                    c.shown(),
                    p.display()
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::files::TokenizerFiles;

    #[test]
    fn outputs_that_collide_are_refused_before_any_work() {
        let t = tempfile::tempdir().unwrap();
        let p = |s: &str| t.path().join(s);
        for (req, needle) in [
            (OutputRequest::new().file("--json", p("res")).save_dir("--save", p("res"), false), "name the same path"),
            (
                OutputRequest::new().file("--json", p("res")).save_dir("--save", p("res/model"), false),
                "--save {d}/res/model lies inside --json {d}/res: a file cannot also be a folder",
            ),
            (
                OutputRequest::new().file("--json", p("out/r.json")).save_dir("--save", p("out"), false),
                "--json {d}/out/r.json lies inside --save {d}/out: the export replaces that directory",
            ),
            (OutputRequest::new().file("--json", p("x")).file("--logits-out", p("x")), "name the same path"),
            (OutputRequest::new().file("--json", p("a/../x")).file("--logits-out", p("x")), "name the same path"),
        ] {
            let e = req.check().unwrap_err().to_string();
            let needle = needle.replace("{d}", &t.path().display().to_string());
            assert!(e.contains(&needle), "{e}\nwanted: {needle}");
        }
        // Distinct outputs, and a folder with its own files, pass.
        let ok = OutputRequest::new()
            .folder("--out", p("mi"))
            .file("--out", p("mi/a.json"))
            .file("--out", p("mi/a.png"))
            .file("--json", p("r.json"))
            .save_dir("--save", p("export"), false)
            .check()
            .unwrap();
        assert_eq!(ok.file("--json"), Some(p("r.json").as_path()));
        assert_eq!(ok.save().unwrap().given, p("export"));
        assert_eq!(ok.file("--logits-out"), None);
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0, "the checks leave nothing behind");
    }

    #[test]
    fn outputs_onto_the_model_files_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let model = t.path().join("m");
        std::fs::create_dir(&model).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::write(model.join(f), b"{}").unwrap();
        }
        let files = ModelFiles {
            source: model.display().to_string(),
            config: model.join("config.json"),
            weights: vec![model.join("model.safetensors")],
            tokenizer: TokenizerFiles::Json(model.join("tokenizer.json")),
            extra: vec![],
        };
        let out = OutputRequest::new().file("--json", model.join("config.json")).check().unwrap();
        let e = out.check_inputs(&files).unwrap_err().to_string();
        assert!(e.contains("is the input model's"), "{e}");
        let out = OutputRequest::new().file("--json", model.join("r.json")).check().unwrap();
        out.check_inputs(&files).unwrap();
    }
}
