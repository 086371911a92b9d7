//! An image file of any bytes: decoding (PNG, JPEG, WebP), orientation, then shrinking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpl_web::preprocess::RgbImage;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = RgbImage::decode("fuzz", data) {
        assert_eq!(image.pixels.len(), image.width * image.height * 3);
        if let Some(small) = image.fit_within(16) {
            assert!(small.width.max(small.height) <= 16);
        }
    }
});
