//! `rpl`: the command line. Thin: parses arguments and calls the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use rpl_web::backend::BackendKind;
use rpl_web::inference::PredictOptions;
use rpl_web::preprocess::RgbImage;
use rpl_web::scoring::ScoreMode;
use rpl_web::weights::safetensors::{StorageType, write_safetensors};
use rpl_web::weights::{load_network, open_checkpoint};
use rpl_web::{npy, predict, visualize};

#[derive(Parser)]
#[command(name = "rpl", version, about = "RPL anomaly segmentation (Residual Pattern Learning, ICCV 2023)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a PyTorch checkpoint (.pth) to safetensors, the format the browser loads.
    Convert {
        input: PathBuf,
        output: PathBuf,
        /// Store float16 (half the size).
        #[arg(long)]
        f16: bool,
    },
    /// Segment images and score their anomalies; writes NAME_classes.png, NAME_score.npy and
    /// NAME_overlay.png per image into --out.
    Infer {
        /// Checkpoint: .pth or .safetensors, any RPL width.
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// ndarray (CPU) or wgpu (GPU).
        #[arg(long, default_value = "ndarray", value_parser = parse_backend)]
        backend: BackendKind,
        /// energy (the paper's), entropy, or the baselines max-softmax and max-logit.
        #[arg(long, default_value = "energy", value_parser = parse_score)]
        score: ScoreMode,
        /// Also write NAME_out1.npy and NAME_out2.npy (float32, classes x H x W).
        #[arg(long)]
        save_logits: bool,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
}

fn parse_backend(name: &str) -> Result<BackendKind, String> {
    BackendKind::from_name(name).ok_or_else(|| format!("unknown backend `{name}` (ndarray or wgpu)"))
}

fn parse_score(name: &str) -> Result<ScoreMode, String> {
    let names: Vec<&str> = ScoreMode::ALL.iter().map(|m| m.name()).collect();
    ScoreMode::from_name(name).ok_or_else(|| format!("unknown score `{name}` (one of {})", names.join(", ")))
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Convert { input, output, f16 } => convert(&input, &output, f16),
        Command::Infer { model, out, backend, score, save_logits, images } => {
            infer(&model, &out, backend, score, save_logits, &images)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn convert(input: &Path, output: &Path, f16: bool) -> Result<(), String> {
    let source = open_checkpoint(input).map_err(|e| e.to_string())?;
    let storage = if f16 { StorageType::F16 } else { StorageType::F32 };
    let device = BackendKind::Ndarray.device().map_err(|e| e.to_string())?;
    let config = write_safetensors(source.as_ref(), storage, output, &device).map_err(|e| e.to_string())?;
    let size = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    println!("wrote {} ({} RPL network, {:.1} MB)", output.display(), config.describe(), size as f64 / 1e6);
    Ok(())
}

fn infer(model: &Path, out: &Path, backend: BackendKind, mode: ScoreMode, save_logits: bool, images: &[PathBuf]) -> Result<(), String> {
    let device = backend.device().map_err(|e| e.to_string())?;
    let source = open_checkpoint(model).map_err(|e| e.to_string())?;
    let network = load_network(source.as_ref(), &device).map_err(|e| e.to_string())?;
    drop(source);
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    println!("{}: {} RPL network on {}", model.display(), network.config.describe(), backend.name());

    let mut failed = 0;
    for path in images {
        let started = Instant::now();
        match infer_one(&network, path, out, mode, save_logits, &device) {
            Ok((w, h)) => println!("{}: {w}x{h}, {} ms", path.display(), started.elapsed().as_millis()),
            Err(message) => {
                eprintln!("error: {}: {message}", path.display());
                failed += 1;
            }
        }
    }
    if failed > 0 { Err(format!("{failed} of {} images failed", images.len())) } else { Ok(()) }
}

fn infer_one(
    network: &rpl_web::RplNetwork,
    path: &Path,
    out: &Path,
    mode: ScoreMode,
    save_logits: bool,
    device: &burn::tensor::Device,
) -> Result<(usize, usize), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let image = RgbImage::decode(&path.display().to_string(), &bytes).map_err(|e| e.to_string())?;
    let options = PredictOptions { mode, keep_logits: save_logits, ..PredictOptions::default() };
    let prediction = predict(network, &image, options, device).map_err(|e| e.to_string())?;
    let (w, h) = (prediction.width, prediction.height);
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
    let file = |suffix: &str| out.join(format!("{stem}_{suffix}"));

    save_png(&file("classes.png"), w, h, image::ExtendedColorType::L8, &prediction.classes)?;
    let overlay = visualize::score_overlay(&image.pixels, &prediction.score, 0.5);
    save_png(&file("overlay.png"), w, h, image::ExtendedColorType::Rgb8, &overlay)?;
    save_npy(&file("score.npy"), &[h, w], &prediction.score)?;
    if let Some([out1, out2]) = &prediction.logits {
        let classes = out1.len() / (w * h);
        save_npy(&file("out1.npy"), &[classes, h, w], out1)?;
        save_npy(&file("out2.npy"), &[classes, h, w], out2)?;
    }
    Ok((w, h))
}

fn save_png(path: &Path, w: usize, h: usize, colour: image::ExtendedColorType, data: &[u8]) -> Result<(), String> {
    image::save_buffer_with_format(path, data, w as u32, h as u32, colour, image::ImageFormat::Png)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn save_npy(path: &Path, shape: &[usize], values: &[f32]) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    npy::write_f32(std::io::BufWriter::new(file), shape, values).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
