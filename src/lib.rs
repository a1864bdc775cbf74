//! sparsegpt-mi: one-shot compression of OPT language models.
//!
//! The modules follow the pipeline: `hub`/`weights`/`model` load an OPT checkpoint,
//! `tokenizer`/`data` read the corpora, `eval` measures perplexity the way the published
//! SparseGPT/GPTQ code does; `calibration`, `hessian`, `quantizer`, `solver` and `compress`
//! are the one-shot compressor; `mutual_info`, `grouping` (with `kmeans`, and `grouping_tensor` for the GPU) and `bit_alloc` add
//! mutual-information channel grouping with mixed precision; `report` and `export` write
//! what a run produced; `cli` ties it together.

pub mod bit_alloc;
pub mod calibration;
pub mod cli;
pub mod cli_check;
pub mod cli_mi;
pub mod cli_prune;
pub mod compress;
pub mod cpu_kernels;
pub mod data;
pub mod eval;
pub mod export;
pub mod grouping;
pub mod grouping_tensor;
pub mod hessian;
pub mod hub;
pub mod kmeans;
pub mod model;
pub mod mutual_info;
pub mod progress;
pub mod py_random;
pub mod quantizer;
pub mod report;
pub mod solver;
#[cfg(feature = "cuda")]
pub mod solver_cuda;
pub mod tokenizer;
pub mod weights;

/// Picks the compute device from a `--device` flag value.
pub fn device_from_name(name: &str) -> anyhow::Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" => {
            if !candle_core::utils::cuda_is_available() {
                anyhow::bail!(
                    "--device cuda: this binary was built without CUDA; rebuild with `--features cuda` (scripts/build_cuda.sh)"
                );
            }
            candle_core::Device::new_cuda(0)
                .map_err(|e| anyhow::anyhow!("--device cuda: cannot open GPU 0: {e}"))
        }
        other => anyhow::bail!("unknown --device '{other}': use cpu or cuda"),
    }
}
