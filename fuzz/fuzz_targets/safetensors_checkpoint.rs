//! A safetensors file of any bytes, as the page and the command line load it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpl_web::weights::safetensors::SafetensorsCheckpoint;
use rpl_web::weights::{TensorSource, detect_config};

fuzz_target!(|data: &[u8]| {
    if let Ok(checkpoint) = SafetensorsCheckpoint::from_bytes("fuzz.safetensors", data.to_vec()) {
        let _ = detect_config(&checkpoint);
        for name in checkpoint.tensor_names() {
            let _ = checkpoint.read_f32(&name);
        }
    }
});
