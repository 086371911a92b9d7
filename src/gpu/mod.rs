//! The wgpu backend, natively and on WebGPU: kernels of burn's own crates that its choice of
//! kernel leaves unused (`implicit_gemm`); natively, the kernel launches a piece of work issues
//! (`launches`).

pub mod implicit_gemm;
pub mod register_tiles;

use burn::backend::Wgpu;
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::permute;

/// The shader language burn compiles its kernels to on `device`, as the GPU runtime names itself:
/// `wgpu<wgsl>`, or `wgpu<spirv>` on a Vulkan adapter of a build with the `vulkan` feature.
/// None where `device` is not a wgpu device.
pub fn shader_compiler(device: &Device) -> Option<&'static str> {
    let probe = Tensor::<1>::zeros([1], device).try_into_primitive::<Wgpu>().ok()?;
    Some(probe.client.name())
}
#[cfg(not(target_arch = "wasm32"))]
pub mod launches;

/// `module` with every 4-D weight on wgpu stored with its axes (`[Cout, Cin, kh, kw]` to burn,
/// which it stays) in `order` in memory, the layout a kernel reads, so that it is not copied so on
/// every call. Weights on other backends stay as they are.
pub(crate) fn weights_stored_in_order<M: Module>(module: M, order: [usize; 4]) -> M {
    module.map(&mut StoredInOrder(order))
}

struct StoredInOrder([usize; 4]);

impl ModuleMapper for StoredInOrder {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D != 4 {
            return param;
        }
        let order = self.0;
        let mut back = [0; 4];
        for (position, &axis) in order.iter().enumerate() {
            back[axis] = position;
        }
        param.map(|weight| match weight.clone().try_into_primitive::<Wgpu>() {
            Ok(weight) => Tensor::from_primitive::<Wgpu>(permute(into_contiguous(permute(weight, &order)), &back)),
            Err(_) => weight,
        })
    }
}
