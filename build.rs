//! With the `cuda` feature, compiles the solver's device kernels (src/solver/kernels/solver.cu)
//! to PTX with nvcc, for `src/solver/cuda.rs` to embed, and the forward pass's kernels
//! (src/model/kernels/attention.cu) to a cubin for the GPU of CUDA_COMPUTE_CAP (default 90:
//! H100/H200; machine code, so no JIT at start), for `src/model/cuda_forward.rs`. Without it,
//! does nothing (CI has no CUDA).
use std::{env, path::PathBuf, process::Command};

fn main() {
    println!("cargo:rerun-if-changed=src/solver/kernels/solver.cu");
    println!("cargo:rerun-if-changed=src/model/kernels/attention.cu");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("solver.ptx");
    let cap = env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let status = Command::new("nvcc")
        .args(["--ptx", "-O3", &format!("--gpu-architecture=compute_{cap}"), "src/solver/kernels/solver.cu", "-o"])
        .arg(&out)
        .status()
        .expect("nvcc not found: the cuda feature needs the CUDA compiler on PATH (scripts/build_cuda.sh sets it up)");
    assert!(status.success(), "nvcc failed on src/solver/kernels/solver.cu");
    let cubin = PathBuf::from(env::var("OUT_DIR").unwrap()).join("attention.cubin");
    let status = Command::new("nvcc")
        .args([
            "--cubin",
            "-O3",
            "-std=c++17",
            &format!("--gpu-architecture=sm_{cap}"),
            "src/model/kernels/attention.cu",
            "-o",
        ])
        .arg(&cubin)
        .status()
        .expect("nvcc not found");
    assert!(status.success(), "nvcc failed on src/model/kernels/attention.cu");
}
