//! The wgpu backend natively: kernels of burn's own crates that its choice of kernel leaves
//! unused (`implicit_gemm`), and the kernel launches a piece of work issues (`launches`).

pub mod implicit_gemm;
pub mod launches;
