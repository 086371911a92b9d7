//! Choosing where the network runs: burn's CPU backend or wgpu (Vulkan, Metal, DX12, WebGPU).

#[cfg(not(target_arch = "wasm32"))]
use burn::tensor::Device;
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// burn's ndarray backend on the CPU.
    Ndarray,
    /// burn's flex backend on the CPU (multi-threaded, SIMD; the one that can train).
    Flex,
    /// burn's wgpu backend on the GPU (or a software adapter such as lavapipe).
    Wgpu,
}

#[derive(Debug, Error)]
pub enum BackendError {
    #[error("the {0} backend is not compiled into this build (cargo feature `{0}`)")]
    NotCompiled(&'static str),
    #[error("no usable GPU adapter for wgpu: {0}")]
    NoAdapter(String),
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ndarray => "ndarray",
            Self::Flex => "flex",
            Self::Wgpu => "wgpu",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Ndarray, Self::Flex, Self::Wgpu].into_iter().find(|b| b.name() == name)
    }

    /// A ready device of this backend (natively; the browser initialises wgpu asynchronously).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn device(self) -> Result<Device, BackendError> {
        match self {
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)] // burn 0.22 deprecates ndarray for flex; we ship ndarray as designed
            Self::Ndarray => Ok(Device::ndarray()),
            #[cfg(feature = "flex")]
            Self::Flex => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => Device::wgpu_options().init().map_err(|e| BackendError::NoAdapter(e.to_string())),
            #[allow(unreachable_patterns)]
            other => Err(BackendError::NotCompiled(other.name())),
        }
    }
}
