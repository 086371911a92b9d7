//! Street scenes in perspective: a pinhole camera 1.5 m above a flat ground plane.
//!
//! A ground point at lateral position `X` metres appears on the image row where the scale `t`
//! (pixels per metre at that depth) is `(y - horizon) / CAMERA_HEIGHT`, at column `vx + X * t`.

use super::canvas::{Canvas, SceneRng, fbm, grain, hsv, mix, scale, value_noise};
use super::outliers::{OutlierKind, draw_outlier};
use super::{Context, train_id as id};

const CAMERA_HEIGHT: f32 = 1.5;

/// The farthest thin things stand (a fraction of the scale of the image's bottom row).
const THIN_FAR: f32 = 0.15;
/// People and bicycles stand nearer: at 0.25 a person is about 40 pixels tall and 11 wide in a
/// 256x512 scene, several cells of the output stride.
const PEOPLE_FAR: f32 = 0.25;

/// The smallest widths of thin parts, in pixels of a 512-pixel-wide scene: a 5-pixel pole is
/// still most of a cell at output stride 8.
const MIN_POLE_WIDTH: f32 = 5.0;
const MIN_BICYCLE_STROKE: f32 = 2.5;
/// Half sizes of the smallest sign (across) and traffic-light box (width, height), in pixels
/// of a 512-pixel-wide scene: two output cells across.
const MIN_SIGN_HALF: f32 = 8.0;
const MIN_LIGHT_HALF: [f32; 2] = [5.0, 12.0];

/// Something standing on the ground, drawn far to near.
struct Placed {
    t: f32,
    x_world: f32,
    thing: Thing,
}

#[derive(Clone, Copy)]
enum Thing {
    Car,
    Truck,
    Person,
    Bicycle,
    Pole,
    SignPole,
    TrafficLight,
    Tree,
    Outlier(OutlierKind),
}

struct Camera {
    horizon: f32,
    vx: f32,
    width: f32,
    height: f32,
}

impl Camera {
    /// Pixels per metre on image row `y` (below the horizon).
    fn t_at_row(&self, y: f32) -> f32 {
        (y - self.horizon) / CAMERA_HEIGHT
    }

    fn ground_row(&self, t: f32) -> f32 {
        self.horizon + CAMERA_HEIGHT * t
    }

    fn column(&self, x_world: f32, t: f32) -> f32 {
        self.vx + x_world * t
    }

    fn t_max(&self) -> f32 {
        self.t_at_row(self.height)
    }
}

pub(super) fn draw_street(canvas: &mut Canvas, context: Context, outliers: &[OutlierKind], rng: &mut SceneRng) {
    let (w, h) = (canvas.width as f32, canvas.height as f32);
    let cam = Camera { horizon: h * rng.range(0.34, 0.5), vx: w * rng.range(0.38, 0.62), width: w, height: h };
    let city = context == Context::City;

    // Road and roadside widths in metres.
    let road_left = rng.range(3.0, if city { 7.5 } else { 4.5 });
    let road_right = rng.range(3.0, if city { 7.5 } else { 4.5 });
    let side_width = if city { rng.range(2.0, 4.5) } else { rng.range(1.0, 3.0) };

    draw_sky(canvas, &cam, rng);
    if city {
        draw_skyline(canvas, &cam, rng);
    } else {
        draw_hills(canvas, &cam, rng);
    }
    draw_ground(canvas, &cam, city, [road_left, road_right], side_width, rng);
    if city {
        for side in [-1.0f32, 1.0] {
            let offset = if side < 0.0 { road_left } else { road_right } + side_width;
            draw_facades(canvas, &cam, side, offset, rng);
        }
    }

    // Objects on the ground, far to near so that near ones occlude.
    let mut placed = Vec::new();
    // Distances are log-uniform between `far` and `near` (fractions of the nearest ground row's
    // scale). Thin things (poles, people, bicycles) stay within the range where they are a few
    // cells wide at the network's output stride 8, as in Cityscapes' 2048x1024 frames.
    let mut place = |rng: &mut SceneRng, x_world: f32, thing: Thing, far: f32, near: f32| {
        let t = cam.t_max() * far * (near / far).powf(rng.unit());
        placed.push(Placed { t, x_world, thing });
    };
    let lane = |rng: &mut SceneRng| rng.range(-road_left + 1.0, road_right - 1.0);
    let roadside = |rng: &mut SceneRng, side: f32, inset: f32| {
        let edge = if side < 0.0 { -road_left } else { road_right };
        edge + side * rng.range(inset, side_width - 0.3).max(inset)
    };
    let vehicles = if city { 2 + rng.below(5) } else { rng.below(3) };
    for _ in 0..vehicles {
        let thing = if rng.chance(0.8) { Thing::Car } else { Thing::Truck };
        let x = if city && rng.chance(0.4) {
            // Parked at the kerb.
            let side = if rng.chance(0.5) { -1.0 } else { 1.0 };
            side * (if side < 0.0 { road_left } else { road_right } - 1.1)
        } else {
            lane(rng)
        };
        place(rng, x, thing, 0.05, 0.7);
    }
    let people = if city { 1 + rng.below(6) } else { rng.below(2) };
    for _ in 0..people {
        let side = if rng.chance(0.5) { -1.0 } else { 1.0 };
        let thing = if rng.chance(0.75) { Thing::Person } else { Thing::Bicycle };
        let x = roadside(rng, side, 0.4);
        place(rng, x, thing, PEOPLE_FAR, 0.8);
    }
    let street_furniture = if city { 3 + rng.below(5) } else { 1 + rng.below(4) };
    for _ in 0..street_furniture {
        let side = if rng.chance(0.5) { -1.0 } else { 1.0 };
        let thing = match rng.below(if city { 3 } else { 2 }) {
            0 => Thing::Pole,
            1 => Thing::SignPole,
            _ => Thing::TrafficLight,
        };
        let x = roadside(rng, side, 0.3);
        place(rng, x, thing, THIN_FAR, 0.6);
    }
    let trees = if city { rng.below(4) } else { 4 + rng.below(8) };
    for _ in 0..trees {
        let side = if rng.chance(0.5) { -1.0 } else { 1.0 };
        let x = if city {
            roadside(rng, side, 0.5)
        } else {
            side * (if side < 0.0 { road_left } else { road_right } + side_width + rng.range(1.0, 12.0))
        };
        place(rng, x, Thing::Tree, 0.05, 0.5);
    }
    // Outliers lie on the road at short to middle range, where a driver must see them.
    for &kind in outliers {
        let x_world = lane(rng);
        placed.push(Placed { t: cam.t_max() * rng.range(0.12, 0.8), x_world, thing: Thing::Outlier(kind) });
    }
    placed.sort_by(|a, b| a.t.total_cmp(&b.t));
    for p in placed {
        draw_thing(canvas, &cam, &p, rng);
    }
    draw_shadows(canvas, &cam, rng);
}

fn draw_sky(canvas: &mut Canvas, cam: &Camera, rng: &mut SceneRng) {
    let overcast = rng.chance(0.35);
    let zenith = if overcast { rng.jitter([0.62, 0.64, 0.68], 0.12) } else { hsv(rng.range(0.53, 0.64), rng.range(0.3, 0.8), rng.range(0.6, 1.0)) };
    let low = rng.jitter([0.85, 0.85, 0.85], 0.12);
    let clouds = rng.range(0.0, 0.6);
    let seed = rng.next_u64() as u32;
    let horizon = cam.horizon;
    canvas.rect([0.0, 0.0, cam.width, horizon + 1.0], id::SKY, move |x, y| {
        let base = mix(low, zenith, (1.0 - y / horizon).clamp(0.0, 1.0));
        let cloud = (fbm(x, y * 2.0, 40.0, seed) - 0.5).max(0.0) * 2.0 * clouds;
        mix(base, [0.95, 0.95, 0.95], cloud)
    });
}

/// Far buildings along the horizon, behind everything else.
fn draw_skyline(canvas: &mut Canvas, cam: &Camera, rng: &mut SceneRng) {
    let mut x = 0.0;
    while x < cam.width {
        let bw = rng.range(0.04, 0.15) * cam.width;
        let top = cam.horizon - rng.range(0.02, 0.15) * cam.height;
        let colour = rng.jitter([0.55, 0.55, 0.58], 0.2);
        let seed = rng.next_u64() as u32;
        canvas.rect([x, top, x + bw, cam.horizon + 2.0], id::BUILDING, move |x, y| scale(colour, 0.85 + 0.3 * fbm(x, y, 6.0, seed)));
        x += bw;
    }
}

fn draw_hills(canvas: &mut Canvas, cam: &Camera, rng: &mut SceneRng) {
    let seed = rng.next_u64() as u32;
    let green = hsv(rng.range(0.2, 0.38), rng.range(0.3, 0.7), rng.range(0.2, 0.5));
    let height = rng.range(0.02, 0.12) * cam.height;
    let horizon = cam.horizon;
    canvas.paint(
        [0.0, horizon - height * 1.5, cam.width, horizon + 2.0],
        Some(id::VEGETATION),
        move |x, y| y > horizon - height * value_noise(x, 0.0, 30.0, seed) - height * 0.5 * value_noise(x, 0.0, 6.0, seed ^ 3),
        move |x, y, _| scale(green, 0.6 + 0.6 * fbm(x, y, 3.0, seed ^ 7)),
    );
}

fn draw_ground(canvas: &mut Canvas, cam: &Camera, city: bool, road: [f32; 2], side_width: f32, rng: &mut SceneRng) {
    let asphalt = rng.jitter([0.36, 0.36, 0.37], 0.1);
    let asphalt = scale(asphalt, rng.range(0.6, 1.4));
    let marking = if rng.chance(0.8) { [0.9, 0.9, 0.88] } else { [0.85, 0.7, 0.2] };
    let has_centre_line = rng.chance(0.8);
    let centre = rng.range(-0.5, 0.5) + (road[1] - road[0]) / 2.0;
    let dash = rng.range(2.0, 6.0);
    let pavement = if rng.chance(0.5) { rng.jitter([0.6, 0.58, 0.55], 0.12) } else { rng.any_colour() };
    let tile = rng.range(0.3, 0.8);
    let terrain = hsv(rng.range(0.08, 0.3), rng.range(0.3, 0.7), rng.range(0.3, 0.65));
    let seed = rng.next_u64() as u32;
    let focal = cam.width;
    let (horizon, vx) = (cam.horizon, cam.vx);
    let (left_edge, right_edge) = (-road[0], road[1]);
    let side = if city { id::SIDEWALK } else { id::TERRAIN };
    for y in (horizon.floor().max(0.0) as usize)..canvas.height {
        let py = y as f32 + 0.5;
        let t = (py - horizon) / CAMERA_HEIGHT;
        if t <= 0.0 {
            continue;
        }
        let z = focal / t;
        for x in 0..canvas.width {
            let px = x as f32 + 0.5;
            let xw = (px - vx) / t;
            let i = y * canvas.width + x;
            let texture = fbm(px, py, 4.0, seed);
            let (label, colour) = if xw >= left_edge && xw <= right_edge {
                let edge_line = (xw - left_edge < 0.15 || right_edge - xw < 0.15) && city;
                let centre_line = has_centre_line && (xw - centre).abs() < 0.08 && (z / focal * 40.0).rem_euclid(dash * 2.0) < dash;
                let c = if edge_line || centre_line { marking } else { scale(asphalt, 0.8 + 0.35 * texture) };
                (id::ROAD, c)
            } else if xw >= left_edge - side_width && xw <= right_edge + side_width || !city {
                let c = if city {
                    let (u, v) = (xw.rem_euclid(tile), (z / focal * 40.0).rem_euclid(tile));
                    let seam = u < 0.04 || v < 0.04;
                    let kerb = xw < left_edge && xw > left_edge - 0.25 || xw > right_edge && xw < right_edge + 0.25;
                    scale(pavement, if kerb { 1.15 } else if seam { 0.7 } else { 0.85 + 0.3 * texture })
                } else {
                    let far = value_noise(xw, z / focal * 40.0, 3.0, seed ^ 11);
                    scale(mix(terrain, [0.45, 0.38, 0.28], far * 0.6), 0.7 + 0.5 * texture)
                };
                (side, c)
            } else {
                // Beyond the sidewalk in the city: hidden by facades; ground for gaps between them.
                (id::TERRAIN, scale(terrain, 0.7 + 0.5 * texture))
            };
            canvas.rgb[i] = colour;
            canvas.labels[i] = label;
        }
    }
}

/// Building fronts along one side of the street, at lateral distance `offset` metres.
fn draw_facades(canvas: &mut Canvas, cam: &Camera, side: f32, offset: f32, rng: &mut SceneRng) {
    let focal = cam.width;
    // Segments along the street: depth ranges (metres) with their height and look.
    let mut z = rng.range(1.0, 6.0);
    let z_end = focal / (cam.t_max() * 0.02);
    let mut segments = Vec::new();
    while z < z_end {
        let length = rng.range(8.0, 30.0);
        let gap = rng.chance(0.15);
        let colour = if rng.chance(0.5) { rng.jitter([0.6, 0.55, 0.5], 0.2) } else { rng.any_colour() };
        segments.push((z, z + length, rng.range(6.0, 25.0), colour, gap, rng.range(1.0, 2.0), rng.next_u64() as u32));
        z += length;
    }
    let (horizon, vx) = (cam.horizon, cam.vx);
    let window = rng.jitter([0.25, 0.3, 0.35], 0.1);
    let lit = rng.chance(0.3);
    for x in 0..canvas.width {
        let px = x as f32 + 0.5;
        let dx = (px - vx) * side;
        if dx <= 0.0 {
            continue;
        }
        let t = dx / offset;
        let zc = focal / t;
        let Some(&(_, _, storeys, colour, gap, spacing, seed)) = segments.iter().find(|s| zc >= s.0 && zc < s.1) else { continue };
        if gap {
            continue;
        }
        let bottom = horizon + CAMERA_HEIGHT * t;
        let top = horizon - (storeys - CAMERA_HEIGHT) * t;
        for y in (top.max(0.0) as usize)..(bottom.min(cam.height) as usize) {
            let py = y as f32 + 0.5;
            let height = CAMERA_HEIGHT - (py - horizon) / t;
            let along = zc * spacing;
            let is_window = height > 1.5 && (height % 3.0) > 1.0 && (height % 3.0) < 2.2 && along.rem_euclid(3.0) < 1.3;
            let texture = fbm(px, py, 5.0, seed);
            let c = if is_window {
                if lit && grain(x / 4, (height / 3.0) as usize, seed) > 0.3 { [0.9, 0.8, 0.5] } else { scale(window, 0.8 + 0.4 * texture) }
            } else {
                scale(colour, 0.75 + 0.35 * texture)
            };
            let i = y * canvas.width + x;
            canvas.rgb[i] = c;
            canvas.labels[i] = id::BUILDING;
        }
    }
}

fn draw_thing(canvas: &mut Canvas, cam: &Camera, p: &Placed, rng: &mut SceneRng) {
    let t = p.t;
    let (x, y) = (cam.column(p.x_world, t), cam.ground_row(t));
    let seed = rng.next_u64() as u32;
    // Pixel minimums scale with the scene's width (they are set for 512 pixels).
    let px = cam.width / 512.0;
    let textured = move |c: [f32; 3]| move |px: f32, py: f32| scale(c, 0.8 + 0.35 * fbm(px, py, 3.0, seed));
    match p.thing {
        Thing::Car | Thing::Truck => {
            let truck = matches!(p.thing, Thing::Truck);
            let (width, height, length) = if truck { (2.5, 3.3, 8.0) } else { (1.8, 1.45, 4.4) };
            let body = if rng.chance(0.3) { rng.jitter([0.15, 0.15, 0.16], 0.1) } else { rng.any_colour() };
            let label = if truck { id::TRUCK } else { id::CAR };
            // Side face towards the camera's axis: between the rear face and the front end.
            let t_front = cam.width / (cam.width / t + length);
            let inner = if p.x_world > 0.0 { -width / 2.0 } else { width / 2.0 };
            let side = [
                [cam.column(p.x_world + inner, t), y],
                [cam.column(p.x_world + inner, t), y - height * t],
                [cam.column(p.x_world + inner, t_front), cam.ground_row(t_front) - height * t_front],
                [cam.column(p.x_world + inner, t_front), cam.ground_row(t_front)],
            ];
            canvas.polygon(&side, label, textured(scale(body, 0.7)));
            let (l, r) = (x - width / 2.0 * t, x + width / 2.0 * t);
            let top = y - height * t;
            canvas.rect([l, top + if truck { 0.0 } else { 0.35 * height * t }, r, y - 0.2 * t], label, textured(body));
            if truck {
                canvas.rect([l + 0.1 * t, top + 0.1 * t, r - 0.1 * t, top + 0.5 * t], label, textured(scale(body, 0.8)));
            } else {
                // Cabin with its rear window.
                let cabin = [[l + 0.2 * width * t, top + 0.35 * height * t], [l + 0.3 * width * t, top], [r - 0.3 * width * t, top], [r - 0.2 * width * t, top + 0.35 * height * t]];
                canvas.polygon(&cabin, label, textured(body));
                canvas.rect([l + 0.3 * width * t, top + 0.08 * height * t, r - 0.3 * width * t, top + 0.3 * height * t], label, textured([0.15, 0.18, 0.22]));
            }
            for lamp in [l + 0.1 * t, r - 0.35 * t] {
                canvas.rect([lamp, y - 0.8 * t, lamp + 0.25 * t, y - 0.65 * t], label, |_, _| [0.8, 0.1, 0.1]);
            }
            for wheel in [l, r - 0.3 * t] {
                canvas.rect([wheel, y - 0.35 * t, wheel + 0.3 * t, y], label, |_, _| [0.06, 0.06, 0.06]);
            }
        }
        Thing::Person => {
            let clothes = rng.any_colour();
            let legs = rng.any_colour();
            let skin = rng.jitter([0.75, 0.58, 0.45], 0.2);
            let h = rng.range(1.5, 1.9) * t;
            let w = 0.45 * h / 1.7;
            canvas.rect([x - w * 0.45, y - h * 0.48, x - w * 0.05, y], id::PERSON, textured(legs));
            canvas.rect([x + w * 0.05, y - h * 0.48, x + w * 0.45, y], id::PERSON, textured(legs));
            canvas.rect([x - w * 0.5, y - h * 0.82, x + w * 0.5, y - h * 0.45], id::PERSON, textured(clothes));
            canvas.rect([x - w * 0.7, y - h * 0.8, x - w * 0.5, y - h * 0.5], id::PERSON, textured(clothes));
            canvas.rect([x + w * 0.5, y - h * 0.8, x + w * 0.7, y - h * 0.5], id::PERSON, textured(clothes));
            canvas.ellipse([x, y - h * 0.9], [h * 0.065, h * 0.08], id::PERSON, textured(skin));
        }
        Thing::Bicycle => {
            let frame = rng.any_colour();
            let r = 0.34 * t;
            let gap = 1.05 * t;
            let (a, b) = ([x - gap / 2.0, y - r], [x + gap / 2.0, y - r]);
            let thick = (0.06 * t).max(MIN_BICYCLE_STROKE * px);
            // Wheels are labelled whole, spokes and the background between them included, as
            // Cityscapes' polygons label them.
            for c in [a, b] {
                canvas.paint([c[0] - r, c[1] - r, c[0] + r, c[1] + r], Some(id::BICYCLE), move |x, y| {
                    (x - c[0]).powi(2) + (y - c[1]).powi(2) <= r * r
                }, move |x, y, background| {
                    let (dx, dy) = (x - c[0], y - c[1]);
                    let d = (dx * dx + dy * dy).sqrt();
                    let spoke = (dy.atan2(dx) * 4.0 / std::f32::consts::PI).rem_euclid(1.0);
                    if d >= r - thick * 1.5 || d < thick {
                        [0.08, 0.08, 0.08]
                    } else if spoke < 0.08 {
                        [0.6, 0.6, 0.62]
                    } else {
                        background
                    }
                });
            }
            let seat = [x - gap * 0.1, y - r * 2.6];
            let bar = [x + gap * 0.3, y - r * 2.7];
            for (p0, p1) in [(a, seat), (seat, [x, y - r]), ([x, y - r], b), (seat, bar), (bar, b), ([x, y - r], bar), (a, [x, y - r])] {
                canvas.line(p0, p1, thick, id::BICYCLE, frame);
            }
        }
        Thing::Pole | Thing::SignPole | Thing::TrafficLight => {
            let metal = rng.jitter([0.45, 0.45, 0.47], 0.15);
            let height = rng.range(3.0, 8.0) * t;
            let half = (0.1 * t).max(MIN_POLE_WIDTH * px / 2.0);
            canvas.rect([x - half, y - height, x + half, y], id::POLE, textured(metal));
            let top = y - height;
            if matches!(p.thing, Thing::SignPole) {
                let s = (0.45 * t).max(MIN_SIGN_HALF * px);
                let colour = [[0.8, 0.1, 0.1], [0.1, 0.25, 0.7], [0.9, 0.8, 0.1], [0.9, 0.9, 0.9]][rng.below(4)];
                match rng.below(3) {
                    0 => canvas.ellipse([x, top], [s, s], id::TRAFFIC_SIGN, textured(colour)),
                    1 => canvas.polygon(&[[x - s, top + s * 0.8], [x + s, top + s * 0.8], [x, top - s]], id::TRAFFIC_SIGN, textured(colour)),
                    _ => canvas.rect([x - s, top - s * 0.7, x + s, top + s * 0.7], id::TRAFFIC_SIGN, textured(colour)),
                }
            } else if matches!(p.thing, Thing::TrafficLight) {
                let (bw, bh) = ((0.2 * t).max(MIN_LIGHT_HALF[0] * px), (0.55 * t).max(MIN_LIGHT_HALF[1] * px));
                canvas.rect([x - bw, top - bh, x + bw, top + bh], id::TRAFFIC_LIGHT, |_, _| [0.1, 0.1, 0.1]);
                let on = rng.below(3);
                for k in 0..3 {
                    let cy = top - bh * 0.66 + k as f32 * bh * 0.66;
                    let lamp = [[0.9, 0.15, 0.1], [0.95, 0.7, 0.1], [0.2, 0.9, 0.3]][k];
                    let c = if k == on { lamp } else { scale(lamp, 0.25) };
                    canvas.ellipse([x, cy], [bw * 0.7, bw * 0.7], id::TRAFFIC_LIGHT, move |_, _| c);
                }
            }
        }
        Thing::Tree => {
            let bark = rng.jitter([0.3, 0.22, 0.15], 0.08);
            let leaves = hsv(rng.range(0.06, 0.38), rng.range(0.35, 0.8), rng.range(0.2, 0.6));
            let height = rng.range(4.0, 10.0) * t;
            let half = (0.15 * t).max(0.7);
            canvas.rect([x - half, y - height * 0.6, x + half, y], id::VEGETATION, textured(bark));
            let crown = rng.range(1.2, 3.0) * t;
            let c = [x, y - height * 0.6 - crown * 0.6];
            canvas.paint([c[0] - crown * 1.4, c[1] - crown * 1.4, c[0] + crown * 1.4, c[1] + crown * 1.4], Some(id::VEGETATION), move |px, py| {
                let d = ((px - c[0]).powi(2) + (py - c[1]).powi(2)).sqrt() / crown;
                d < 0.8 + 0.5 * value_noise(px, py, crown * 0.3 + 1.0, seed)
            }, move |px, py, _| scale(leaves, 0.55 + 0.8 * fbm(px, py, 2.5, seed ^ 5)));
        }
        Thing::Outlier(kind) => {
            let size = rng.range(0.5, 1.5) * t;
            draw_outlier(canvas, kind, [x, y], size, rng);
        }
    }
}

/// Shadow bands across the ground: change brightness without changing labels.
fn draw_shadows(canvas: &mut Canvas, cam: &Camera, rng: &mut SceneRng) {
    for _ in 0..rng.below(3) {
        let y0 = rng.range(cam.horizon, cam.height);
        let y1 = y0 + rng.range(0.03, 0.2) * cam.height;
        let slope = rng.range(-0.5, 0.5);
        let dark = rng.range(0.45, 0.75);
        let horizon = cam.horizon;
        canvas.paint([0.0, horizon, cam.width, cam.height], None, move |x, y| {
            let yy = y - slope * x;
            yy >= y0 && yy < y1
        }, move |_, _, c| scale(c, dark));
    }
}
