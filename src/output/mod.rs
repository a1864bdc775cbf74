//! What a run leaves behind: the compressed model (`export`: dense, or packed as `gptq` /
//! `compressed_tensors` through `layout`, `codes` and `packing`), the result JSON
//! (`summary`), every output path checked together before any work (`targets`), the
//! `--save` directory's checks, marker and swap (`save_dir`), the atomic
//! writes and up-front path checks both go through (`atomic`), and the temporary paths removed
//! on a signal or by the next run (`cleanup`).

pub mod atomic;
pub mod cleanup;
pub mod codes;
pub mod compressed_tensors;
pub mod export;
pub mod gptq;
pub mod layout;
pub mod packing;
pub mod save_dir;
pub mod summary;
pub mod targets;
pub mod tensors;
