//! Outliers placed by hand on any image: the experiment RPL is built on (an unknown object in a
//! known scene), with the objects' pixels as the ground-truth OoD mask.

use super::canvas::{Canvas, SceneRng};
use super::outliers::{LABEL_OUTLIER, OutlierKind, draw_outlier};

/// One outlier on an image: its kind, where it stands (bottom centre, in pixels), how large it
/// is (pixels) and the seed of its colours and shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlacedOutlier {
    pub kind: OutlierKind,
    pub foot: [f32; 2],
    pub size: f32,
    pub seed: u64,
}

/// An image with outliers pasted in, and its ground truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pasted {
    /// Interleaved RGB: the objects' pixels drawn, every other pixel as it was.
    pub rgb8: Vec<u8>,
    /// The OoD mask: 1 on the objects' pixels, the image's own ground truth elsewhere.
    pub mask: Vec<u8>,
    /// Pixels the objects cover.
    pub object_pixels: usize,
    /// 1 on the pixels of the last object (as far as it shows), 0 elsewhere: what the page
    /// compares before and after a placement.
    pub last_object: Vec<u8>,
}

/// `rgb8` (interleaved RGB, `width` x `height`) with `outliers` drawn over it in order, and the
/// OoD mask: `base_mask` (the image's own ground truth: 0 inlier, 1 OoD, 255 ignored; all
/// inlier where there is none) with 1 on every pasted pixel.
pub fn paste_outliers(width: usize, height: usize, rgb8: &[u8], base_mask: Option<&[u8]>, outliers: &[PlacedOutlier]) -> Pasted {
    assert_eq!(rgb8.len(), width * height * 3, "an RGB image of {width}x{height}");
    let mut canvas = Canvas::new(width, height, 0);
    for (pixel, rgb) in canvas.rgb.iter_mut().zip(rgb8.chunks_exact(3)) {
        *pixel = [rgb[0], rgb[1], rgb[2]].map(|c| f32::from(c) / 255.0);
    }
    // The earlier objects, then the last on its own labels (it may cover parts of them).
    let (last, earlier) = match outliers.split_last() {
        Some((last, earlier)) => (Some(last), earlier),
        None => (None, outliers),
    };
    for outlier in earlier {
        draw_outlier(&mut canvas, outlier.kind, outlier.foot, outlier.size, &mut SceneRng::new(outlier.seed));
    }
    let earlier_labels = std::mem::replace(&mut canvas.labels, vec![0; width * height]);
    if let Some(outlier) = last {
        draw_outlier(&mut canvas, outlier.kind, outlier.foot, outlier.size, &mut SceneRng::new(outlier.seed));
    }
    let last_object: Vec<u8> = canvas.labels.iter().map(|&label| u8::from(label == LABEL_OUTLIER)).collect();
    let mut pasted = Pasted {
        rgb8: rgb8.to_vec(),
        mask: base_mask.map_or_else(|| vec![0; width * height], <[u8]>::to_vec),
        object_pixels: 0,
        last_object,
    };
    for i in (0..width * height).filter(|&i| earlier_labels[i] == LABEL_OUTLIER || pasted.last_object[i] == 1) {
        pasted.mask[i] = 1;
        pasted.object_pixels += 1;
        for (byte, value) in pasted.rgb8[3 * i..3 * i + 3].iter_mut().zip(canvas.rgb[i]) {
            *byte = (value.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    pasted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey(width: usize, height: usize) -> Vec<u8> {
        (0..width * height * 3).map(|i| (i * 31 % 256) as u8).collect()
    }

    /// The mask marks exactly the pixels that changed (or could have), the rest keep their bytes.
    #[test]
    fn pasting_changes_only_the_masked_pixels_and_keeps_the_base_mask_elsewhere() {
        let (w, h) = (96, 64);
        let image = grey(w, h);
        let mut base = vec![0u8; w * h];
        base[0] = 255;
        base[1] = 1;
        let star = PlacedOutlier { kind: OutlierKind::CheckerStar, foot: [48.0, 60.0], size: 30.0, seed: 7 };
        let Pasted { rgb8: pasted, mask, object_pixels: object, .. } = paste_outliers(w, h, &image, Some(&base), &[star]);
        assert_eq!(mask.iter().filter(|&&m| m == 1).count(), object + 1, "the object's pixels and the base's one OoD pixel");
        assert!(object > 100 && object < 30 * 30, "a star about 30 pixels across: {object} pixels");
        assert_eq!((mask[0], mask[1]), (255, 1), "the base mask stays outside the object");
        for i in 0..w * h {
            if mask[i] != 1 {
                assert_eq!(pasted[3 * i..3 * i + 3], image[3 * i..3 * i + 3], "pixel {i} outside the object changed");
            }
        }
        let changed = (0..w * h).filter(|&i| pasted[3 * i..3 * i + 3] != image[3 * i..3 * i + 3]).count();
        assert!(changed > object / 2, "the object is drawn: {changed} of {object} pixels changed");
    }

    /// The same placements give the same bytes; a later object covers an earlier one.
    #[test]
    fn placements_are_deterministic_and_drawn_in_order() {
        let (w, h) = (64, 64);
        let image = grey(w, h);
        let ball = PlacedOutlier { kind: OutlierKind::Ball, foot: [32.0, 60.0], size: 40.0, seed: 1 };
        let crate_ = PlacedOutlier { kind: OutlierKind::Crate, foot: [32.0, 60.0], size: 40.0, seed: 2 };
        assert_eq!(paste_outliers(w, h, &image, None, &[ball, crate_]), paste_outliers(w, h, &image, None, &[ball, crate_]));
        let crate_only = paste_outliers(w, h, &image, None, &[crate_]);
        let both = paste_outliers(w, h, &image, None, &[ball, crate_]);
        for i in (0..w * h).filter(|&i| crate_only.mask[i] == 1) {
            assert_eq!(both.rgb8[3 * i..3 * i + 3], crate_only.rgb8[3 * i..3 * i + 3], "the crate, drawn last, is on top at {i}");
        }
        assert!(both.object_pixels > crate_only.object_pixels, "the ball shows around the crate");
        assert_eq!(both.last_object, crate_only.mask, "the last object's own pixels: the crate's");
        assert_eq!(crate_only.last_object, crate_only.mask);
        assert!(paste_outliers(w, h, &image, None, &[]).last_object.iter().all(|&m| m == 0));
    }
}
