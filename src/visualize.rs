//! Pictures for people: the Cityscapes palette and a heat-map overlay of the anomaly score.

/// Cityscapes train-id names, in train-id order.
pub const CITYSCAPES_CLASSES: [&str; 19] = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
];

/// The Cityscapes colour of each train id.
pub const CITYSCAPES_PALETTE: [[u8; 3]; 19] = [
    [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153], [153, 153, 153],
    [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152], [70, 130, 180], [220, 20, 60],
    [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100], [0, 80, 100], [0, 0, 230], [119, 11, 32],
];

/// Colour for class ids outside the palette.
const UNKNOWN_COLOUR: [u8; 3] = [0, 0, 0];

/// Interleaved RGB of a class map.
pub fn colorize_classes(classes: &[u8]) -> Vec<u8> {
    classes
        .iter()
        .flat_map(|&c| CITYSCAPES_PALETTE.get(c as usize).copied().unwrap_or(UNKNOWN_COLOUR))
        .collect()
}

/// A blue-to-red ramp through cyan, green and yellow, for t in [0, 1].
pub fn heat_colour(t: f32) -> [u8; 3] {
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let channel = |centre: f32| ((1.5 - (4.0 * t - centre).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    [channel(3.0), channel(2.0), channel(1.0)]
}

/// The finite range `(lo, hi)` of scores (0, 1 when there is none).
pub fn finite_range<'a>(scores: impl IntoIterator<Item = &'a f32>) -> (f32, f32) {
    let (lo, hi) = scores
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if lo <= hi { (lo, hi) } else { (0.0, 1.0) }
}

/// The score's heat map (scaled to its own finite range) blended over the RGB image.
/// `opacity` is the heat map's weight in [0, 1].
pub fn score_overlay(rgb: &[u8], score: &[f32], opacity: f32) -> Vec<u8> {
    let (lo, hi) = finite_range(score);
    score_overlay_in_range(rgb, score, (lo, hi), opacity)
}

/// The heat map of `score` over `range` (so that two maps share one colour scale), blended over
/// the RGB image with weight `opacity`.
pub fn score_overlay_in_range(rgb: &[u8], score: &[f32], range: (f32, f32), opacity: f32) -> Vec<u8> {
    let (lo, hi) = range;
    let span = if hi > lo { hi - lo } else { 1.0 };
    rgb.chunks_exact(3)
        .zip(score)
        .flat_map(|(px, &s)| {
            let heat = heat_colour((s - lo) / span);
            std::array::from_fn::<u8, 3, _>(|c| {
                (px[c] as f32 * (1.0 - opacity) + heat[c] as f32 * opacity).round() as u8
            })
        })
        .collect()
}

/// The image dimmed, with the pixels of `mask` in solid red: a binary OoD mask.
pub fn mask_overlay(rgb: &[u8], mask: &[bool]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .zip(mask)
        .flat_map(|(px, &m)| if m { [230, 30, 30] } else { [px[0] / 2, px[1] / 2, px[2] / 2] })
        .collect()
}

/// Interleaved RGB to RGBA with opaque alpha (what a canvas's ImageData holds).
pub fn rgb_to_rgba(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3).flat_map(|px| [px[0], px[1], px[2], 255]).collect()
}

/// The class map as an indexed (palette) PNG: each pixel's byte is its train id, shown in the
/// Cityscapes colours, so the file is both the ids and their picture.
pub fn write_class_png(writer: impl std::io::Write, width: usize, height: usize, classes: &[u8]) -> Result<(), png::EncodingError> {
    // 256 entries: any byte is a valid index; ids past the classes show UNKNOWN_COLOUR.
    let palette: Vec<u8> = (0..256).flat_map(|id| CITYSCAPES_PALETTE.get(id).copied().unwrap_or(UNKNOWN_COLOUR)).collect();
    let mut encoder = png::Encoder::new(writer, width as u32, height as u32);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_palette(palette);
    encoder.write_header()?.write_image_data(classes)
}
