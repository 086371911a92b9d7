//! The wgpu backend, natively and on WebGPU: kernels of burn's own crates that its choice of
//! kernel leaves unused (`implicit_gemm`); natively, the kernel launches a piece of work issues
//! (`launches`).

pub mod implicit_gemm;
#[cfg(not(target_arch = "wasm32"))]
pub mod launches;
