//! Objects that belong to no Cityscapes class, and the images they are cut from.

use super::canvas::{Canvas, SceneRng, fbm, hsv, mix, scale, value_noise};

/// Label of pasted outlier pixels in training scenes (the paper's convention).
pub const LABEL_OUTLIER: u8 = 254;

/// The kinds of outlier the generator draws. Training sees [`OutlierKind::TRAINING`] only;
/// [`OutlierKind::HELD_OUT`] appear in evaluation scenes, to test generalisation to new objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutlierKind {
    /// A four-legged animal silhouette.
    Animal,
    /// A wooden crate with planks.
    Crate,
    /// A flat irregular piece of debris.
    Debris,
    /// A ball with a bold pattern.
    Ball,
    /// A star-shaped object with a checker texture (held out).
    CheckerStar,
    /// A lumpy sack-like blob with stripes (held out).
    StripedBlob,
}

impl OutlierKind {
    pub const TRAINING: [Self; 4] = [Self::Animal, Self::Crate, Self::Debris, Self::Ball];
    pub const HELD_OUT: [Self; 2] = [Self::CheckerStar, Self::StripedBlob];
    pub const ALL: [Self; 6] = [Self::Animal, Self::Crate, Self::Debris, Self::Ball, Self::CheckerStar, Self::StripedBlob];

    pub fn name(self) -> &'static str {
        match self {
            Self::Animal => "animal",
            Self::Crate => "crate",
            Self::Debris => "debris",
            Self::Ball => "ball",
            Self::CheckerStar => "checker-star",
            Self::StripedBlob => "striped-blob",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    pub fn is_held_out(self) -> bool {
        Self::HELD_OUT.contains(&self)
    }
}

/// Draws one outlier standing on the ground at screen point `foot` (bottom centre), `size`
/// pixels across, labelled [`LABEL_OUTLIER`].
pub fn draw_outlier(canvas: &mut Canvas, kind: OutlierKind, foot: [f32; 2], size: f32, rng: &mut SceneRng) {
    let [fx, fy] = foot;
    let seed = rng.next_u64() as u32;
    let l = LABEL_OUTLIER;
    match kind {
        OutlierKind::Animal => {
            let fur = rng.any_colour();
            let (bw, bh) = (size * 0.5, size * 0.22);
            let body_y = fy - size * 0.42;
            let shade = move |x: f32, y: f32| scale(fur, 0.75 + 0.4 * fbm(x, y, size * 0.15 + 1.0, seed));
            for leg in [-0.7f32, -0.4, 0.4, 0.7] {
                let lx = fx + leg * bw;
                canvas.rect([lx - size * 0.04, body_y, lx + size * 0.04, fy], l, shade);
            }
            canvas.ellipse([fx, body_y], [bw, bh], l, shade);
            let dir = if rng.chance(0.5) { 1.0 } else { -1.0 };
            let head = [fx + dir * bw * 1.05, body_y - bh * 1.3];
            canvas.line([fx + dir * bw * 0.7, body_y - bh * 0.3], head, size * 0.12, l, fur);
            canvas.ellipse(head, [size * 0.12, size * 0.09], l, shade);
            canvas.line([fx - dir * bw, body_y - bh * 0.2], [fx - dir * bw * 1.35, body_y + bh], size * 0.04, l, fur);
        }
        OutlierKind::Crate => {
            let wood = rng.jitter([0.62, 0.45, 0.25], 0.12);
            let (w, h) = (size * rng.range(0.7, 1.0), size * rng.range(0.55, 0.85));
            let plank = h / 4.0;
            canvas.rect([fx - w / 2.0, fy - h, fx + w / 2.0, fy], l, move |x, y| {
                let seam = ((y - fy).rem_euclid(plank) < plank * 0.12) as u8 as f32;
                let grain = value_noise(x * 0.3, y * 4.0, 2.0, seed);
                scale(wood, (0.8 + 0.3 * grain) * (1.0 - 0.45 * seam))
            });
            canvas.line([fx - w / 2.0, fy - h], [fx + w / 2.0, fy], size * 0.06, l, scale(wood, 0.6));
        }
        OutlierKind::Debris => {
            let base = rng.any_colour();
            let n = 7 + rng.below(5);
            let points: Vec<[f32; 2]> = (0..n)
                .map(|i| {
                    let a = std::f32::consts::TAU * i as f32 / n as f32;
                    let r = size * rng.range(0.25, 0.55);
                    [fx + r * a.cos(), fy - size * 0.2 + r * 0.45 * a.sin()]
                })
                .collect();
            canvas.polygon(&points, l, move |x, y| scale(base, 0.5 + 0.7 * fbm(x, y, 3.0, seed)));
        }
        OutlierKind::Ball => {
            let (a, b) = (rng.any_colour(), rng.any_colour());
            let r = size * 0.4;
            let c = [fx, fy - r];
            canvas.ellipse(c, [r, r], l, move |x, y| {
                let band = (((x - c[0]) + (y - c[1]) * 0.5) / (r * 0.5)).floor() as i32 & 1;
                let light = 1.1 - 0.5 * (((x - c[0] + r * 0.4).powi(2) + (y - c[1] + r * 0.4).powi(2)).sqrt() / (2.0 * r));
                scale(if band == 0 { a } else { b }, light)
            });
        }
        OutlierKind::CheckerStar => {
            let (a, b) = (rng.any_colour(), rng.any_colour());
            let r = size * 0.45;
            let c = [fx, fy - r];
            let points: Vec<[f32; 2]> = (0..10)
                .map(|i| {
                    let ang = std::f32::consts::TAU * i as f32 / 10.0 - std::f32::consts::FRAC_PI_2;
                    let rr = if i % 2 == 0 { r } else { r * 0.45 };
                    [c[0] + rr * ang.cos(), c[1] + rr * ang.sin()]
                })
                .collect();
            let cell = (size * 0.12).max(1.5);
            canvas.polygon(&points, l, move |x, y| {
                if ((x / cell).floor() as i32 + (y / cell).floor() as i32) & 1 == 0 { a } else { b }
            });
        }
        OutlierKind::StripedBlob => {
            let (a, b) = (rng.any_colour(), rng.any_colour());
            let (rx, ry) = (size * 0.5, size * 0.32);
            let c = [fx, fy - ry];
            let wobble = seed;
            let stripe = (size * 0.1).max(1.5);
            canvas.paint(
                [c[0] - rx * 1.3, c[1] - ry * 1.3, c[0] + rx * 1.3, c[1] + ry * 1.3],
                Some(l),
                move |x, y| {
                    let d = ((x - c[0]) / rx).powi(2) + ((y - c[1]) / ry).powi(2);
                    d <= 0.75 + 0.5 * value_noise(x, y, size * 0.25 + 1.0, wobble)
                },
                move |x, y, _| if ((x - y * 0.6) / stripe).floor() as i32 & 1 == 0 { a } else { b },
            );
        }
    }
}

/// An outlier-source image: one outlier on an unrelated background (the paper takes COCO
/// images), with its mask; CoroCL contrasts the object's pixels against the background's.
pub struct OutlierSource {
    pub rgb8: Vec<u8>,
    /// `true` on the object's pixels.
    pub object: Vec<bool>,
    pub width: usize,
    pub height: usize,
}

pub fn outlier_source(seed: u64, width: usize, height: usize, kinds: &[OutlierKind]) -> OutlierSource {
    let mut rng = SceneRng::new(seed ^ 0xc0c0_0000);
    let mut canvas = Canvas::new(width, height, 0);
    let (a, b) = (rng.any_colour(), rng.any_colour());
    let tex = rng.next_u64() as u32;
    let blotch = rng.range(4.0, 40.0);
    let (w, h) = (width as f32, height as f32);
    canvas.rect([0.0, 0.0, w, h], 0, move |x, y| mix(a, b, fbm(x, y, blotch, tex)));
    // A floor line, so the object stands somewhere.
    let floor = h * rng.range(0.55, 0.8);
    let floor_colour = hsv(rng.unit(), rng.range(0.0, 0.5), rng.range(0.2, 0.8));
    canvas.rect([0.0, floor, w, h], 0, move |x, y| scale(floor_colour, 0.8 + 0.3 * fbm(x, y, 8.0, tex ^ 1)));
    let kind = kinds[rng.below(kinds.len())];
    let size = h * rng.range(0.3, 0.7);
    let foot = [w * rng.range(0.25, 0.75), (floor + size * 0.3).min(h - 1.0)];
    draw_outlier(&mut canvas, kind, foot, size, &mut rng);
    let exposure = [rng.range(0.7, 1.2); 3];
    OutlierSource {
        rgb8: canvas.to_rgb8(exposure, 0.03, tex),
        object: canvas.labels.iter().map(|&l| l == LABEL_OUTLIER).collect(),
        width,
        height,
    }
}
