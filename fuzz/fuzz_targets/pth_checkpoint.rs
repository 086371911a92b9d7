//! A `.pth` file of any bytes: the pickle guard, then both readers (the page's, from memory, and
//! pytorch-reader, from a file) and every tensor they list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpl_web::weights::pth::PthCheckpoint;
use rpl_web::weights::torch_zip::TorchZipCheckpoint;
use rpl_web::weights::{TensorSource, detect_config, pickle_guard};

fuzz_target!(|data: &[u8]| {
    let _ = pickle_guard::check_checkpoint(std::io::Cursor::new(data));
    if let Ok(checkpoint) = TorchZipCheckpoint::open("fuzz.pth", Box::new(data.to_vec())) {
        let _ = detect_config(&checkpoint);
        for name in checkpoint.tensor_names() {
            let _ = checkpoint.read_f32(&name);
        }
    }
    // The reader reads from a file, as the command line does.
    let path = std::env::temp_dir().join(format!("rpl-fuzz-{}.pth", std::process::id()));
    std::fs::write(&path, data).expect("temp file");
    if let Ok(checkpoint) = PthCheckpoint::open(&path) {
        let _ = detect_config(&checkpoint);
        for name in checkpoint.tensor_names() {
            let _ = checkpoint.read_f32(&name);
        }
    }
});
