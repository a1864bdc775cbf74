//! The published evaluation and calibration protocol's constants, shared by the stages that
//! follow it (the corpora's windows, the model's check that it can attend over a window).

/// Sequence length of evaluation and calibration windows (OPT's max_position_embeddings).
pub const SEQLEN: usize = 2048;
