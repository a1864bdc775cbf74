//! What a PyTorch checkpoint (`pytorch_model.bin`, a zip of `data.pkl` and storages) must
//! satisfy before candle's unpickler reads it: candle builds nested objects recursively (and
//! clones and drops them recursively), so a pickle nesting tuples 400 000 deep overflows the
//! stack, and it allocates a tensor from the shape the pickle states. Here the pickle's
//! opcodes are walked once with an explicit stack of nesting depths (no recursion), refusing
//! nesting beyond [`MAX_DEPTH`] and strings longer than the pickle; after candle has read the
//! tensor records, every tensor's bytes are checked against its storage's size in the zip.
//!
//! The walk knows exactly the opcodes candle's reader knows; at any other opcode candle stops
//! with an error, so the walk stops there too and leaves the refusal to candle.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;

/// The deepest nesting of containers accepted. A state dict nests about six deep (dict →
/// rebuild call → argument tuple → storage tuple); candle's recursion is safe far beyond.
pub const MAX_DEPTH: usize = 1000;

/// The largest `data.pkl` read (its tensors live in other zip entries; a pickle of records of
/// even a 175B-parameter model is a few MB).
pub const MAX_PICKLE_BYTES: u64 = 1 << 30;

/// Checks every `*data.pkl` in the zip at `path` (see the module's text).
pub fn check_archive(path: &Path) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let names: Vec<String> =
        zip.file_names().filter_map(|n| n.ok().map(|n| n.into_owned())).filter(|n| n.ends_with("data.pkl")).collect();
    for name in names {
        let entry = zip.by_name(&name).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        if entry.size() > MAX_PICKLE_BYTES {
            bail!("{name} is {} bytes, over this tool's limit of {MAX_PICKLE_BYTES} for a pickle", entry.size());
        }
        let mut bytes = Vec::new();
        entry.take(MAX_PICKLE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        check_pickle(&bytes).with_context(|| name.clone())?;
    }
    Ok(())
}

/// A PyTorch zip checkpoint's structure without loading a tensor: the zip opens, its pickle
/// walks cleanly ([`check_archive`]), candle reads the tensor records from it (panics
/// contained), there is at least one, and each fits its storage ([`check_tensor_sizes`]).
/// Downloads and hub cache copies of `pytorch_model.bin` are checked with it.
pub fn check_structure(path: &Path) -> Result<()> {
    check_archive(path)?;
    crate::contain::contain("candle's unpickler", || {
        let pth = candle_core::pickle::PthTensors::new(path, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        if pth.tensor_infos().is_empty() {
            bail!("its pickle holds no tensor records");
        }
        check_tensor_sizes(path, pth.tensor_infos())
    })
}

/// Walks the opcodes of one pickle, tracking each stack item's nesting depth and object
/// count (see the module's text).
pub fn check_pickle(p: &[u8]) -> Result<()> {
    let mut w = Walk { stack: Vec::new(), memo: std::collections::HashMap::new(), made: 0, at: 0 };
    while w.at < p.len() {
        let op = p[w.at];
        w.at += 1;
        match op {
            0x80 => drop(w.take(p, 1)?), // PROTO
            b'c' => {
                // GLOBAL: two newline-terminated names.
                for _ in 0..2 {
                    let n = p[w.at..].iter().position(|&b| b == b'\n').context("truncated pickle")?;
                    w.at += n + 1;
                }
                w.push(Obj::LEAF)?;
            }
            b'K' | b'M' | b'J' | b'G' => {
                let n = match op {
                    b'K' => 1,
                    b'M' => 2,
                    b'J' => 4,
                    _ => 8,
                };
                w.take(p, n)?;
                w.push(Obj::LEAF)?;
            }
            b'X' => {
                let len = u32::from_le_bytes(w.take(p, 4)?.try_into()?) as usize;
                if len > p.len() - w.at {
                    bail!("a string of {len} bytes in a pickle with {} left (at byte {})", p.len() - w.at, w.at);
                }
                w.take(p, len)?;
                w.push(Obj::LEAF)?;
            }
            0x8a => {
                let n = w.take(p, 1)?[0] as usize;
                w.take(p, n)?;
                w.push(Obj::LEAF)?;
            }
            0x88 | 0x89 | b'N' | b'}' | b'd' | b')' | b']' => w.push(Obj::LEAF)?,
            b'(' => w.stack.push(None),
            // BINPERSID: the id object wrapped.
            b'Q' => {
                let o = w.pop();
                w.push(Obj::wrap([o]))?
            }
            b't' => {
                let items = w.pop_mark()?;
                w.push(Obj::wrap(items))?
            }
            0x85..=0x87 => {
                let items: Vec<Obj> = (0..op - 0x84).map(|_| w.pop()).collect();
                w.push(Obj::wrap(items))?
            }
            // APPEND, SETITEM (two items), BUILD: into the object below.
            b'a' | b's' | b'b' => {
                let items: Vec<Obj> = (0..if op == b's' { 2 } else { 1 }).map(|_| w.pop()).collect();
                let below = w.pop();
                w.push(below.extend(items))?
            }
            b'e' | b'u' => {
                let items = w.pop_mark()?;
                let below = w.pop();
                w.push(below.extend(items))?
            }
            // REDUCE, NEWOBJ: callable and arguments into one object.
            b'R' | 0x81 => {
                let items = [w.pop(), w.pop()];
                w.push(Obj::wrap(items))?
            }
            // BINGET, LONG_BINGET: candle pushes a copy of the memo's object.
            b'h' | b'j' => {
                let id = if op == b'h' {
                    u32::from(w.take(p, 1)?[0])
                } else {
                    u32::from_le_bytes(w.take(p, 4)?.try_into()?)
                };
                let o = w.memo.get(&id).copied().unwrap_or(Obj::LEAF);
                w.push(o)?;
            }
            // BINPUT, LONG_BINPUT: candle stores a copy of the top object.
            b'q' | b'r' => {
                let id = if op == b'q' {
                    u32::from(w.take(p, 1)?[0])
                } else {
                    u32::from_le_bytes(w.take(p, 4)?.try_into()?)
                };
                let top = w.stack.last().copied().flatten().unwrap_or(Obj::LEAF);
                w.count(top.size)?;
                w.memo.insert(id, top);
            }
            // STOP, or an opcode candle's reader refuses itself.
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// The most objects candle may build from one pickle, copies from the memo included (a
/// state dict holds about ten a tensor).
pub const MAX_OBJECTS: u64 = 1 << 24;

/// An object on the walk's stack: how deep it nests and how many objects it holds.
#[derive(Clone, Copy, PartialEq)]
struct Obj {
    depth: usize,
    size: u64,
}

impl Obj {
    const LEAF: Obj = Obj { depth: 1, size: 1 };

    /// A new container of `items`.
    fn wrap(items: impl IntoIterator<Item = Obj>) -> Obj {
        Obj::LEAF.extend(items)
    }

    /// This container with `items` added.
    fn extend(self, items: impl IntoIterator<Item = Obj>) -> Obj {
        items
            .into_iter()
            .fold(self, |c, o| Obj { depth: c.depth.max(o.depth + 1), size: c.size.saturating_add(o.size) })
    }
}

/// The walk's state: the stack (None: a MARK), the memo, objects built so far, position.
struct Walk {
    stack: Vec<Option<Obj>>,
    memo: std::collections::HashMap<u32, Obj>,
    made: u64,
    at: usize,
}

impl Walk {
    fn take<'a>(&mut self, p: &'a [u8], n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= p.len()).context("truncated pickle")?;
        let s = &p[self.at..end];
        self.at = end;
        Ok(s)
    }

    /// The top object; an empty stack or a MARK counts as a leaf (candle refuses those itself).
    fn pop(&mut self) -> Obj {
        self.stack.pop().flatten().unwrap_or(Obj::LEAF)
    }

    fn pop_mark(&mut self) -> Result<Vec<Obj>> {
        let m = self.stack.iter().rposition(Option::is_none).context("MARK missing")?;
        let items = self.stack.drain(m + 1..).flatten().collect();
        self.stack.pop();
        Ok(items)
    }

    fn count(&mut self, n: u64) -> Result<()> {
        self.made = self.made.saturating_add(n);
        if self.made > MAX_OBJECTS {
            bail!(
                "the pickle builds over {MAX_OBJECTS} objects (at byte {}): not a checkpoint this tool reads",
                self.at
            );
        }
        Ok(())
    }

    fn push(&mut self, o: Obj) -> Result<()> {
        if o.depth > MAX_DEPTH {
            bail!("objects nested over {MAX_DEPTH} deep (at byte {}): not a checkpoint this tool reads", self.at);
        }
        self.count(o.size)?;
        self.stack.push(Some(o));
        Ok(())
    }
}

/// Refuses a tensor record whose stated shape needs more bytes than its storage holds, before
/// anything is allocated from the shape.
pub fn check_tensor_sizes(
    path: &Path,
    infos: &std::collections::HashMap<String, candle_core::pickle::TensorInfo>,
) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| anyhow::anyhow!("{e}"))?;
    for (name, info) in infos {
        let stored =
            zip.by_name(&info.path).map_err(|e| anyhow::anyhow!("tensor {name}: storage {}: {e}", info.path))?.size();
        let dims = info.layout.dims();
        let needed = dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .and_then(|n| n.checked_mul(info.dtype.size_in_bytes() as u64))
            .and_then(|n| n.checked_add(info.layout.start_offset() as u64));
        match needed {
            Some(n) if n <= stored => {}
            _ => bail!(
                "tensor {name}: shape {dims:?} of {:?} at byte {} needs more than the {stored} bytes its storage holds",
                info.dtype,
                info.layout.start_offset()
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protocol-2 pickle of `depth` nested 1-tuples around None.
    fn nested_tuples(depth: usize) -> Vec<u8> {
        let mut p = vec![0x80, 2, b'N'];
        p.extend(std::iter::repeat_n(0x85u8, depth));
        p.push(b'.');
        p
    }

    #[test]
    fn deep_nesting_is_refused_and_ordinary_nesting_passes() {
        check_pickle(&nested_tuples(MAX_DEPTH - 1)).unwrap();
        let e = check_pickle(&nested_tuples(400_000)).unwrap_err().to_string();
        assert!(e.contains("nested over 1000 deep"), "{e}");
        // Through MARK … TUPLE, lists with APPEND, and the memo.
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b'(', 2000));
        p.push(b')');
        p.extend(std::iter::repeat_n(b't', 2000));
        assert!(check_pickle(&p).unwrap_err().to_string().contains("nested over"));
        // Lists appended into one list: wide, not deep.
        let mut p = vec![0x80, 2, b']'];
        for _ in 0..1500 {
            p.extend([b']', b'a']);
        }
        check_pickle(&p).unwrap();
        // The memo holds copies (as candle's does): a fetched list is the one stored, one deep.
        let mut p = vec![0x80, 2, b']'];
        for _ in 0..1500 {
            p.extend([b']', b'q', 0, b'a', b'h', 0]);
        }
        check_pickle(&p).unwrap();
    }

    #[test]
    fn copies_through_the_memo_are_counted() {
        // x = (x, x) forty times: 2^40 objects from 200 bytes.
        let mut p = vec![0x80, 2, b'N', b'q', 0];
        for _ in 0..40 {
            p.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
        }
        let e = check_pickle(&p).unwrap_err().to_string();
        assert!(e.contains("builds over 16777216 objects"), "{e}");
    }

    #[test]
    fn strings_longer_than_the_pickle_are_refused() {
        let mut p = vec![0x80, 2, b'X'];
        p.extend(u32::MAX.to_le_bytes());
        p.extend(b"abc.");
        let e = check_pickle(&p).unwrap_err().to_string();
        assert!(e.contains("a string of 4294967295 bytes"), "{e}");
        assert!(check_pickle(&[0x80]).is_err());
    }

    /// torch.save({"w": torch.zeros(2)})'s data.pkl (protocol 2).
    const STATE_DICT_PICKLE: &[u8] = b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02((X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000q\x05X\x03\x00\x00\x00cpuq\x06K\x02tq\x07QK\x00K\x02\x85q\x08K\x01\x85q\t\x89ccollections\nOrderedDict\nq\n)Rq\x0btq\x0cRq\rs.";

    /// A PyTorch zip of `entries` (name, bytes), stored as torch.save writes them.
    fn zip_of(path: &Path, entries: &[(&str, &[u8])]) {
        use std::io::Write;
        let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in entries {
            z.start_file(*name, opts).unwrap();
            z.write_all(bytes).unwrap();
        }
        z.finish().unwrap();
    }

    #[test]
    fn a_checkpoints_structure_is_read_without_its_tensors() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("pytorch_model.bin");
        // The tensor `w` of two f32s needs 8 bytes of storage `archive/data/0`.
        zip_of(&p, &[("archive/data.pkl", STATE_DICT_PICKLE), ("archive/data/0", &[0u8; 8])]);
        check_structure(&p).unwrap();
        zip_of(&p, &[("archive/data.pkl", STATE_DICT_PICKLE), ("archive/data/0", &[0u8; 4])]);
        let e = format!("{:#}", check_structure(&p).unwrap_err());
        assert!(
            e.contains("tensor w: shape [2] of F32 at byte 0 needs more than the 4 bytes its storage holds"),
            "{e}"
        );
        zip_of(&p, &[("archive/data.pkl", STATE_DICT_PICKLE)]);
        let e = format!("{:#}", check_structure(&p).unwrap_err());
        assert!(e.contains("storage archive/data/0"), "{e}");
        zip_of(&p, &[("archive/version", b"3\n")]);
        let e = format!("{:#}", check_structure(&p).unwrap_err());
        assert_eq!(e, "its pickle holds no tensor records");
        std::fs::write(&p, [7u8; 4096]).unwrap();
        let e = format!("{:#}", check_structure(&p).unwrap_err());
        assert!(e.contains("Zip archive"), "{e}");
        let mut nested = vec![0x80, 2, b'N'];
        nested.extend(std::iter::repeat_n(0x85u8, 5000));
        zip_of(&p, &[("archive/data.pkl", &nested)]);
        let e = format!("{:#}", check_structure(&p).unwrap_err());
        assert!(e.contains("nested over 1000 deep"), "{e}");
    }

    #[test]
    fn a_real_state_dict_pickle_passes() {
        check_pickle(STATE_DICT_PICKLE).unwrap();
    }
}
