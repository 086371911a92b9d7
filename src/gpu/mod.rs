//! The wgpu backend, natively and on WebGPU: kernels of burn's own crates that its choice of
//! kernel leaves unused (`implicit_gemm`); natively, the kernel launches a piece of work issues
//! (`launches`).

pub mod implicit_gemm;

use burn::backend::Wgpu;
use burn::tensor::{Device, Tensor};

/// The shader language burn compiles its kernels to on `device`, as the GPU runtime names itself:
/// `wgpu<wgsl>`, or `wgpu<spirv>` on a Vulkan adapter of a build with the `vulkan` feature.
/// None where `device` is not a wgpu device.
pub fn shader_compiler(device: &Device) -> Option<&'static str> {
    let probe = Tensor::<1>::zeros([1], device).try_into_primitive::<Wgpu>().ok()?;
    Some(probe.client.name())
}
#[cfg(not(target_arch = "wasm32"))]
pub mod launches;
