//! A labelled canvas: colour and class per pixel, painted shape by shape, with cheap textures.

/// SplitMix64: tiny and fully specified, so a seed gives the same scene on every platform and
/// with every dependency version (a library RNG may change its stream between releases).
#[derive(Debug, Clone)]
pub struct SceneRng(u64);

impl SceneRng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }

    /// A fresh generator for a sub-part, so that adding draws in one part keeps the others' streams.
    pub fn fork(&mut self) -> Self {
        Self(self.next_u64())
    }

    /// A colour near `base`, each channel moved by up to `spread`.
    pub fn jitter(&mut self, base: [f32; 3], spread: f32) -> [f32; 3] {
        base.map(|c| (c + self.range(-spread, spread)).clamp(0.0, 1.0))
    }

    /// Any colour at all: hue, saturation and value drawn uniformly.
    pub fn any_colour(&mut self) -> [f32; 3] {
        hsv(self.unit(), self.range(0.0, 0.9), self.range(0.15, 0.95))
    }
}

pub fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let k = |n: f32| {
        let k = (n + h * 6.0) % 6.0;
        v - v * s * k.min(4.0 - k).clamp(0.0, 1.0)
    };
    [k(5.0), k(3.0), k(1.0)]
}

/// Smooth value noise in [0, 1] at lattice `scale` pixels, from an integer hash of the cell corners.
pub fn value_noise(x: f32, y: f32, scale: f32, seed: u32) -> f32 {
    let (fx, fy) = (x / scale, y / scale);
    let (ix, iy) = (fx.floor(), fy.floor());
    let (tx, ty) = (smooth(fx - ix), smooth(fy - iy));
    let (ix, iy) = (ix as i32, iy as i32);
    let a = lerp(lattice(ix, iy, seed), lattice(ix + 1, iy, seed), tx);
    let b = lerp(lattice(ix, iy + 1, seed), lattice(ix + 1, iy + 1, seed), tx);
    lerp(a, b, ty)
}

/// Two octaves of value noise: blotches with some grain, in [0, 1].
pub fn fbm(x: f32, y: f32, scale: f32, seed: u32) -> f32 {
    0.65 * value_noise(x, y, scale, seed) + 0.35 * value_noise(x, y, scale * 0.3, seed ^ 0x9e37)
}

/// Per-pixel grain in [-1, 1], independent between pixels.
pub fn grain(x: usize, y: usize, seed: u32) -> f32 {
    lattice(x as i32, y as i32, seed ^ 0x51ed) * 2.0 - 1.0
}

fn lattice(x: i32, y: i32, seed: u32) -> f32 {
    let mut h = (x as u32).wrapping_mul(0x8da6_b343) ^ (y as u32).wrapping_mul(0xd816_3841) ^ seed.wrapping_mul(0xcb1a_b31f);
    h ^= h >> 13;
    h = h.wrapping_mul(0x5bd1_e995);
    h ^= h >> 15;
    (h & 0xff_ffff) as f32 / 0xff_ffff as f32
}

fn smooth(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

pub fn scale(c: [f32; 3], k: f32) -> [f32; 3] {
    c.map(|v| v * k)
}

pub fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [lerp(a[0], b[0], t), lerp(a[1], b[1], t), lerp(a[2], b[2], t)]
}

/// Colour (linear 0..1 floats) and label per pixel.
#[derive(Debug, Clone)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<[f32; 3]>,
    pub labels: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, label: u8) -> Self {
        Self { width, height, rgb: vec![[0.0; 3]; width * height], labels: vec![label; width * height] }
    }

    /// Paints every pixel centre `(x + 0.5, y + 0.5)` inside the box where `inside` holds:
    /// `colour(x, y)` and `label` (`None` keeps the label: shading such as shadows).
    pub fn paint(
        &mut self,
        bbox: [f32; 4],
        label: Option<u8>,
        inside: impl Fn(f32, f32) -> bool,
        colour: impl Fn(f32, f32, [f32; 3]) -> [f32; 3],
    ) {
        let [x0, y0, x1, y1] = bbox;
        let xs = (x0.floor().max(0.0) as usize)..(x1.ceil().clamp(0.0, self.width as f32) as usize);
        let ys = (y0.floor().max(0.0) as usize)..(y1.ceil().clamp(0.0, self.height as f32) as usize);
        for y in ys {
            let py = y as f32 + 0.5;
            for x in xs.clone() {
                let px = x as f32 + 0.5;
                if inside(px, py) {
                    let i = y * self.width + x;
                    self.rgb[i] = colour(px, py, self.rgb[i]);
                    if let Some(label) = label {
                        self.labels[i] = label;
                    }
                }
            }
        }
    }

    pub fn rect(&mut self, r: [f32; 4], label: u8, colour: impl Fn(f32, f32) -> [f32; 3]) {
        self.paint(r, Some(label), |_, _| true, |x, y, _| colour(x, y));
    }

    pub fn ellipse(&mut self, c: [f32; 2], r: [f32; 2], label: u8, colour: impl Fn(f32, f32) -> [f32; 3]) {
        let bbox = [c[0] - r[0], c[1] - r[1], c[0] + r[0], c[1] + r[1]];
        let inside = |x: f32, y: f32| ((x - c[0]) / r[0]).powi(2) + ((y - c[1]) / r[1]).powi(2) <= 1.0;
        self.paint(bbox, Some(label), inside, |x, y, _| colour(x, y));
    }

    /// A filled polygon (even-odd rule), any number of vertices.
    pub fn polygon(&mut self, points: &[[f32; 2]], label: u8, colour: impl Fn(f32, f32) -> [f32; 3]) {
        self.paint(polygon_box(points), Some(label), |x, y| in_polygon(points, x, y), |x, y, _| colour(x, y));
    }

    /// A thick line segment with round ends.
    pub fn line(&mut self, a: [f32; 2], b: [f32; 2], width: f32, label: u8, colour: [f32; 3]) {
        let r = width / 2.0;
        let bbox = [a[0].min(b[0]) - r, a[1].min(b[1]) - r, a[0].max(b[0]) + r, a[1].max(b[1]) + r];
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len2 = (dx * dx + dy * dy).max(1e-6);
        let inside = |x: f32, y: f32| {
            let t = (((x - a[0]) * dx + (y - a[1]) * dy) / len2).clamp(0.0, 1.0);
            let (ex, ey) = (x - a[0] - t * dx, y - a[1] - t * dy);
            ex * ex + ey * ey <= r * r
        };
        self.paint(bbox, Some(label), inside, |_, _, _| colour);
    }

    /// The image as 8-bit RGB, after a global exposure/tint and per-pixel sensor noise.
    pub fn to_rgb8(&self, exposure: [f32; 3], noise: f32, seed: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.rgb.len() * 3);
        for (i, c) in self.rgb.iter().enumerate() {
            let (x, y) = (i % self.width, i / self.width);
            let n = noise * grain(x, y, seed);
            for ch in 0..3 {
                out.push(((c[ch] * exposure[ch] + n).clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
        out
    }
}

/// The box `[x0, y0, x1, y1]` around `points`.
pub fn polygon_box(points: &[[f32; 2]]) -> [f32; 4] {
    points.iter().fold([f32::MAX, f32::MAX, f32::MIN, f32::MIN], |b, p| [b[0].min(p[0]), b[1].min(p[1]), b[2].max(p[0]), b[3].max(p[1])])
}

pub fn in_polygon(points: &[[f32; 2]], x: f32, y: f32) -> bool {
    let mut inside = false;
    let mut j = points.len() - 1;
    for i in 0..points.len() {
        let (pi, pj) = (points[i], points[j]);
        if (pi[1] > y) != (pj[1] > y) && x < (pj[0] - pi[0]) * (y - pi[1]) / (pj[1] - pi[1]) + pi[0] {
            inside = !inside;
        }
        j = i;
    }
    inside
}
