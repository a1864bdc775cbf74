//! What a run leaves behind: the compressed model (`export`), the result JSON
//! (`summary`), and the atomic writes both go through (`atomic`).

pub mod atomic;
pub mod export;
pub mod summary;
