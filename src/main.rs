//! `rpl`: the command line. Thin: parses arguments and calls the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use rpl_web::backend::{BackendKind, Precision};
use rpl_web::model::RplConfig;
use rpl_web::model::convolution::{GpuConvolution, gpu_convolution, set_gpu_convolution};
use rpl_web::inference::PredictOptions;
use rpl_web::preprocess::RgbImage;
use rpl_web::scoring::ScoreMode;
use rpl_web::weights::safetensors::{StorageType, write_safetensors};
use rpl_web::weights::{load_network, open_checkpoint};
use rpl_web::datasets::{DatasetKind, list_dataset};
use rpl_web::evaluation::{
    DatasetOptions, DatasetReport, HeldOutSet, ScoreSource, SyntheticReport, evaluate_dataset, evaluate_synthetic, nearest_mean_colour_miou,
};
use rpl_web::metrics::OodMetrics;
use rpl_web::synthetic::OutlierSet;
use rpl_web::training::{StepReport, TrainConfig, save_network};
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
        /// flex (CPU), ndarray (CPU, slower) or wgpu (GPU).
        #[arg(long, default_value = "flex", value_parser = parse_backend)]
        backend: BackendKind,
        /// f32, or f16 (wgpu on an adapter with shader-f16; outputs within about 1 %).
        #[arg(long, default_value = "f32", value_parser = parse_precision)]
        dtype: Precision,
        /// energy (the paper's), entropy, or the baselines max-softmax and max-logit.
        #[arg(long, default_value = "energy", value_parser = parse_score)]
        score: ScoreMode,
        /// Also write NAME_out1.npy and NAME_out2.npy (float32, classes x H x W).
        #[arg(long)]
        save_logits: bool,
        /// Larger images are shrunk to this longer side first (outputs at that size); 0 keeps
        /// every image's own size, however much memory that takes.
        #[arg(long, default_value_t = 2048)]
        max_side: usize,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Train the demo model from scratch on generated scenes (resumes from --out's checkpoints).
    Train {
        /// Run folder: checkpoints, stage outputs and the log.
        #[arg(long)]
        out: PathBuf,
        /// Also write the trained model here (safetensors, float16).
        #[arg(long)]
        export: Option<PathBuf>,
        #[arg(long, default_value_t = TrainConfig::default().stage1_steps)]
        stage1_steps: usize,
        /// Stage 1's closing steps on larger crops (512x256 scenes cut to 256x256, two per step).
        #[arg(long, default_value_t = TrainConfig::default().context_steps)]
        context_steps: usize,
        #[arg(long, default_value_t = TrainConfig::default().stage2_steps)]
        stage2_steps: usize,
        #[arg(long, default_value_t = TrainConfig::default().seed)]
        seed: u64,
        /// Scenes per step.
        #[arg(long, default_value_t = TrainConfig::default().batch)]
        batch: usize,
        /// Training crop, WIDTHxHEIGHT, cut from 512x256 scenes (512x256: whole scenes).
        #[arg(long, default_value = "256x128", value_parser = parse_size)]
        crop: [usize; 2],
        /// flex (CPU, the fastest here) or wgpu (GPU).
        #[arg(long, default_value = "flex", value_parser = parse_backend)]
        backend: BackendKind,
    },
    /// Evaluate on a benchmark folder (AUROC / AP / FPR95 pooled over the dataset as in the
    /// paper, and per image) or on the generated held-out scenes (also inlier mIoU of both heads).
    Eval {
        /// road-anomaly, fs-lost-and-found, fs-static, smiyc-anomaly, smiyc-obstacle or synthetic.
        #[arg(long, default_value = "synthetic", value_parser = parse_dataset)]
        dataset: DatasetKind,
        /// The dataset's folder (see the README for each tree). For synthetic: a folder written
        /// by `rpl scenes`; without one, the generated held-out set.
        dir: Option<PathBuf>,
        /// Checkpoint: .pth or .safetensors, any RPL width.
        #[arg(long, required_unless_present = "scores", conflicts_with = "scores")]
        model: Option<PathBuf>,
        /// Evaluate score maps saved by --save-scores (NAME.npy) instead of running a model.
        #[arg(long)]
        scores: Option<PathBuf>,
        /// Write each image's RPL score map here as NAME.npy (float32, H x W).
        #[arg(long, requires = "model")]
        save_scores: Option<PathBuf>,
        /// Evaluate the first N images only.
        #[arg(long)]
        limit: Option<usize>,
        /// energy (the paper's), entropy, or the baselines max-softmax and max-logit.
        #[arg(long, default_value = "energy", value_parser = parse_score)]
        score: ScoreMode,
        /// Generated held-out set: number of scenes.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Generated held-out set: outlier kinds, held-out (never trained on), training, or any.
        #[arg(long, default_value = "held-out", value_parser = parse_outliers)]
        outliers: OutlierSet,
        #[arg(long, default_value = "flex", value_parser = parse_backend)]
        backend: BackendKind,
        /// Also write the figures as JSON (per dataset and per image).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Time the network with random weights: first result, steady state (median of --reps),
    /// each stage, effective TFLOP/s (released width) and memory, per size.
    Bench {
        /// Width divisor: 1 is the released model, 8 the demo model's width.
        #[arg(long, default_value_t = 1)]
        width_divisor: usize,
        /// Sizes, WIDTHxHEIGHT (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "512x256,1024x512,2048x1024", value_parser = parse_size)]
        sizes: Vec<[usize; 2]>,
        #[arg(long, default_value = "wgpu", value_parser = parse_backend)]
        backend: BackendKind,
        /// f32, or f16 (wgpu on an adapter with shader-f16).
        #[arg(long, default_value = "f32", value_parser = parse_precision)]
        dtype: Precision,
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// On wgpu: `direct` (burn's convolution kernel) or `products` (im2col matrix products).
        #[arg(long, default_value = "direct", value_parser = parse_gpu_convolution)]
        gpu_convolution: GpuConvolution,
        /// Also write the figures as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Write generated scenes: NAME.png, NAME_labels.png (train ids, 254 outliers) and
    /// NAME_ood.png (0 inlier, 1 OoD, 255 void) per scene, from the held-out seed range.
    Scenes {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 8)]
        count: usize,
        /// Index of the first held-out scene.
        #[arg(long, default_value_t = 0)]
        first: usize,
        /// Outlier kinds: held-out (never trained on), training, any, or none.
        #[arg(long, default_value = "held-out", value_parser = parse_outliers)]
        outliers: OutlierSet,
        /// Scene size, WIDTHxHEIGHT.
        #[arg(long, default_value = "512x256", value_parser = parse_size)]
        size: [usize; 2],
    },
}

fn parse_outliers(name: &str) -> Result<OutlierSet, String> {
    match name {
        "none" => Ok(OutlierSet::None),
        "training" => Ok(OutlierSet::Training),
        "held-out" => Ok(OutlierSet::HeldOut),
        "any" => Ok(OutlierSet::Any),
        _ => Err(format!("unknown outlier set `{name}` (none, training, held-out or any)")),
    }
}

/// `WIDTHxHEIGHT` to `[height, width]`.
fn parse_size(text: &str) -> Result<[usize; 2], String> {
    let bad = || format!("`{text}` is not a size like 512x256");
    let (w, h) = text.split_once('x').ok_or_else(bad)?;
    let (w, h): (usize, usize) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    if w < 16 || h < 16 { Err(format!("{text}: scenes need at least 16x16 pixels")) } else { Ok([h, w]) }
}

fn parse_dataset(name: &str) -> Result<DatasetKind, String> {
    let names: Vec<&str> = DatasetKind::ALL.iter().map(|k| k.name()).collect();
    DatasetKind::from_name(name).ok_or_else(|| format!("unknown dataset `{name}` (one of {})", names.join(", ")))
}

fn parse_backend(name: &str) -> Result<BackendKind, String> {
    BackendKind::from_name(name).ok_or_else(|| format!("unknown backend `{name}` (ndarray, flex or wgpu)"))
}

fn parse_precision(name: &str) -> Result<Precision, String> {
    Precision::from_name(name).ok_or_else(|| format!("unknown dtype `{name}` (f32 or f16)"))
}

fn parse_gpu_convolution(name: &str) -> Result<GpuConvolution, String> {
    let choices = [GpuConvolution::Direct, GpuConvolution::MatrixProducts];
    choices.into_iter().find(|c| c.name() == name).ok_or_else(|| format!("unknown GPU convolution `{name}` (direct or products)"))
}

fn parse_score(name: &str) -> Result<ScoreMode, String> {
    let names: Vec<&str> = ScoreMode::ALL.iter().map(|m| m.name()).collect();
    ScoreMode::from_name(name).ok_or_else(|| format!("unknown score `{name}` (one of {})", names.join(", ")))
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Convert { input, output, f16 } => convert(&input, &output, f16),
        Command::Infer { model, out, backend, dtype, score, save_logits, max_side, images } => {
            let options = InferOptions { mode: score, save_logits, max_side };
            infer(&model, &out, backend, dtype, options, &images)
        }
        Command::Train { out, export, stage1_steps, context_steps, stage2_steps, seed, batch, crop, backend } => {
            if std::env::var_os("BURN_DEVICE").is_none() {
                // burn restores optimizer state on its default device (the GPU when compiled in)
                // before moving it to the parameters' own: keep that on the training backend.
                // SAFETY: no other thread exists yet.
                unsafe { std::env::set_var("BURN_DEVICE", backend.name()) };
            }
            let config = TrainConfig { stage1_steps, context_steps, stage2_steps, seed, batch, crop, ..TrainConfig::default() };
            if crop[0] > config.scene[0] || crop[1] > config.scene[1] || batch == 0 {
                Err(format!("crops are cut from {}x{} scenes and a batch holds at least one", config.scene[1], config.scene[0]))
            } else {
                train(&config, &out, export.as_deref(), backend)
            }
        }
        Command::Eval { dataset, dir, model, scores, save_scores, limit, score, count, outliers, backend, json } => match dir {
            Some(dir) => {
                let output = EvalOutput { json: json.as_deref(), save_scores: save_scores.as_deref() };
                eval_dataset(dataset, &dir, model.as_deref(), scores.as_deref(), limit, score, backend, output)
            }
            None if dataset != DatasetKind::Synthetic => {
                Err(format!("{} needs its folder: rpl eval --dataset {} DIR (expected {})", dataset.name(), dataset.name(), dataset.layout()))
            }
            None => match (model, scores.is_some() || save_scores.is_some()) {
                (Some(model), false) => eval_synthetic(&model, limit.map_or(count, |l| l.min(count)), outliers, backend, json.as_deref()),
                _ => Err("--scores and --save-scores need a folder of images: write the scenes with `rpl scenes --out DIR`, then run `rpl eval --dataset synthetic DIR`".into()),
            },
        },
        Command::Bench { width_divisor, sizes, backend, dtype, reps, gpu_convolution, json } => {
            if gpu_convolution != GpuConvolution::Direct && backend != BackendKind::Wgpu {
                Err(format!("--gpu-convolution {} applies to --backend wgpu only", gpu_convolution.name()))
            } else {
                set_gpu_convolution(gpu_convolution);
                bench(width_divisor, &sizes, backend, dtype, reps, json.as_deref())
            }
        }
        Command::Scenes { out, count, first, outliers, size } => scenes(&out, count, first, outliers, size),
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
    let device = BackendKind::Flex.device().map_err(|e| e.to_string())?;
    let config = write_safetensors(source.as_ref(), storage, output, &device).map_err(|e| e.to_string())?;
    let size = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    println!("wrote {} ({} RPL network, {:.1} MB)", output.display(), config.describe(), size as f64 / 1e6);
    Ok(())
}

/// The checkpoint at `model` on `device`, its BatchNorms folded for inference; the file's bytes
/// are released once the weights are on the device.
fn inference_network(model: &Path, device: &burn::tensor::Device) -> Result<rpl_web::RplNetwork, String> {
    let source = open_checkpoint(model).map_err(|e| e.to_string())?;
    Ok(load_network(source.as_ref(), device).map_err(|e| e.to_string())?.fold_batch_norms())
}

struct InferOptions {
    mode: ScoreMode,
    save_logits: bool,
    max_side: usize,
}

fn infer(model: &Path, out: &Path, backend: BackendKind, dtype: Precision, options: InferOptions, images: &[PathBuf]) -> Result<(), String> {
    let device = backend.device_with(dtype).map_err(|e| e.to_string())?;
    let network = inference_network(model, &device)?;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    println!("{}: {} RPL network on {}, {}", model.display(), network.config.describe(), backend.name(), dtype.name());

    let mut failed = 0;
    let started_all = Instant::now();
    for path in images {
        let started = Instant::now();
        match infer_one(&network, path, out, &options, &device) {
            Ok((w, h)) => println!("{}: {w}x{h}, {} ms", path.display(), started.elapsed().as_millis()),
            Err(message) => {
                eprintln!("error: {}: {message}", path.display());
                failed += 1;
            }
        }
    }
    let peak = rpl_web::benchmark::peak_resident_bytes().map(|b| format!(", peak memory {} MB", b >> 20)).unwrap_or_default();
    println!("{} images in {:.1} s{peak}", images.len(), started_all.elapsed().as_secs_f64());
    if failed > 0 { Err(format!("{failed} of {} images failed", images.len())) } else { Ok(()) }
}

fn infer_one(
    network: &rpl_web::RplNetwork,
    path: &Path,
    out: &Path,
    options: &InferOptions,
    device: &burn::tensor::Device,
) -> Result<(usize, usize), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut image = RgbImage::decode(&path.display().to_string(), &bytes).map_err(|e| e.to_string())?;
    drop(bytes);
    if let Some(smaller) = image.fit_within(options.max_side) {
        eprintln!(
            "note: {}: {}x{} shrunk to {}x{} (--max-side {}); its outputs are at that size",
            path.display(), image.width, image.height, smaller.width, smaller.height, options.max_side
        );
        image = smaller;
    }
    let options = PredictOptions { mode: options.mode, keep_logits: options.save_logits, ..PredictOptions::default() };
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

fn progress_bar(total: usize, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    let style = indicatif::ProgressStyle::with_template(template).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar
}

fn train(config: &TrainConfig, out: &Path, export: Option<&Path>, backend: BackendKind) -> Result<(), String> {
    let device = backend.device().map_err(|e| e.to_string())?.autodiff();
    println!(
        "training the {} RPL network on {}: stage 1 {} steps of {} crops {}x{} then {} of {} crops {}x{}, stage 2 {} steps; run folder {}",
        config.config.describe(),
        backend.name(),
        config.stage1_steps,
        config.batch,
        config.crop[1],
        config.crop[0],
        config.context_steps,
        config.context_batch,
        config.context_crop[1],
        config.context_crop[0],
        config.stage2_steps,
        out.display()
    );
    let started = Instant::now();
    let template = "stage {prefix} [{bar:30}] {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}, {per_sec}]";
    let bars = [progress_bar(config.stage1_total_steps(), template), progress_bar(config.stage2_steps, template)];
    bars[0].set_prefix("1");
    bars[1].set_prefix("2");
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let log_path = out.join("train.log");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot write {}: {e}", log_path.display()))?;
    let network = rpl_web::training::train(config, out, &device, |r: &StepReport| {
        let bar = &bars[usize::from(r.stage - 1)];
        bar.set_position(r.step as u64);
        let parts: Vec<String> = r.parts.iter().map(|(name, v)| format!("{name} {v:.4}")).collect();
        bar.set_message(format!("loss {:.4} ({})", r.loss, parts.join(", ")));
        let line = format!("stage {} step {}/{} loss {:.5} {} {:.2}s", r.stage, r.step, r.steps, r.loss, parts.join(" "), r.seconds);
        let _ = std::io::Write::write_all(&mut log, format!("{line}\n").as_bytes());
        // Without a terminal (a log file, CI) the bars are hidden: print a line now and then.
        if bar.is_hidden() && (r.step % 25 == 0 || r.step == r.steps) {
            println!("{line}");
        }
        if r.step == r.steps {
            bar.finish();
        }
    })
    .map_err(|e| e.to_string())?;
    println!("trained in {:.1} min", started.elapsed().as_secs_f64() / 60.0);
    if let Some(path) = export {
        let cpu = BackendKind::Flex.device().map_err(|e| e.to_string())?;
        save_network(&network, path, StorageType::F16, &cpu).map_err(|e| e.to_string())?;
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        println!("wrote {} ({:.1} MB, float16)", path.display(), size as f64 / 1e6);
    }
    Ok(())
}

fn eval_synthetic(model: &Path, count: usize, outliers: OutlierSet, backend: BackendKind, json: Option<&Path>) -> Result<(), String> {
    let device = backend.device().map_err(|e| e.to_string())?;
    let network = inference_network(model, &device)?;
    let set = HeldOutSet { count, size: [256, 512], outliers };
    let bar = progress_bar(count, "[{bar:30}] {pos}/{len} images [{elapsed_precise} < {eta_precise}, {per_sec}]");
    let report = evaluate_synthetic(&network, &set, &device, |done, _| bar.set_position(done as u64)).map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    let colour_only = nearest_mean_colour_miou(&set, 50, network.config.num_classes);
    print_report(model, &set, &report, colour_only);
    if let Some(path) = json {
        std::fs::write(path, report_json(&set, &report, colour_only)).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Where `rpl eval` writes besides the terminal.
#[derive(Clone, Copy)]
struct EvalOutput<'a> {
    json: Option<&'a Path>,
    save_scores: Option<&'a Path>,
}

#[allow(clippy::too_many_arguments)]
fn eval_dataset(
    kind: DatasetKind,
    dir: &Path,
    model: Option<&Path>,
    saved: Option<&Path>,
    limit: Option<usize>,
    mode: ScoreMode,
    backend: BackendKind,
    output: EvalOutput,
) -> Result<(), String> {
    let listing = list_dataset(kind, dir).map_err(|e| e.to_string())?;
    if let Some(out) = output.save_scores {
        std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    }
    let loaded = match model {
        Some(model) => {
            let device = backend.device().map_err(|e| e.to_string())?;
            let network = inference_network(model, &device)?;
            println!("{}: {} RPL network on {}, score {}", model.display(), network.config.describe(), backend.name(), mode.name());
            Some((network, device))
        }
        None => None,
    };
    let source = match (&loaded, saved) {
        (Some((network, device)), _) => ScoreSource::Network { network, device, mode },
        (None, Some(dir)) => ScoreSource::Saved(dir),
        (None, None) => return Err("give --model or --scores".into()),
    };
    let total = limit.unwrap_or(usize::MAX).min(listing.samples.len());
    println!("{}: {} images in {}", kind.name(), total, listing.root.display());
    for skipped in &listing.skipped {
        eprintln!("skipped {}: {}", skipped.file.display(), skipped.reason);
    }
    let bar = progress_bar(total, "[{bar:30}] {pos}/{len} images [{elapsed_precise} < {eta_precise}, {per_sec}]");
    let options = DatasetOptions { limit, save_scores: output.save_scores };
    let report = evaluate_dataset(&listing, &source, options, |done, _, skipped| {
        if let Some(s) = skipped {
            bar.suspend(|| eprintln!("skipped {}: {}", s.file.display(), s.reason));
        }
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let report = report.map_err(|e| e.to_string())?;
    print_dataset_report(&report, mode);
    if let Some(path) = output.json {
        std::fs::write(path, dataset_json(&report, mode)).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(out) = output.save_scores {
        println!("score maps: {}/NAME.npy", out.display());
    }
    Ok(())
}

fn print_dataset_report(r: &DatasetReport, mode: ScoreMode) {
    println!("  {:<28} {:>8} {:>8} {:>8}", "anomaly score (pooled)", "AUROC", "AP", "FPR95");
    let rows = [(format!("{} of out2 (RPL)", mode.name()), Some(r.rpl)), (format!("{} of out1 (closed set)", mode.name()), r.baseline)];
    for (name, m) in rows.iter().filter_map(|(n, m)| m.map(|m| (n, m))) {
        println!("  {name:<28} {:>8.4} {:>8.4} {:>8.4}", m.auroc, m.ap, m.fpr95);
    }
    if let Some(miou) = r.miou_out1 {
        println!("  inlier mIoU of argmax(out1): {miou:.4}");
    }
    println!("  {} images, {} OoD and {} inlier pixels", r.images.len(), r.rpl.n_ood, r.rpl.n_inlier);
    if !r.skipped.is_empty() {
        println!(
            "  {} files skipped (listed above): these figures cover the {} images evaluated, not the whole dataset",
            r.skipped.len(),
            r.images.len()
        );
    }
}

fn metrics_json(m: Option<OodMetrics>) -> String {
    match m {
        Some(m) => format!(r#"{{"auroc": {}, "ap": {}, "fpr95": {}, "n_inlier": {}, "n_ood": {}}}"#, m.auroc, m.ap, m.fpr95, m.n_inlier, m.n_ood),
        None => "null".into(),
    }
}

/// A JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn dataset_json(r: &DatasetReport, mode: ScoreMode) -> String {
    let images: Vec<String> = r
        .images
        .iter()
        .map(|i| format!(r#"    {{"name": {}, "rpl": {}, "baseline": {}}}"#, json_string(&i.name), metrics_json(i.rpl), metrics_json(i.baseline)))
        .collect();
    let skipped: Vec<String> = r
        .skipped
        .iter()
        .map(|s| format!(r#"    {{"file": {}, "reason": {}}}"#, json_string(&s.file.display().to_string()), json_string(&s.reason)))
        .collect();
    format!(
        "{{\"dataset\": \"{}\", \"score\": \"{}\", \"images\": {}, \"rpl\": {}, \"baseline\": {}, \"miou_out1\": {},\n  \"per_image\": [\n{}\n  ],\n  \"skipped\": [\n{}\n  ]}}\n",
        r.kind.name(),
        mode.name(),
        r.images.len(),
        metrics_json(Some(r.rpl)),
        metrics_json(r.baseline),
        r.miou_out1.map_or("null".into(), |v| v.to_string()),
        images.join(",\n"),
        skipped.join(",\n"),
    )
}

fn print_report(model: &Path, set: &HeldOutSet, r: &SyntheticReport, colour_only: f64) {
    println!("{}: {} held-out scenes ({}x{}, outliers: {:?})", model.display(), r.images, set.size[1], set.size[0], set.outliers);
    println!("  inlier mIoU  argmax(out1) {:.4}   argmax(out2) {:.4}   colour-only control {:.4}", r.miou_out1, r.miou_out2, colour_only);
    println!("  argmax(out2) = argmax(out1) on {:.2} % of inlier pixels", 100.0 * r.agreement);
    println!("  {:<28} {:>8} {:>8} {:>8}", "anomaly score", "AUROC", "AP", "FPR95");
    for (name, m) in [("energy of out2 (RPL)", &r.rpl), ("energy of out1 (closed set)", &r.baseline)] {
        println!("  {name:<28} {:>8.4} {:>8.4} {:>8.4}", m.auroc, m.ap, m.fpr95);
    }
    let names = visualize::CITYSCAPES_CLASSES;
    let per_class: Vec<String> =
        r.iou_out1.iter().enumerate().filter_map(|(c, iou)| iou.map(|v| format!("{} {v:.2}", names.get(c).unwrap_or(&"?")))).collect();
    println!("  IoU of out1 per class: {}", per_class.join(", "));
}

fn report_json(set: &HeldOutSet, r: &SyntheticReport, colour_only: f64) -> String {
    let metrics = |m: &OodMetrics| metrics_json(Some(*m));
    format!(
        r#"{{"dataset": "synthetic", "images": {}, "size": [{}, {}], "outliers": "{:?}", "miou_out1": {}, "miou_out2": {}, "agreement": {}, "colour_only_miou": {}, "rpl": {}, "baseline": {}}}
"#,
        r.images, set.size[0], set.size[1], set.outliers, r.miou_out1, r.miou_out2, r.agreement, colour_only, metrics(&r.rpl), metrics(&r.baseline)
    )
}

fn bench(width_divisor: usize, sizes: &[[usize; 2]], backend: BackendKind, dtype: Precision, reps: usize, json: Option<&Path>) -> Result<(), String> {
    let config = RplConfig { width_divisor, ..RplConfig::RELEASED };
    if !config.is_valid() {
        return Err(format!("width divisor {width_divisor} does not divide the released widths (1, 2, 4, 8 and 16 do)"));
    }
    let device = backend.device_with(dtype).map_err(|e| e.to_string())?;
    let network = rpl_web::RplNetwork::new(config, &device).fold_batch_norms();
    let convolutions = if backend == BackendKind::Wgpu {
        let tuned = if cfg!(feature = "autotune") { ", burn autotune on" } else { "" };
        format!(", convolutions: {}{tuned}", gpu_convolution().name())
    } else {
        String::new()
    };
    println!(
        "{} RPL network, random weights, {}, on {}{convolutions}; {reps} runs per size after the first",
        config.describe(),
        dtype.name(),
        backend.name()
    );
    println!("{:>10} {:>10} {:>10} {:>9}  stages (median ms)", "size", "first ms", "median ms", "TFLOP/s");
    let mut reports = Vec::new();
    for &size in sizes {
        let report = rpl_web::benchmark::benchmark_size(&network, size, reps, &device).map_err(|e| format!("{}x{}: {e}", size[1], size[0]))?;
        let stages: Vec<String> = report.stages.iter().map(|(name, ms)| format!("{name} {ms:.1}")).collect();
        let memory = report.memory_bytes.map_or(String::new(), |b| format!(", memory {:.2} GB", b as f64 / 1e9));
        println!(
            "{:>10} {:>10.1} {:>10.1} {:>9}  {}{memory}",
            format!("{}x{}", size[1], size[0]),
            report.first_ms,
            report.median_ms,
            report.tflop_per_s.map_or("-".into(), |t| format!("{t:.2}")),
            stages.join(", ")
        );
        reports.push(report);
    }
    if let Some(path) = json {
        let rows: Vec<String> = reports
            .iter()
            .map(|r| {
                let stages: Vec<String> = r.stages.iter().map(|(name, ms)| format!("{}: {ms}", json_string(name))).collect();
                format!(
                    r#"    {{"height": {}, "width": {}, "first_ms": {}, "median_ms": {}, "min_ms": {}, "tflop_per_s": {}, "memory_bytes": {}, "stages_ms": {{{}}}}}"#,
                    r.size[0],
                    r.size[1],
                    r.first_ms,
                    r.median_ms,
                    r.min_ms,
                    r.tflop_per_s.map_or("null".into(), |t| t.to_string()),
                    r.memory_bytes.map_or("null".into(), |b| b.to_string()),
                    stages.join(", ")
                )
            })
            .collect();
        let text = format!(
            "{{\"backend\": \"{}\", \"dtype\": \"{}\", \"gpu_convolution\": \"{}\", \"autotune\": {}, \"width_divisor\": {width_divisor}, \"repetitions\": {reps}, \"sizes\": [\n{}\n]}}\n",
            backend.name(),
            dtype.name(),
            gpu_convolution().name(),
            cfg!(feature = "autotune"),
            rows.join(",\n")
        );
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn scenes(out: &Path, count: usize, first: usize, outliers: OutlierSet, size: [usize; 2]) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let set = HeldOutSet { count: first + count, size, outliers };
    let mut manifest = Vec::new();
    for index in first..first + count {
        let scene = set.scene(index);
        let name = format!("scene_{index:04}");
        let (w, h) = (scene.width, scene.height);
        save_png(&out.join(format!("{name}.png")), w, h, image::ExtendedColorType::Rgb8, &scene.rgb8)?;
        save_png(&out.join(format!("{name}_labels.png")), w, h, image::ExtendedColorType::L8, &scene.labels)?;
        save_png(&out.join(format!("{name}_ood.png")), w, h, image::ExtendedColorType::L8, &scene.ood_mask())?;
        let kinds: Vec<&str> = scene.outliers.iter().map(|k| k.name()).collect();
        println!("{name}: {:?}, outliers: {}", scene.context, if kinds.is_empty() { "none".into() } else { kinds.join(", ") });
        let kinds: Vec<String> = kinds.iter().map(|k| format!("\"{k}\"")).collect();
        manifest.push(format!(
            r#"  {{"name": "{name}", "image": "{name}.png", "labels": "{name}_labels.png", "ood": "{name}_ood.png", "context": "{:?}", "outliers": [{}]}}"#,
            scene.context,
            kinds.join(", ")
        ));
    }
    // A manifest for the page's sample gallery.
    let index = out.join("index.json");
    std::fs::write(&index, format!("[\n{}\n]\n", manifest.join(",\n"))).map_err(|e| format!("cannot write {}: {e}", index.display()))
}
