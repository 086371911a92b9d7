//! Choosing where the network runs: burn's CPU backend or wgpu (Vulkan, Metal, DX12, WebGPU).

#[cfg(not(target_arch = "wasm32"))]
use burn::tensor::{Device, FloatDType};
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
    #[error("the {backend} backend cannot compute in float16 here (wgpu needs an adapter with shader-f16): {reason}")]
    NoHalfPrecision { backend: &'static str, reason: String },
}

/// The float type the network computes in. Float16 halves memory and, on GPUs with fast
/// half-precision arithmetic, time; it changes the outputs by about half a percent (see the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::F32, Self::F16].into_iter().find(|p| p.name() == name)
    }
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

    /// A ready device whose float tensors (weights included, when loaded onto it) are of
    /// `precision`. Call before anything else uses this backend's device: burn fixes a device's
    /// float type at its first tensor.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn device_with(self, precision: Precision) -> Result<Device, BackendError> {
        let mut device = self.device()?;
        if precision == Precision::F16 {
            device
                .configure(FloatDType::F16)
                .map_err(|e| BackendError::NoHalfPrecision { backend: self.name(), reason: format!("{e:?}") })?;
        }
        Ok(device)
    }
}
