//! The public anomaly benchmarks on disk: each folder layout the paper's loaders read, and their
//! label convention (after PIL's `convert('L')`: 0 inlier, 1 OoD, any other value ignored).

use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    RoadAnomaly,
    FishyscapesLostAndFound,
    FishyscapesStatic,
    SmiycAnomaly,
    SmiycObstacle,
    /// A folder written by `rpl scenes`.
    Synthetic,
}

impl serde::Serialize for DatasetKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl DatasetKind {
    pub const ALL: [Self; 6] = [
        Self::RoadAnomaly,
        Self::FishyscapesLostAndFound,
        Self::FishyscapesStatic,
        Self::SmiycAnomaly,
        Self::SmiycObstacle,
        Self::Synthetic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::RoadAnomaly => "road-anomaly",
            Self::FishyscapesLostAndFound => "fs-lost-and-found",
            Self::FishyscapesStatic => "fs-static",
            Self::SmiycAnomaly => "smiyc-anomaly",
            Self::SmiycObstacle => "smiyc-obstacle",
            Self::Synthetic => "synthetic",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The folder tree this kind expects (for errors and the README).
    pub fn layout(self) -> &'static str {
        match self {
            Self::RoadAnomaly => "DIR/original/NAME.jpg and DIR/labels/NAME.png",
            Self::FishyscapesLostAndFound => "DIR/LostAndFound/original/NAME.png and DIR/LostAndFound/labels/NAME.png",
            Self::FishyscapesStatic => "DIR/Static/original/NAME.png and DIR/Static/labels/NAME.png",
            Self::SmiycAnomaly => {
                "DIR/dataset_AnomalyTrack/labels_masks/validation_N_labels_semantic.png and DIR/dataset_AnomalyTrack/images/validationN.jpg"
            }
            Self::SmiycObstacle => {
                "DIR/dataset_ObstacleTrack/labels_masks/validation_N_labels_semantic.png and DIR/dataset_ObstacleTrack/images/validation_N.webp"
            }
            Self::Synthetic => "DIR/NAME.png, DIR/NAME_ood.png and optionally DIR/NAME_labels.png (as `rpl scenes` writes them)",
        }
    }

    /// The sub-folder the paper's loader appends to the dataset root, if any.
    fn subfolder(self) -> Option<&'static str> {
        match self {
            Self::FishyscapesLostAndFound => Some("LostAndFound"),
            Self::FishyscapesStatic => Some("Static"),
            Self::SmiycAnomaly => Some("dataset_AnomalyTrack"),
            Self::SmiycObstacle => Some("dataset_ObstacleTrack"),
            Self::RoadAnomaly | Self::Synthetic => None,
        }
    }
}

#[derive(Debug, Error)]
pub enum DatasetError {
    #[error("{kind}: no folder {path} (expected {layout})")]
    MissingFolder { kind: &'static str, path: PathBuf, layout: &'static str },
    #[error("{kind}: {path} holds no image of this layout (expected {layout}){first_problem}")]
    Empty { kind: &'static str, path: PathBuf, layout: &'static str, first_problem: String },
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: cannot decode the label image ({reason})")]
    LabelDecode { path: PathBuf, reason: String },
    #[error("{path}: 16-bit label images are not a benchmark convention (expected 8-bit)")]
    Label16Bit { path: PathBuf },
    #[error("{path}: the label is {label_width}x{label_height}, the image (or its saved score map) {width}x{height}")]
    SizeMismatch { path: PathBuf, label_width: usize, label_height: usize, width: usize, height: usize },
}

/// One image of a dataset with its ground truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The image's file stem: names its saved score map (`NAME.npy`).
    pub name: String,
    pub image: PathBuf,
    /// OoD ground truth (0 inlier, 1 OoD, anything else ignored).
    pub ood_label: PathBuf,
    /// Train-id labels for inlier mIoU, where the dataset has them.
    pub class_label: Option<PathBuf>,
}

/// A file left out of the evaluation, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    pub file: PathBuf,
    pub reason: String,
}

/// What a dataset folder holds: its samples in the loader's (sorted) order, and the files that
/// cannot be evaluated.
#[derive(Debug, Clone)]
pub struct Listing {
    pub kind: DatasetKind,
    pub root: PathBuf,
    pub samples: Vec<Sample>,
    pub skipped: Vec<Skipped>,
}

/// Lists a dataset. `dir` may be the dataset's root (as the paper's configs name it) or the
/// split's own folder (`.../LostAndFound`, `.../dataset_AnomalyTrack`).
pub fn list_dataset(kind: DatasetKind, dir: &Path) -> Result<Listing, DatasetError> {
    let missing = |path: PathBuf| DatasetError::MissingFolder { kind: kind.name(), path, layout: kind.layout() };
    if !dir.is_dir() {
        return Err(missing(dir.to_path_buf()));
    }
    let root = match kind.subfolder() {
        Some(sub) if dir.join(sub).is_dir() => dir.join(sub),
        _ => dir.to_path_buf(),
    };
    let (samples, skipped) = match kind {
        DatasetKind::RoadAnomaly => list_original_labels(&root, "jpg", &missing)?,
        DatasetKind::FishyscapesLostAndFound | DatasetKind::FishyscapesStatic => {
            if !root.join("original").is_dir() {
                // Name the folder the paper's loader wants, under the root given.
                return Err(missing(dir.join(kind.subfolder().unwrap_or_default()).join("original")));
            }
            list_original_labels(&root, "png", &missing)?
        }
        DatasetKind::SmiycAnomaly | DatasetKind::SmiycObstacle => list_smiyc(kind, &root, dir, &missing)?,
        DatasetKind::Synthetic => list_synthetic(&root)?,
    };
    if samples.is_empty() {
        let first_problem = skipped.first().map(|s| format!("; {}: {}", s.file.display(), s.reason)).unwrap_or_default();
        return Err(DatasetError::Empty { kind: kind.name(), path: root, layout: kind.layout(), first_problem });
    }
    Ok(Listing { kind, root, samples, skipped })
}

fn sorted_files(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let read = |e: std::io::Error| DatasetError::Read { path: dir.to_path_buf(), reason: e.to_string() };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn has_extension(path: &Path, extension: &str) -> bool {
    path.extension().is_some_and(|e| e == extension)
}

fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Road Anomaly and Fishyscapes: `original/NAME.EXT` with `labels/NAME.png`.
fn list_original_labels(
    root: &Path,
    extension: &str,
    missing: &dyn Fn(PathBuf) -> DatasetError,
) -> Result<(Vec<Sample>, Vec<Skipped>), DatasetError> {
    for folder in ["original", "labels"] {
        if !root.join(folder).is_dir() {
            return Err(missing(root.join(folder)));
        }
    }
    let (mut samples, mut skipped) = (Vec::new(), Vec::new());
    for image in sorted_files(&root.join("original"))?.into_iter().filter(|p| has_extension(p, extension)) {
        let name = stem(&image);
        let ood_label = root.join("labels").join(format!("{name}.png"));
        if ood_label.is_file() {
            samples.push(Sample { name, image, ood_label, class_label: None });
        } else {
            skipped.push(Skipped { reason: format!("no label {}", ood_label.display()), file: image });
        }
    }
    Ok((samples, skipped))
}

/// Segment-Me-If-You-Can: the labels decide the images, as in the paper's loader: the digits of
/// `labels_masks/validation_N_labels_semantic.png` name `images/validationN.jpg` (AnomalyTrack)
/// or `images/validation_N.webp` (ObstacleTrack); colour visualisations are skipped.
fn list_smiyc(
    kind: DatasetKind,
    root: &Path,
    given: &Path,
    missing: &dyn Fn(PathBuf) -> DatasetError,
) -> Result<(Vec<Sample>, Vec<Skipped>), DatasetError> {
    let labels = root.join("labels_masks");
    if !labels.is_dir() {
        let expected = if root == given { given.join(kind.subfolder().unwrap_or_default()).join("labels_masks") } else { labels };
        return Err(missing(expected));
    }
    let (prefix, extension) = if kind == DatasetKind::SmiycAnomaly { ("validation", "jpg") } else { ("validation_", "webp") };
    let (mut samples, mut skipped) = (Vec::new(), Vec::new());
    for label in sorted_files(&labels)? {
        let file_name = label.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if file_name.contains("color") || !has_extension(&label, "png") {
            continue;
        }
        let digits: String = file_name.chars().filter(char::is_ascii_digit).collect();
        let image = root.join("images").join(format!("{prefix}{digits}.{extension}"));
        if image.is_file() {
            samples.push(Sample { name: stem(&image), image, ood_label: label, class_label: None });
        } else {
            skipped.push(Skipped { reason: format!("no image {}", image.display()), file: label });
        }
    }
    // The loader keeps the directory's order; any order pools the same, so list by image name.
    samples.sort_by(|a, b| a.image.cmp(&b.image));
    Ok((samples, skipped))
}

/// `rpl scenes` output: `NAME.png`, `NAME_ood.png`, `NAME_labels.png`.
fn list_synthetic(root: &Path) -> Result<(Vec<Sample>, Vec<Skipped>), DatasetError> {
    let (mut samples, mut skipped) = (Vec::new(), Vec::new());
    for image in sorted_files(root)?.into_iter().filter(|p| has_extension(p, "png")) {
        let name = stem(&image);
        if name.ends_with("_ood") || name.ends_with("_labels") {
            continue;
        }
        let ood_label = root.join(format!("{name}_ood.png"));
        let class_label = Some(root.join(format!("{name}_labels.png"))).filter(|p| p.is_file());
        if ood_label.is_file() {
            samples.push(Sample { name, image, ood_label, class_label });
        } else {
            skipped.push(Skipped { reason: format!("no label {}", ood_label.display()), file: image });
        }
    }
    Ok((samples, skipped))
}

/// A label image as the paper reads it, PIL's `convert('L')`: grey levels as they are, colour
/// (and palette) pixels to ITU-R 601 luma with PIL's rounding. Returns `(width, height, values)`.
pub fn decode_label(path: &Path, bytes: &[u8]) -> Result<(usize, usize, Vec<u8>), DatasetError> {
    let image = image::load_from_memory(bytes)
        .map_err(|e| DatasetError::LabelDecode { path: path.to_path_buf(), reason: e.to_string() })?;
    let (width, height) = (image.width() as usize, image.height() as usize);
    let values = match image {
        image::DynamicImage::ImageLuma8(grey) => grey.into_raw(),
        image::DynamicImage::ImageLumaA8(grey) => grey.pixels().map(|p| p.0[0]).collect(),
        image::DynamicImage::ImageRgb8(rgb) => rgb.pixels().map(|p| pil_luma(p.0)).collect(),
        image::DynamicImage::ImageRgba8(rgba) => rgba.pixels().map(|p| pil_luma([p.0[0], p.0[1], p.0[2]])).collect(),
        _ => return Err(DatasetError::Label16Bit { path: path.to_path_buf() }),
    };
    Ok((width, height, values))
}

/// PIL's RGB to L: `(R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16`.
fn pil_luma([r, g, b]: [u8; 3]) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

/// Reads a label image (OoD or class ids) and checks it against the image's size.
pub fn read_label(path: &Path, width: usize, height: usize) -> Result<Vec<u8>, DatasetError> {
    let bytes = std::fs::read(path).map_err(|e| DatasetError::Read { path: path.to_path_buf(), reason: e.to_string() })?;
    let (label_width, label_height, values) = decode_label(path, &bytes)?;
    if (label_width, label_height) != (width, height) {
        return Err(DatasetError::SizeMismatch { path: path.to_path_buf(), label_width, label_height, width, height });
    }
    Ok(values)
}
