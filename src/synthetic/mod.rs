//! Procedural street scenes with Cityscapes labels, and outliers pasted into them: the data the
//! bundled demo model is trained and evaluated on. Deterministic: a seed gives the same bytes.

mod canvas;
mod outliers;
mod paste;
mod street;

pub use canvas::SceneRng;
pub use outliers::{LABEL_OUTLIER, OutlierKind, OutlierSource, outlier_source};
pub use paste::{Cutout, CutoutError, PastedObject, Pasted, PlacedOutlier, paste_outliers};

use canvas::Canvas;

/// Cityscapes train ids of the classes the generator draws.
pub mod train_id {
    pub const ROAD: u8 = 0;
    pub const SIDEWALK: u8 = 1;
    pub const BUILDING: u8 = 2;
    pub const POLE: u8 = 5;
    pub const TRAFFIC_LIGHT: u8 = 6;
    pub const TRAFFIC_SIGN: u8 = 7;
    pub const VEGETATION: u8 = 8;
    pub const TERRAIN: u8 = 9;
    pub const SKY: u8 = 10;
    pub const PERSON: u8 = 11;
    pub const CAR: u8 = 13;
    pub const TRUCK: u8 = 14;
    pub const BICYCLE: u8 = 18;
}

/// Seeds of training scenes are `TRAINING_SEED_BASE + i` (below 2^40); held-out evaluation
/// scenes start at [`HELD_OUT_SEED_BASE`], so that no evaluation scene is ever trained on.
pub const TRAINING_SEED_BASE: u64 = 0;
pub const HELD_OUT_SEED_BASE: u64 = 1 << 40;

/// Label of pixels that belong to no class and are not outliers.
pub const LABEL_VOID: u8 = 255;

/// Where the street is: CoroCL is about robustness to context, so there are two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Context {
    City,
    Countryside,
}

/// Which outliers a scene may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutlierSet {
    /// Inlier scenes only (stage 1 trains the segmentation on these).
    None,
    /// The kinds training may see.
    Training,
    /// The kinds training never sees.
    HeldOut,
    /// Every kind (the page's sample scenes).
    Any,
}

impl OutlierSet {
    pub const ALL: [Self; 4] = [Self::None, Self::Training, Self::HeldOut, Self::Any];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Training => "training",
            Self::HeldOut => "held-out",
            Self::Any => "any",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn kinds(self) -> &'static [OutlierKind] {
        match self {
            Self::None => &[],
            Self::Training => &OutlierKind::TRAINING,
            Self::HeldOut => &OutlierKind::HELD_OUT,
            Self::Any => &OutlierKind::ALL,
        }
    }
}

impl serde::Serialize for OutlierSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// One scene's entry in the `index.json` of a folder written by `rpl scenes` (the page's sample
/// gallery reads it): its files, context and outlier kinds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SceneFiles {
    pub name: String,
    pub image: String,
    pub labels: String,
    pub ood: String,
    pub context: Context,
    pub outliers: Vec<&'static str>,
}

impl SceneFiles {
    pub fn new(name: &str, scene: &Scene) -> Self {
        Self {
            name: name.to_string(),
            image: format!("{name}.png"),
            labels: format!("{name}_labels.png"),
            ood: format!("{name}_ood.png"),
            context: scene.context,
            outliers: scene.outliers.iter().map(|k| k.name()).collect(),
        }
    }
}

/// One generated scene.
#[derive(Debug, Clone)]
pub struct Scene {
    pub width: usize,
    pub height: usize,
    /// Interleaved 8-bit RGB.
    pub rgb8: Vec<u8>,
    /// Cityscapes train ids, [`LABEL_OUTLIER`] on outliers, [`LABEL_VOID`] nowhere yet.
    pub labels: Vec<u8>,
    pub context: Context,
    pub outliers: Vec<OutlierKind>,
}

impl Scene {
    /// The OoD mask of the public benchmarks: 1 on outliers, 0 on inliers, 255 ignored.
    pub fn ood_mask(&self) -> Vec<u8> {
        self.labels
            .iter()
            .map(|&l| match l {
                LABEL_OUTLIER => 1,
                LABEL_VOID => 255,
                _ => 0,
            })
            .collect()
    }
}

/// The scene of `seed`: context, layout, lighting and outliers all follow from it.
pub fn generate_scene(seed: u64, width: usize, height: usize, outliers: OutlierSet) -> Scene {
    let mut rng = SceneRng::new(seed);
    let context = if rng.chance(0.6) { Context::City } else { Context::Countryside };
    let kinds = outliers.kinds();
    let chosen: Vec<OutlierKind> = if kinds.is_empty() {
        Vec::new()
    } else {
        (0..1 + rng.below(3)).map(|_| kinds[rng.below(kinds.len())]).collect()
    };
    let mut canvas = Canvas::new(width, height, LABEL_VOID);
    let mut layout = rng.fork();
    street::draw_street(&mut canvas, context, &chosen, &mut layout);
    // Lighting: exposure and white balance per scene, then sensor noise.
    let exposure = rng.range(0.55, 1.3);
    let tint = [rng.range(0.85, 1.15), rng.range(0.9, 1.1), rng.range(0.85, 1.15)];
    let noise = rng.range(0.01, 0.05);
    let rgb8 = canvas.to_rgb8(tint.map(|c| c * exposure), noise, rng.next_u64() as u32);
    Scene { width, height, rgb8, labels: canvas.labels, context, outliers: chosen }
}
