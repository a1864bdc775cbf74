//! What a run leaves behind: the compressed model (`export`), the result JSON
//! (`summary`), the atomic writes and up-front path checks both go through (`atomic`), and
//! the temporary paths removed on a signal or by the next run (`cleanup`).

pub mod atomic;
pub mod cleanup;
pub mod export;
pub mod summary;
