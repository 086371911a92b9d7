//! A ground-truth mask of any bytes, read as the evaluation reads labels.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpl_web::datasets::decode_label;

fuzz_target!(|data: &[u8]| {
    if let Ok((width, height, values)) = decode_label(std::path::Path::new("fuzz.png"), data) {
        assert_eq!(values.len(), width * height);
    }
});
