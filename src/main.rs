//! `rpl`: the command line. Thin: parses arguments and calls the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use rpl_web::backend::{BackendKind, Precision};
use rpl_web::model::RplConfig;
use rpl_web::model::convolution::{GpuConvolution, arrange_weights, gpu_convolution, set_gpu_convolution};
use rpl_web::inference::PredictOptions;
use rpl_web::preprocess::RgbImage;
use rpl_web::provenance::{ModelIdentity, Provenance, identify_file};
use rpl_web::scoring::ScoreMode;
use rpl_web::weights::safetensors::{StorageType, write_safetensors};
use rpl_web::weights::{load_network, open_checkpoint};
use rpl_web::datasets::{DatasetKind, list_dataset};
use rpl_web::benchmark::{BenchmarkReport, PeerSession};
use rpl_web::evaluation::{
    DatasetOptions, DatasetReport, HeldOutSet, ScoreSource, SyntheticEvaluation, evaluate_dataset, evaluate_synthetic, nearest_mean_colour_miou,
};
use rpl_web::synthetic::{OutlierSet, SceneFiles};
use rpl_web::training::{StepReport, TrainConfig, save_network};
use rpl_web::{npy, predict, visualize};

#[derive(Parser)]
#[command(name = "rpl", version = rpl_web::provenance::LONG_VERSION, about = "RPL anomaly segmentation (Residual Pattern Learning, ICCV 2023)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a PyTorch checkpoint (.pth) to safetensors, the format the browser loads.
    Convert {
        /// The checkpoint to read: .pth (as released) or .safetensors, any RPL width.
        input: PathBuf,
        /// The safetensors file to write (replaced if it exists).
        output: PathBuf,
        /// Store float16 (half the size).
        #[arg(long, conflicts_with = "int8")]
        f16: bool,
        /// Store every convolution's weights as int8 with float32 scales per output channel, the
        /// rest as float32 (about a quarter of the size; see the README for what it costs).
        #[arg(long)]
        int8: bool,
    },
    /// Segment images and score their anomalies; writes NAME_classes.png, NAME_score.npy and
    /// NAME_overlay.png per image into --out.
    Infer {
        /// Checkpoint: .pth or .safetensors, any RPL width.
        #[arg(long)]
        model: PathBuf,
        /// Folder for the outputs (created if missing). Two images with the same file stem are
        /// refused: their outputs would overwrite each other.
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
        /// Images to segment: PNG, JPEG or WebP.
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
        /// Stage 1 (the closed-set segmentation network): steps on the usual crops.
        #[arg(long, default_value_t = TrainConfig::default().stage1_steps)]
        stage1_steps: usize,
        /// Stage 1's closing steps on larger crops (512x256 scenes cut to 256x256, two per step).
        #[arg(long, default_value_t = TrainConfig::default().context_steps)]
        context_steps: usize,
        /// Stage 2 (the residual block, with outliers pasted in): steps.
        #[arg(long, default_value_t = TrainConfig::default().stage2_steps)]
        stage2_steps: usize,
        /// Seed of the weights' initialisation and of the generated scenes.
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
        /// energy (the paper's), entropy, or the baselines max-softmax and max-logit; both heads
        /// are scored with it (saved score maps were scored when they were saved).
        #[arg(long, default_value = "energy", value_parser = parse_score, conflicts_with = "scores")]
        score: ScoreMode,
        /// Generated held-out set (no folder): number of scenes.
        #[arg(long, default_value_t = 100, conflicts_with = "dir")]
        count: usize,
        /// Generated held-out set (no folder): outlier kinds, held-out (never trained on),
        /// training, or any.
        #[arg(long, default_value = "held-out", value_parser = parse_outliers, conflicts_with = "dir")]
        outliers: OutlierSet,
        /// flex (CPU), ndarray (CPU, slower) or wgpu (GPU): where the model runs.
        #[arg(long, default_value = "flex", value_parser = parse_backend, conflicts_with = "scores")]
        backend: BackendKind,
        /// Also write the figures as JSON (per dataset and per image).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Time the network with random weights: first result, steady state (median of --reps),
    /// each stage, effective TFLOP/s (released width) and memory, per size. The defaults (the
    /// demo model's width on the CPU at 512x256) need no GPU and finish in seconds; a GPU
    /// and the released model: --backend wgpu --width-divisor 1 --sizes 512x256,1024x512,2048x1024.
    Bench {
        /// Width divisor: 1 is the released model, 8 the demo model's width.
        #[arg(long, default_value_t = 8)]
        width_divisor: usize,
        /// Sizes, WIDTHxHEIGHT (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "512x256", value_parser = parse_size)]
        sizes: Vec<[usize; 2]>,
        /// flex (CPU), ndarray (CPU, slower) or wgpu (GPU).
        #[arg(long, default_value = "flex", value_parser = parse_backend)]
        backend: BackendKind,
        /// f32, or f16 (wgpu on an adapter with shader-f16).
        #[arg(long, default_value = "f32", value_parser = parse_precision)]
        dtype: Precision,
        /// Timed runs per size after the first (the first compiles shaders on GPUs); each is
        /// run once whole and once stage by stage.
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// On wgpu: `direct` (burn's convolution kernel), `products` (im2col matrix products),
        /// `implicit` (burn's implicit-product routine on register tiles), `tiles` (our kernel
        /// of register tiles) or `staged` (the same tiles staged in workgroup memory).
        #[arg(long, default_value = "direct", value_parser = parse_gpu_convolution)]
        gpu_convolution: GpuConvolution,
        /// Also write the figures as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// The same network as ONNX (e.g. ../shared/peer/onnx/rpl_w8.onnx): ONNX Runtime's CPU
        /// time on each size, with as many threads as flex uses, its runs alternating with ours, is
        /// printed beside ours with the ratio (needs `pip install onnxruntime numpy`;
        /// RPL_PEER_PYTHON names the Python).
        #[arg(long)]
        peer: Option<PathBuf>,
        /// Also time each convolution (waiting for the device around each) and print them by
        /// kind: calls, milliseconds and GFLOP/s per frame, and their share of the frame.
        #[arg(long)]
        layers: bool,
    },
    /// Write generated scenes: NAME.png, NAME_labels.png (train ids, 254 outliers) and
    /// NAME_ood.png (0 inlier, 1 OoD, 255 void) per scene, from the held-out seed range.
    Scenes {
        /// Folder for the scenes and their index.json (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Number of scenes.
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
    OutlierSet::from_name(name).ok_or_else(|| format!("unknown outlier set `{name}` (none, training, held-out or any)"))
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
    let known = GpuConvolution::ALL.map(GpuConvolution::name).join(", ");
    GpuConvolution::from_name(name).ok_or_else(|| format!("unknown GPU convolution `{name}` ({known})"))
}

fn parse_score(name: &str) -> Result<ScoreMode, String> {
    let names: Vec<&str> = ScoreMode::ALL.iter().map(|m| m.name()).collect();
    ScoreMode::from_name(name).ok_or_else(|| format!("unknown score `{name}` (one of {})", names.join(", ")))
}

/// glibc hands every allocation over 128 KiB (rising with use, at most 32 MiB) straight to the
/// kernel and back: each activation of a forward pass then costs page faults and the kernel's
/// zeroing of fresh pages, about a fifth of a CPU forward pass at the demo model's width. Kept
/// in the heap instead, freed maps are reused by the next layer.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's largest mmap threshold on 64-bit targets (HEAP_MAX_SIZE / 2).
        const LARGEST_MMAP_THRESHOLD: libc::c_int = 32 << 20;
        // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, LARGEST_MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        }
    }
}

fn main() -> ExitCode {
    // SAFETY: the first thing the process does; no other thread exists yet.
    #[cfg(target_os = "linux")]
    unsafe {
        rpl_web::backend::skip_device_select_without_display()
    };
    keep_freed_memory();
    let result = match Cli::parse().command {
        Command::Convert { input, output, f16, int8 } => {
            let storage = match (f16, int8) {
                (true, _) => StorageType::F16,
                (_, true) => StorageType::Int8,
                _ => StorageType::F32,
            };
            convert(&input, &output, storage)
        }
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
                (Some(model), false) => {
                    let set = HeldOutSet { count: limit.map_or(count, |l| l.min(count)), size: [256, 512], outliers };
                    eval_synthetic(&model, &set, score, backend, json.as_deref())
                }
                _ => Err("--scores and --save-scores need a folder of images: write the scenes with `rpl scenes --out DIR`, then run `rpl eval --dataset synthetic DIR`".into()),
            },
        },
        Command::Bench { width_divisor, sizes, backend, dtype, reps, gpu_convolution, json, peer, layers } => {
            if gpu_convolution != GpuConvolution::Direct && backend != BackendKind::Wgpu {
                Err(format!("--gpu-convolution {} applies to --backend wgpu only", gpu_convolution.name()))
            } else {
                set_gpu_convolution(gpu_convolution);
                bench(width_divisor, &sizes, backend, dtype, (reps, layers), json.as_deref(), peer.as_deref())
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

fn convert(input: &Path, output: &Path, storage: StorageType) -> Result<(), String> {
    let source = open_checkpoint(input).map_err(|e| e.to_string())?;
    let device = BackendKind::Flex.device().map_err(|e| e.to_string())?;
    let config = write_safetensors(source.as_ref(), storage, output, &device).map_err(|e| e.to_string())?;
    let size = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    println!("wrote {} ({} RPL network, {:.1} MB)", output.display(), config.describe(), size as f64 / 1e6);
    Ok(())
}

/// The checkpoint at `model` on `device`, its BatchNorms folded and its weights laid out for
/// inference, and the file's name and SHA-256 (for reports); the file's bytes are released once
/// the weights are on the device.
fn inference_network(model: &Path, device: &burn::tensor::Device) -> Result<(rpl_web::RplNetwork, ModelIdentity), String> {
    let source = open_checkpoint(model).map_err(|e| e.to_string())?;
    let network = arrange_weights(load_network(source.as_ref(), device).map_err(|e| e.to_string())?.fold_batch_norms());
    let identity = identify_file(model).map_err(|e| format!("cannot read {}: {e}", model.display()))?;
    Ok((network, identity))
}

struct InferOptions {
    mode: ScoreMode,
    save_logits: bool,
    max_side: usize,
}

/// Each image's outputs are named after its file stem: two inputs sharing one would overwrite
/// each other's files.
fn check_distinct_stems(images: &[PathBuf]) -> Result<(), String> {
    let mut seen: std::collections::HashMap<String, &Path> = std::collections::HashMap::new();
    for path in images {
        if let Some(earlier) = seen.insert(output_stem(path), path) {
            return Err(format!(
                "{} and {} would write the same {}_* files: rename one, or run them with different --out folders",
                earlier.display(),
                path.display(),
                output_stem(path)
            ));
        }
    }
    Ok(())
}

fn output_stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into())
}

fn infer(model: &Path, out: &Path, backend: BackendKind, dtype: Precision, options: InferOptions, images: &[PathBuf]) -> Result<(), String> {
    check_distinct_stems(images)?;
    let device = backend.device_with(dtype).map_err(|e| e.to_string())?;
    let (network, identity) = inference_network(model, &device)?;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    println!("{}: {} RPL network on {}, {}; sha256 {}", model.display(), network.config.describe(), backend.name(), dtype.name(), identity.sha256);

    let mut failed = 0;
    let started_all = Instant::now();
    for path in images {
        let started = Instant::now();
        match infer_one(&network, path, out, &options, &device) {
            Ok((w, h)) => println!("{}: {w}x{h}, {} ms", path.display(), started.elapsed().as_millis()),
            Err(message) => {
                // Each message names the file it is about (the image or an output).
                eprintln!("error: {message}");
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
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
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
    let prediction = predict(network, &image, options, device).map_err(|e| format!("{}: {e}", path.display()))?;
    let (w, h) = (prediction.width, prediction.height);
    let stem = output_stem(path);
    let file = |suffix: &str| out.join(format!("{stem}_{suffix}"));

    let classes = file("classes.png");
    let written = std::fs::File::create(&classes)
        .map_err(|e| e.to_string())
        .and_then(|f| visualize::write_class_png(std::io::BufWriter::new(f), w, h, &prediction.classes).map_err(|e| e.to_string()));
    written.map_err(|e| format!("cannot write {}: {e}", classes.display()))?;
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

fn eval_synthetic(model: &Path, set: &HeldOutSet, mode: ScoreMode, backend: BackendKind, json: Option<&Path>) -> Result<(), String> {
    let device = backend.device().map_err(|e| e.to_string())?;
    let (network, identity) = inference_network(model, &device)?;
    let bar = progress_bar(set.count, "[{bar:30}] {pos}/{len} images [{elapsed_precise} < {eta_precise}, {per_sec}]");
    let report = evaluate_synthetic(&network, set, mode, &device, |done, _| bar.set_position(done as u64)).map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    let colour_only_miou = nearest_mean_colour_miou(set, 50, network.config.num_classes);
    let evaluation = SyntheticEvaluation { dataset: DatasetKind::Synthetic, set: *set, report, colour_only_miou };
    print_report(model, &identity, &evaluation);
    match json {
        Some(path) => write_report(path, &evaluation, Some(identity)),
        None => Ok(()),
    }
}

/// A report as pretty-printed JSON.
fn write_json(path: &Path, report: &impl serde::Serialize) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    serde_json::to_writer_pretty(&mut writer, report)
        .map_err(|e| e.to_string())
        .and_then(|()| std::io::Write::write_all(&mut writer, b"\n").map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A report that names the version, the sources and the model it came from.
#[derive(serde::Serialize)]
struct WithProvenance<'a, R> {
    provenance: Provenance,
    #[serde(flatten)]
    report: &'a R,
}

/// A report as JSON, with its provenance first.
fn write_report(path: &Path, report: &impl serde::Serialize, model: Option<ModelIdentity>) -> Result<(), String> {
    write_json(path, &WithProvenance { provenance: Provenance::new(model), report })
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
            let (network, identity) = inference_network(model, &device)?;
            println!(
                "{}: {} RPL network on {}, score {}; sha256 {}",
                model.display(),
                network.config.describe(),
                backend.name(),
                mode.name(),
                identity.sha256
            );
            Some((network, device, identity))
        }
        None => None,
    };
    let source = match (&loaded, saved) {
        (Some((network, device, _)), _) => ScoreSource::Network { network, device, mode },
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
    print_dataset_report(&report);
    if let Some(path) = output.json {
        write_report(path, &report, loaded.map(|(_, _, identity)| identity))?;
    }
    if let Some(out) = output.save_scores {
        println!("score maps: {}/NAME.npy", out.display());
    }
    Ok(())
}

fn print_dataset_report(r: &DatasetReport) {
    let score = r.score.map_or("saved score", ScoreMode::name);
    println!("  {:<28} {:>8} {:>8} {:>8}", "anomaly score (pooled)", "AUROC", "AP", "FPR95");
    let rows = [(format!("{score} of out2 (RPL)"), Some(r.rpl)), (format!("{score} of out1 (closed set)"), r.baseline)];
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

fn print_report(model: &Path, identity: &ModelIdentity, e: &SyntheticEvaluation) {
    let (set, r) = (&e.set, &e.report);
    println!(
        "{}: {} held-out scenes ({}x{}, outliers: {}); sha256 {}",
        model.display(),
        r.images,
        set.size[1],
        set.size[0],
        set.outliers.name(),
        identity.sha256
    );
    println!(
        "  inlier mIoU  argmax(out1) {:.4}   argmax(out2) {:.4}   colour-only control {:.4}",
        r.miou_out1, r.miou_out2, e.colour_only_miou
    );
    println!("  argmax(out2) = argmax(out1) on {:.2} % of inlier pixels", 100.0 * r.agreement);
    println!("  {:<28} {:>8} {:>8} {:>8}", "anomaly score", "AUROC", "AP", "FPR95");
    let score = r.score.name();
    for (name, m) in [(format!("{score} of out2 (RPL)"), &r.rpl), (format!("{score} of out1 (closed set)"), &r.baseline)] {
        println!("  {name:<28} {:>8.4} {:>8.4} {:>8.4}", m.auroc, m.ap, m.fpr95);
    }
    let names = visualize::CITYSCAPES_CLASSES;
    let per_class: Vec<String> =
        r.iou_out1.iter().enumerate().filter_map(|(c, iou)| iou.map(|v| format!("{} {v:.2}", names.get(c).unwrap_or(&"?")))).collect();
    println!("  IoU of out1 per class: {}", per_class.join(", "));
}

/// The pause between our runs and the peer's: both runtimes' threads spin a while after a run
/// before they sleep (ONNX Runtime's intra-op pool, rayon's), and without it each side's spinning
/// threads took the cores from the other's next run (width 1/8 at 256x512: ours 41 -> 81 ms).
const PEER_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// Prints each size's row as it is measured.
fn bench(
    width_divisor: usize,
    sizes: &[[usize; 2]],
    backend: BackendKind,
    dtype: Precision,
    (reps, layers): (usize, bool),
    json: Option<&Path>,
    peer: Option<&Path>,
) -> Result<(), String> {
    if let Some(peer) = peer.filter(|p| !p.is_file()) {
        return Err(format!("{}: no such ONNX file (--peer)", peer.display()));
    }
    let config = RplConfig { width_divisor, ..RplConfig::RELEASED };
    if !config.is_valid() {
        return Err(format!("width divisor {width_divisor} does not divide the released widths (1, 2, 4, 8 and 16 do)"));
    }
    let mut report = BenchmarkReport {
        backend: backend.name(),
        dtype: dtype.name(),
        gpu_convolution: gpu_convolution().name(),
        shader_compiler: None,
        autotune: cfg!(feature = "autotune"),
        width_divisor,
        repetitions: reps,
        sizes: Vec::new(),
    };
    let device = backend.device_with(dtype).map_err(|e| e.to_string())?;
    let network = arrange_weights(rpl_web::RplNetwork::new(config, &device).fold_batch_norms());
    let convolutions = if backend == BackendKind::Wgpu {
        report.shader_compiler = rpl_web::gpu::shader_compiler(&device);
        let tuned = if report.autotune { ", burn autotune on" } else { "" };
        let compiler = report.shader_compiler.unwrap_or("unknown shaders");
        format!(" ({compiler}), convolutions: {}{tuned}", gpu_convolution().name())
    } else {
        String::new()
    };
    println!(
        "{} RPL network, random weights, {}, on {}{convolutions}; {} runs per size after the first",
        config.describe(),
        dtype.name(),
        backend.name(),
        report.repetitions
    );
    println!("{:>10} {:>10} {:>10} {:>9}  stages (median ms)", "size", "first ms", "median ms", "TFLOP/s");
    for &size in sizes {
        let failed = |e: rpl_web::benchmark::BenchmarkError| format!("{}x{}: {e}", size[1], size[0]);
        // ONNX Runtime beside ours, as many threads as flex's pool (one per core, or
        // RAYON_NUM_THREADS), each of our timed runs followed by one of its.
        let mut beside = peer.map(|onnx| PeerSession::start(onnx, size, rpl_web::cpu::threads())).transpose().map_err(failed)?;
        let mut theirs = Vec::new();
        let mut measured = rpl_web::benchmark::benchmark_size(&network, size, report.repetitions, layers, &device, || {
            if let Some(session) = beside.as_mut() {
                std::thread::sleep(PEER_SETTLE);
                theirs.extend(session.time(1)?);
                std::thread::sleep(PEER_SETTLE);
            }
            Ok(())
        })
        .map_err(failed)?;
        let stages: Vec<String> = measured.stages.iter().map(|(name, ms)| format!("{name} {ms:.1}")).collect();
        let memory = measured.memory_bytes.map_or(String::new(), |b| format!(", memory {:.2} GB", b as f64 / 1e9));
        println!(
            "{:>10} {:>10.1} {:>10.1} {:>9}  {}{memory}",
            format!("{}x{}", measured.width, measured.height),
            measured.first_ms,
            measured.median_ms,
            measured.tflop_per_s.map_or("-".into(), |t| format!("{t:.2}")),
            stages.join(", ")
        );
        if let (Some(onnx), Some(session)) = (peer, beside) {
            let figures = session.report(&theirs);
            println!(
                "{:>10} {:>10.1} {:>10.1}  ONNX Runtime {} ({} threads, {}, logits only, its runs alternating with ours): ours / theirs = {:.2} (to our logits, the stages but the score: {:.2})",
                "",
                figures.first_ms,
                figures.median_ms,
                figures.version,
                figures.threads,
                onnx.display(),
                measured.median_ms / figures.median_ms,
                measured.logits_ms() / figures.median_ms
            );
            measured.peer = Some(figures);
        }
        if let Some(launches) = &measured.launches {
            let most: Vec<String> = launches.by_kernel.iter().take(6).map(|(name, n)| format!("{name} {n}")).collect();
            println!("{:>10} kernel launches per frame: {} ({})", "", launches.total, most.join(", "));
        }
        if let Some(kinds) = &measured.layers {
            print_layer_kinds(kinds, measured.median_ms);
        }
        report.sizes.push(measured);
    }
    match json {
        Some(path) => write_report(path, &report, None),
        None => Ok(()),
    }
}

/// The convolutions by kind, slowest first, with their share of a frame timed without waits.
fn print_layer_kinds(kinds: &[rpl_web::model::convolution::layer_timing::LayerKind], frame_ms: f64) {
    let mut kinds = kinds.to_vec();
    kinds.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    println!("{:>10} convolutions per frame, each waited for: {:.1} ms in all", "", kinds.iter().map(|k| k.ms).sum::<f64>());
    println!("{:>10} {:<18} {:>6} {:>10} {:>9} {:>8}", "", "kind", "calls", "ms", "GFLOP/s", "frame");
    for k in &kinds {
        let rate = k.flop / (k.ms / 1e3) / 1e9;
        println!("{:>10} {:<18} {:>6} {:>10.1} {:>9.1} {:>7.0}%", "", k.kind, k.calls, k.ms, rate, 100.0 * k.ms / frame_ms);
    }
}

fn scenes(out: &Path, count: usize, first: usize, outliers: OutlierSet, size: [usize; 2]) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let set = HeldOutSet { count: first + count, size, outliers };
    let mut manifest = Vec::new();
    for index in first..first + count {
        let scene = set.scene(index);
        let files = SceneFiles::new(&format!("scene_{index:04}"), &scene);
        let (w, h) = (scene.width, scene.height);
        save_png(&out.join(&files.image), w, h, image::ExtendedColorType::Rgb8, &scene.rgb8)?;
        save_png(&out.join(&files.labels), w, h, image::ExtendedColorType::L8, &scene.labels)?;
        save_png(&out.join(&files.ood), w, h, image::ExtendedColorType::L8, &scene.ood_mask())?;
        let outliers = if files.outliers.is_empty() { "none".into() } else { files.outliers.join(", ") };
        println!("{}: {:?}, outliers: {outliers}", files.name, scene.context);
        manifest.push(files);
    }
    // A manifest for the page's sample gallery.
    write_json(&out.join("index.json"), &manifest)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_argument_of_every_subcommand_has_help_text() {
        let cli = super::Cli::command();
        let mut checked = 0;
        for command in cli.get_subcommands() {
            for argument in command.get_arguments().filter(|a| a.get_id() != "help") {
                assert!(argument.get_help().is_some(), "rpl {} {} has no help text", command.get_name(), argument.get_id());
                checked += 1;
            }
        }
        assert!(checked > 40, "{checked} arguments");
    }
}
