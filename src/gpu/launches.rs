//! Kernel launches counted as burn's GPU runtime issues them (cubecl's launch observer): each one
//! is a compute pass the device schedules, whatever its size, so their number is the fixed cost
//! of a frame on a GPU.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn_cubecl::cubecl::logging::{LaunchObservation, LaunchObserver};

#[derive(Default)]
struct Tally(Mutex<HashMap<&'static str, usize>>);

impl LaunchObserver for Tally {
    fn launched(&self, kernel: &'static str) {
        let mut counts = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *counts.entry(kernel).or_default() += 1;
    }
}

/// Runs `work`, counting the kernels it launches on every GPU client of the process: each
/// kernel's name and its launches (none on a CPU backend).
pub fn count_launches<T>(work: impl FnOnce() -> T) -> (T, HashMap<&'static str, usize>) {
    let tally = Arc::new(Tally::default());
    let watching = LaunchObservation::new(tally.clone());
    let result = work();
    drop(watching);
    let counts = std::mem::take(&mut *tally.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    (result, counts)
}
