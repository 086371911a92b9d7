//! Outliers placed by hand on any image: the experiment RPL is built on (an unknown object in a
//! known scene), with the objects' pixels as the ground-truth OoD mask. The objects are the
//! generator's outlier kinds or regions cut from any image.

use super::canvas::{Canvas, SceneRng, in_polygon, polygon_box};
use super::outliers::{LABEL_OUTLIER, OutlierKind, draw_outlier};

/// What a placement draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PastedObject {
    /// One of the generator's outlier kinds.
    Generated(OutlierKind),
    /// The cut-out at this index of the list given beside the placements.
    Cutout(usize),
}

/// One object on an image: what it is, where it stands (bottom centre, in pixels), how tall it
/// is (pixels) and the seed of its colours and shape (a generated kind's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlacedOutlier {
    pub object: PastedObject,
    pub foot: [f32; 2],
    pub size: f32,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CutoutError {
    #[error("an outline needs at least 3 points, all finite; this one has {0}")]
    Outline(usize),
    #[error("the outline encloses no opaque pixel of the {width}x{height} image")]
    Empty { width: usize, height: usize },
    #[error("a {width}x{height} cut-out takes {expected} RGBA bytes, not {actual}")]
    Size { width: usize, height: usize, expected: usize, actual: usize },
    #[error("object {placement} asks for cut-out {index}; the list of cut-outs given holds {count}")]
    Missing { placement: usize, index: usize, count: usize },
}

/// A region cut from an image, to paste as an outlier: the pixels of its bounding box, opaque
/// (alpha 255) where they belong to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cutout {
    pub width: usize,
    pub height: usize,
    /// Interleaved RGBA.
    pub rgba8: Vec<u8>,
}

impl Cutout {
    /// The pixels of `rgba8` (`width` x `height`) whose centres lie inside `outline` (pixel
    /// coordinates, even-odd rule) and that are opaque (alpha >= 128, so a transparent PNG's
    /// background stays out), cropped to their bounding box; alpha 0 on the box's other pixels.
    pub fn cut(width: usize, height: usize, rgba8: &[u8], outline: &[[f32; 2]]) -> Result<Self, CutoutError> {
        check_rgba(width, height, rgba8)?;
        if outline.len() < 3 || !outline.iter().flatten().all(|v| v.is_finite()) {
            return Err(CutoutError::Outline(outline.len()));
        }
        let belongs = |x: usize, y: usize| rgba8[4 * (y * width + x) + 3] >= 128 && in_polygon(outline, x as f32 + 0.5, y as f32 + 0.5);
        // Only the outline's box can hold such pixels; their own box is the cut-out's.
        let [left, top, right, bottom] = polygon_box(outline);
        let span = |lo: f32, hi: f32, len: usize| (lo.floor().max(0.0) as usize)..(hi.ceil().clamp(0.0, len as f32) as usize);
        let (xs, ys) = (span(left, right, width), span(top, bottom, height));
        let mut inside = vec![false; xs.len() * ys.len()];
        let mut bounds: Option<[usize; 4]> = None;
        for (row, y) in ys.clone().enumerate() {
            for (column, x) in xs.clone().enumerate() {
                if belongs(x, y) {
                    inside[row * xs.len() + column] = true;
                    let b = bounds.get_or_insert([x, y, x, y]);
                    *b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
                }
            }
        }
        let [x0, y0, x1, y1] = bounds.ok_or(CutoutError::Empty { width, height })?;
        let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
        let mut cut = vec![0u8; w * h * 4];
        for y in y0..=y1 {
            for x in x0..=x1 {
                if inside[(y - ys.start) * xs.len() + (x - xs.start)] {
                    let (from, to) = (4 * (y * width + x), 4 * ((y - y0) * w + (x - x0)));
                    cut[to..to + 3].copy_from_slice(&rgba8[from..from + 3]);
                    cut[to + 3] = 255;
                }
            }
        }
        Ok(Self { width: w, height: h, rgba8: cut })
    }

    /// A cut-out as RGBA, its pixels with alpha >= 128 being the object's (a transparent PNG).
    pub fn from_rgba(width: usize, height: usize, rgba8: Vec<u8>) -> Result<Self, CutoutError> {
        check_rgba(width, height, &rgba8)?;
        Ok(Self { width, height, rgba8 })
    }

    /// The object's pixels.
    pub fn pixels(&self) -> usize {
        self.rgba8.chunks_exact(4).filter(|p| p[3] >= 128).count()
    }

    /// Drawn `size` pixels tall standing on `foot` (aspect kept; nearest pixel, so that its edge
    /// stays as sharp as the mask it gives).
    fn draw(&self, canvas: &mut Canvas, foot: [f32; 2], size: f32) {
        let scale = size / self.height as f32;
        let width = self.width as f32 * scale;
        let [left, top] = [foot[0] - width / 2.0, foot[1] - size];
        let source = |x: f32, y: f32| {
            let (u, v) = ((x - left) / scale, (y - top) / scale);
            let within = u >= 0.0 && v >= 0.0 && (u as usize) < self.width && (v as usize) < self.height;
            within.then(|| &self.rgba8[4 * (v as usize * self.width + u as usize)..][..4])
        };
        let opaque = |x: f32, y: f32| source(x, y).is_some_and(|p| p[3] >= 128);
        let colour = |x: f32, y: f32, old: [f32; 3]| source(x, y).map_or(old, |p| [p[0], p[1], p[2]].map(|c| f32::from(c) / 255.0));
        canvas.paint([left, top, left + width, foot[1]], Some(LABEL_OUTLIER), opaque, colour);
    }
}

fn check_rgba(width: usize, height: usize, rgba8: &[u8]) -> Result<(), CutoutError> {
    let expected = width * height * 4;
    if rgba8.len() != expected || expected == 0 {
        return Err(CutoutError::Size { width, height, expected, actual: rgba8.len() });
    }
    Ok(())
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

/// `rgb8` (interleaved RGB, `width` x `height`) with `outliers` drawn over it in order (a
/// `PastedObject::Cutout` names one of `cutouts`), and the OoD mask: `base_mask` (the image's own
/// ground truth: 0 inlier, 1 OoD, 255 ignored; all inlier where there is none) with 1 on every
/// pasted pixel.
pub fn paste_outliers(
    width: usize,
    height: usize,
    rgb8: &[u8],
    base_mask: Option<&[u8]>,
    outliers: &[PlacedOutlier],
    cutouts: &[Cutout],
) -> Result<Pasted, CutoutError> {
    assert_eq!(rgb8.len(), width * height * 3, "an RGB image of {width}x{height}");
    for (placement, outlier) in outliers.iter().enumerate() {
        if let PastedObject::Cutout(index) = outlier.object
            && index >= cutouts.len()
        {
            return Err(CutoutError::Missing { placement, index, count: cutouts.len() });
        }
    }
    let draw = |canvas: &mut Canvas, outlier: &PlacedOutlier| match outlier.object {
        PastedObject::Generated(kind) => draw_outlier(canvas, kind, outlier.foot, outlier.size, &mut SceneRng::new(outlier.seed)),
        PastedObject::Cutout(index) => cutouts[index].draw(canvas, outlier.foot, outlier.size),
    };
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
        draw(&mut canvas, outlier);
    }
    let earlier_labels = std::mem::replace(&mut canvas.labels, vec![0; width * height]);
    if let Some(outlier) = last {
        draw(&mut canvas, outlier);
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
    Ok(pasted)
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
        let star = PlacedOutlier { object: PastedObject::Generated(OutlierKind::CheckerStar), foot: [48.0, 60.0], size: 30.0, seed: 7 };
        let Pasted { rgb8: pasted, mask, object_pixels: object, .. } = paste_outliers(w, h, &image, Some(&base), &[star], &[]).unwrap();
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
        let ball = PlacedOutlier { object: PastedObject::Generated(OutlierKind::Ball), foot: [32.0, 60.0], size: 40.0, seed: 1 };
        let crate_ = PlacedOutlier { object: PastedObject::Generated(OutlierKind::Crate), foot: [32.0, 60.0], size: 40.0, seed: 2 };
        assert_eq!(paste_outliers(w, h, &image, None, &[ball, crate_], &[]).unwrap(), paste_outliers(w, h, &image, None, &[ball, crate_], &[]).unwrap());
        let crate_only = paste_outliers(w, h, &image, None, &[crate_], &[]).unwrap();
        let both = paste_outliers(w, h, &image, None, &[ball, crate_], &[]).unwrap();
        for i in (0..w * h).filter(|&i| crate_only.mask[i] == 1) {
            assert_eq!(both.rgb8[3 * i..3 * i + 3], crate_only.rgb8[3 * i..3 * i + 3], "the crate, drawn last, is on top at {i}");
        }
        assert!(both.object_pixels > crate_only.object_pixels, "the ball shows around the crate");
        assert_eq!(both.last_object, crate_only.mask, "the last object's own pixels: the crate's");
        assert_eq!(crate_only.last_object, crate_only.mask);
        assert!(paste_outliers(w, h, &image, None, &[], &[]).unwrap().last_object.iter().all(|&m| m == 0));
    }

    fn rgba(width: usize, height: usize) -> Vec<u8> {
        (0..width * height).flat_map(|i| [(i % 251) as u8, (i * 7 % 253) as u8, (i * 13 % 255) as u8, 255]).collect()
    }

    /// A rectangle's pixel centres, a triangle's by the even-odd rule, and a transparent
    /// background left out; the box is cropped to what is cut.
    #[test]
    fn cutting_keeps_the_pixels_inside_the_outline_cropped_to_their_box() {
        let (w, h) = (20, 10);
        let image = rgba(w, h);
        let rectangle = Cutout::cut(w, h, &image, &[[2.0, 3.0], [8.0, 3.0], [8.0, 7.0], [2.0, 7.0]]).unwrap();
        assert_eq!((rectangle.width, rectangle.height, rectangle.pixels()), (6, 4, 24));
        assert_eq!(rectangle.rgba8[..4], image[4 * (3 * w + 2)..][..4], "its first pixel is the image's (2, 3)");
        assert_eq!(rectangle.rgba8[4 * 23..][..4], image[4 * (6 * w + 7)..][..4], "its last is (7, 6)");
        // Right triangle with legs along x = 0 and y = 10: the centres with x + 0.5 < 10 - (y + 0.5).
        let triangle = Cutout::cut(w, h, &image, &[[0.0, 0.0], [10.0, 10.0], [0.0, 10.0]]).unwrap();
        let expected = (0..h).map(|y| (0..w).filter(|&x| (x as f32 + 0.5) < y as f32 + 0.5).count()).sum::<usize>();
        assert_eq!(triangle.pixels(), expected);
        assert_eq!((triangle.width, triangle.height), (9, 9), "the first row holds no centre: (0, 1) to (8, 9)");
        assert_eq!((triangle.rgba8[3], triangle.rgba8[7]), (255, 0), "(0, 1) is inside, (1, 1) on the edge is not");
        let mut transparent = image.clone();
        for pixel in transparent.chunks_exact_mut(4).take(w * 5) {
            pixel[3] = 0;
        }
        let lower = Cutout::cut(w, h, &transparent, &[[0.0, 0.0], [20.0, 0.0], [20.0, 10.0], [0.0, 10.0]]).unwrap();
        assert_eq!((lower.width, lower.height, lower.pixels()), (20, 5, 100), "the transparent upper half stays out");
        assert_eq!(Cutout::cut(w, h, &image, &[[0.0, 0.0], [5.0, 5.0]]), Err(CutoutError::Outline(2)));
        assert_eq!(Cutout::cut(w, h, &image, &[[0.0, 0.0], [f32::NAN, 5.0], [3.0, 3.0]]), Err(CutoutError::Outline(3)));
        let outside = [[30.0, 0.0], [40.0, 0.0], [40.0, 5.0]];
        assert_eq!(Cutout::cut(w, h, &image, &outside), Err(CutoutError::Empty { width: w, height: h }));
        assert!(matches!(Cutout::from_rgba(3, 3, vec![0; 35]), Err(CutoutError::Size { expected: 36, actual: 35, .. })));
    }

    /// Pasted at twice its height, a cut-out covers four times its pixels, each its own colour,
    /// standing on its foot; its transparent pixels leave the image as it was.
    #[test]
    fn a_pasted_cutout_is_scaled_to_its_size_on_its_foot() {
        let (w, h) = (40, 30);
        let image = grey(w, h);
        let mut pixels = vec![0u8; 4 * 6];
        for (i, pixel) in pixels.chunks_exact_mut(4).enumerate() {
            pixel.copy_from_slice(&[10 * i as u8, 100, 200, if i == 0 { 0 } else { 255 }]);
        }
        let cutout = Cutout::from_rgba(3, 2, pixels).unwrap();
        let placed = PlacedOutlier { object: PastedObject::Cutout(0), foot: [20.0, 25.0], size: 4.0, seed: 0 };
        let pasted = paste_outliers(w, h, &image, None, &[placed], std::slice::from_ref(&cutout)).unwrap();
        assert_eq!(pasted.object_pixels, 4 * cutout.pixels(), "5 opaque pixels at twice the size");
        // 6 x 4 pixels from (17, 21): source pixel (u, v) = ((x - 17) / 2, (y - 21) / 2).
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                let source = (17..23).contains(&x) && (21..25).contains(&y) && ((x - 17) / 2, (y - 21) / 2) != (0, 0);
                assert_eq!(pasted.mask[i] == 1, source, "({x}, {y})");
                if source {
                    let s = (y - 21) / 2 * 3 + (x - 17) / 2;
                    assert_eq!(pasted.rgb8[3 * i..3 * i + 3], [10 * s as u8, 100, 200], "({x}, {y}) is source pixel {s}");
                } else {
                    assert_eq!(pasted.rgb8[3 * i..3 * i + 3], image[3 * i..3 * i + 3]);
                }
            }
        }
        assert_eq!(pasted.last_object, pasted.mask);
        let missing = paste_outliers(w, h, &image, None, &[placed, placed], &[]);
        assert_eq!(missing, Err(CutoutError::Missing { placement: 0, index: 0, count: 0 }));
    }
}
