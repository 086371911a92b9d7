//! Kernels of our own for the wgpu backend, natively: where burn's choice of kernel leaves a
//! faster one of its own kernel crates unused.

pub mod implicit_gemm;
pub mod launches;
