//! sparsegpt-mi: one-shot compression of OPT language models — SparseGPT pruning, GPTQ
//! quantization, and mutual-information channel grouping with mixed precision.
//!
//! The modules follow the pipeline (ARCHITECTURE.md draws it):
//! `model` (config, decoder, weights, hub, tokenizer) → `data` (corpora, calibration
//! windows) → `pipeline` (the layer-sequential loop: calibration statistics, planning,
//! solving, recompute) → `mixed` (planners: MI, grouping, bit allocation) and `solver`
//! (the SparseGPT/GPTQ sweep, host and CUDA) → `eval` (perplexity) → `output` (export and
//! result JSON). The command line (`src/cli`) is the binary's and only drives these.

pub mod advice;
pub mod contain;
pub mod data;
pub mod device_memory;
pub mod eval;
pub mod hub;
pub mod mixed;
pub mod model;
pub mod numerics;
pub mod output;
pub mod pipeline;
pub mod progress;
pub mod protocol;
pub mod rng;
pub mod solver;
pub mod tasks;
