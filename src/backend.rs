//! Choosing where the network runs: burn's CPU backend or wgpu (Vulkan, Metal, DX12, WebGPU).

use burn::tensor::{Device, DeviceError, FloatDType};
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

    /// Bytes per value of a float tensor.
    pub fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 => 2,
        }
    }
}

/// Makes `precision` the float type of `device`'s tensors, weights included when loaded onto it.
/// burn fixes a device's float type at its first tensor: call this before anything uses it.
pub fn set_precision(device: &mut Device, precision: Precision) -> Result<(), DeviceError> {
    match precision {
        Precision::F32 => Ok(()),
        Precision::F16 => device.configure(FloatDType::F16),
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

    /// A ready device computing in `precision` (see [`set_precision`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn device_with(self, precision: Precision) -> Result<Device, BackendError> {
        let mut device = self.device()?;
        set_precision(&mut device, precision)
            .map_err(|e| BackendError::NoHalfPrecision { backend: self.name(), reason: e.to_string() })?;
        Ok(device)
    }
}

/// Without a display (a server, CI, a container) Mesa's Vulkan device-select layer still asks
/// Wayland for the compositor's GPU and prints `XDG_RUNTIME_DIR is invalid` on every run. With no
/// compositor it has nothing to choose (wgpu picks its adapter itself), so it is switched off
/// there; on a desktop nothing changes.
///
/// # Safety
/// Sets an environment variable: call it before any other thread starts.
#[cfg(target_os = "linux")]
pub unsafe fn skip_device_select_without_display() {
    let has_display = ["WAYLAND_DISPLAY", "DISPLAY"].iter().any(|name| std::env::var_os(name).is_some());
    if !has_display && std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: the caller guarantees no other thread reads the environment yet.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}
