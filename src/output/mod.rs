//! What a run leaves behind: the compressed model (`export`: dense, or packed as `gptq` /
//! `compressed_tensors` through `layout`, `codes` and `packing`), the result JSON
//! (`summary`), and the atomic writes both go through (`atomic`).

pub mod atomic;
pub mod codes;
pub mod compressed_tensors;
pub mod export;
pub mod gptq;
pub mod layout;
pub mod packing;
pub mod summary;
pub mod tensors;
