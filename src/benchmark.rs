//! Timing the network on a backend: the first result (shader compilation on GPUs), the steady
//! state, each stage, effective TFLOP/s and the memory the device's allocator holds.

use std::time::Instant;

use burn::tensor::Device;
use serde::{Serialize, Serializer, ser::SerializeMap};
use thiserror::Error;

use crate::model::convolution::layer_timing::{self, LayerKind};
use crate::model::{RplConfig, RplNetwork, Stage};
use crate::preprocess::RgbImage;
use crate::inference::{Head, LiveResult};
use crate::scoring::ScoreMode;

/// The released network's cost for one 512x1024 frame (multiply-adds counted twice); it grows
/// with the pixel count (15.0 TFLOP at 1024x2048).
pub const RELEASED_TFLOP_AT_512X1024: f64 = 3.76;

#[derive(Debug, Error)]
pub enum BenchmarkError {
    #[error("the backend failed during the benchmark: {0}")]
    Execution(String),
    #[error("{0} repetitions: at least one is needed")]
    NoRepetitions(usize),
    #[error("the ONNX Runtime peer ({python}): {reason}")]
    Peer { python: String, reason: String },
}

/// ONNX Runtime's figures for the same network and size, its runs alternating with ours (`--peer`).
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
pub struct PeerReport {
    pub version: String,
    pub threads: usize,
    pub first_ms: f64,
    pub median_ms: f64,
    pub min_ms: f64,
}

/// The Python that runs the peer: `RPL_PEER_PYTHON`, else `python3`.
#[cfg(not(target_arch = "wasm32"))]
fn peer_python() -> String {
    std::env::var("RPL_PEER_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// ONNX Runtime's CPU provider holding `onnx` at one size in a Python process beside ours
/// (`peer_onnxruntime.py`), timing runs whenever asked: its runs then alternate with ours, and
/// the machine's swings from one minute to the next reach both alike.
#[cfg(not(target_arch = "wasm32"))]
pub struct PeerSession {
    process: PeerProcess,
    ready: PeerReady,
}

/// The peer's Python process: its input takes run counts, its output answers a JSON line each.
#[cfg(not(target_arch = "wasm32"))]
struct PeerProcess {
    python: String,
    child: std::process::Child,
    input: Option<std::process::ChildStdin>,
    output: std::io::BufReader<std::process::ChildStdout>,
}

/// The peer's first line.
#[cfg(not(target_arch = "wasm32"))]
#[derive(serde::Deserialize)]
struct PeerReady {
    version: String,
    threads: usize,
    first_ms: f64,
}

#[cfg(not(target_arch = "wasm32"))]
#[derive(serde::Deserialize)]
struct PeerTimes {
    times_ms: Vec<f64>,
}

#[cfg(not(target_arch = "wasm32"))]
impl PeerSession {
    /// Starts ONNX Runtime on `onnx` at `size` ([height, width]) with `threads` threads and waits
    /// for its first run (logits only: no score, no read-back beyond them).
    pub fn start(onnx: &std::path::Path, size: [usize; 2], threads: usize) -> Result<Self, BenchmarkError> {
        use std::process::{Command, Stdio};
        let python = peer_python();
        let mut child = Command::new(&python)
            .args(["-c", include_str!("peer_onnxruntime.py")])
            .arg(onnx)
            .args([size[0], size[1], threads].map(|n| n.to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| BenchmarkError::Peer { python: python.clone(), reason: format!("cannot run it: {e}") })?;
        let input = child.stdin.take();
        let output = std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut process = PeerProcess { python, child, input, output };
        let ready = process.read_line()?;
        Ok(Self { process, ready })
    }

    /// Times `runs` runs, one after the other: milliseconds each.
    pub fn time(&mut self, runs: usize) -> Result<Vec<f64>, BenchmarkError> {
        use std::io::Write;
        let process = &mut self.process;
        let sent = process.input.as_mut().map(|input| writeln!(input, "{runs}").and_then(|_| input.flush()));
        if let Some(Err(e)) = sent {
            return Err(process.failed(format!("cannot send it work: {e}")));
        }
        Ok(process.read_line::<PeerTimes>()?.times_ms)
    }

    /// The figures of `times` (at least one), as timed by [`Self::time`].
    pub fn report(&self, times: &[f64]) -> PeerReport {
        let PeerReady { version, threads, first_ms } = &self.ready;
        let min_ms = times.iter().copied().fold(f64::INFINITY, f64::min);
        PeerReport { version: version.clone(), threads: *threads, first_ms: *first_ms, median_ms: median(&mut times.to_vec()), min_ms }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl PeerProcess {
    /// The next line as `T`; an error the peer reports, or the last line of its errors where it
    /// ended without one.
    fn read_line<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, BenchmarkError> {
        use std::io::BufRead;
        let mut line = String::new();
        if self.output.read_line(&mut line).is_ok_and(|n| n > 0) {
            if let Ok(error) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(reason) = error.get("error").and_then(|e| e.as_str())
            {
                return Err(self.failed(reason.to_string()));
            }
            if let Ok(figures) = serde_json::from_str(&line) {
                return Ok(figures);
            }
        }
        self.end();
        let mut errors = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut errors);
        }
        Err(self.failed(format!("no figures ({})", errors.lines().last().unwrap_or("no output"))))
    }

    fn failed(&self, reason: String) -> BenchmarkError {
        BenchmarkError::Peer { python: self.python.clone(), reason }
    }

    /// The end of its input ends it.
    fn end(&mut self) {
        self.input.take();
        let _ = self.child.wait();
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.end();
    }
}

/// What `rpl bench` measured, and on what; as JSON, what `rpl bench --json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct BenchmarkReport {
    pub backend: &'static str,
    pub dtype: &'static str,
    /// The wgpu convolution kernels (a `GpuConvolution`'s name).
    pub gpu_convolution: &'static str,
    /// What burn compiles its kernels to on wgpu (`wgpu<wgsl>`, `wgpu<spirv>`); none on the CPU.
    pub shader_compiler: Option<&'static str>,
    /// Whether burn's autotune was built in.
    pub autotune: bool,
    pub width_divisor: usize,
    pub repetitions: usize,
    pub sizes: Vec<SizeReport>,
}

/// One size's figures, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct SizeReport {
    pub height: usize,
    pub width: usize,
    /// The first run: uploads, shader compilation and autotuning included.
    pub first_ms: f64,
    /// Median and fastest of the runs after it (image upload to score read back).
    pub median_ms: f64,
    pub min_ms: f64,
    /// Median time per stage (runs that wait for the device after each stage), then the score
    /// (resized to the image in bands of rows, energy, blur, read back).
    #[serde(rename = "stages_ms", serialize_with = "stages_as_map")]
    pub stages: Vec<(&'static str, f64)>,
    /// From the released model's known cost, when this is the released width.
    pub tflop_per_s: Option<f64>,
    /// Bytes the device's allocator reserved (GPU), or the process's peak resident memory (CPU).
    pub memory_bytes: Option<u64>,
    /// ONNX Runtime on the same size, when `--peer` gave its ONNX file.
    pub peer: Option<PeerReport>,
    /// The convolutions by kind, per frame, from runs that wait for the device around each one
    /// (`--layers`).
    pub layers: Option<Vec<LayerKind>>,
    /// The kernels one frame launched on a GPU backend (image upload to score read back).
    pub launches: Option<LaunchCount>,
}

/// The stage after the network's: out2's score at the image's size, read back.
const SCORE_STAGE: &str = "score";

impl SizeReport {
    /// Image to logits: the stages' medians without the score's, to set beside a peer that
    /// stops at the logits (a sum of medians, not the median of sums).
    pub fn logits_ms(&self) -> f64 {
        self.stages.iter().filter(|(name, _)| *name != SCORE_STAGE).map(|(_, ms)| ms).sum()
    }
}

/// Kernel launches in one frame: each a compute pass the GPU schedules and runs in turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaunchCount {
    pub total: usize,
    /// Each kernel (its type's name without module path or parameters) and its launches, most
    /// launched first.
    pub by_kernel: Vec<(String, usize)>,
}

impl LaunchCount {
    /// `None` where nothing was launched (a CPU backend).
    fn from_counts<'a>(counts: impl IntoIterator<Item = (&'a str, usize)>) -> Option<Self> {
        let mut by_kernel: Vec<(String, usize)> = Vec::new();
        for (name, n) in counts {
            let base = name.split('<').next().unwrap_or(name);
            let short = base.rsplit("::").next().unwrap_or(base);
            match by_kernel.iter_mut().find(|(known, _)| known == short) {
                Some((_, total)) => *total += n,
                None => by_kernel.push((short.to_string(), n)),
            }
        }
        by_kernel.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let total = by_kernel.iter().map(|(_, n)| n).sum();
        (total > 0).then_some(Self { total, by_kernel })
    }
}

/// Stage times as a JSON object, in the order the stages run.
fn stages_as_map<S: Serializer>(stages: &[(&'static str, f64)], serializer: S) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(stages.len()))?;
    for (name, ms) in stages {
        map.serialize_entry(name, ms)?;
    }
    map.end()
}

/// A random RGB image: benchmarks need no data.
pub fn random_image(width: usize, height: usize, seed: u64) -> RgbImage {
    let mut state = seed;
    let pixels = (0..width * height * 3)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect();
    RgbImage { width, height, pixels }
}

fn sync(device: &Device) -> Result<(), BenchmarkError> {
    device.sync().map_err(|e| BenchmarkError::Execution(e.to_string()))
}

/// Image in, energy score of out2 read back: what a user waits for (on the CPU pool, as the
/// command line and the page run: [`crate::cpu::on_pool`]).
fn end_to_end(network: &RplNetwork, image: &RgbImage, device: &Device) -> Result<f64, BenchmarkError> {
    let started = Instant::now();
    crate::cpu::on_pool(device, || read_score(LiveResult::run(network, image, device)))?;
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

/// The energy score of out2 at the image's size, as inference makes it (in bands of rows),
/// read back: its values are on the host when this returns.
fn read_score(live: LiveResult) -> Result<(), BenchmarkError> {
    let values = futures_lite::future::block_on(live.score(Head::Out2, ScoreMode::Energy)).map_err(|e| BenchmarkError::Execution(e.to_string()))?;
    std::hint::black_box(values);
    Ok(())
}

/// [`end_to_end`], counting the kernels it launches where the backend is a GPU one.
fn end_to_end_counted(network: &RplNetwork, image: &RgbImage, device: &Device) -> Result<(f64, Option<LaunchCount>), BenchmarkError> {
    #[cfg(feature = "wgpu")]
    {
        let (ms, counts) = crate::gpu::launches::count_launches(|| end_to_end(network, image, device));
        Ok((ms?, LaunchCount::from_counts(counts)))
    }
    #[cfg(not(feature = "wgpu"))]
    Ok((end_to_end(network, image, device)?, None))
}

/// One run waiting for the device after each stage: milliseconds per stage, then the score.
fn staged(network: &RplNetwork, image: &RgbImage, device: &Device) -> Result<Vec<f64>, BenchmarkError> {
    crate::cpu::on_pool(device, || staged_here(network, image, device))
}

/// [`staged`] on the calling thread.
fn staged_here(network: &RplNetwork, image: &RgbImage, device: &Device) -> Result<Vec<f64>, BenchmarkError> {
    let input = image.to_input(device);
    sync(device)?;
    let mut times = Vec::with_capacity(Stage::ALL.len() + 1);
    let mut failure = None;
    let mut mark = Instant::now();
    let logits = network.forward_staged(input, &mut |_| {
        if let Err(e) = sync(device) {
            failure.get_or_insert(e);
        }
        times.push(mark.elapsed().as_secs_f64() * 1e3);
        mark = Instant::now();
    });
    if let Some(e) = failure {
        return Err(e);
    }
    read_score(LiveResult::new(logits))?;
    times.push(mark.elapsed().as_secs_f64() * 1e3);
    Ok(times)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

/// The process's peak resident memory (Linux), for CPU backends.
pub fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The convolutions of `repetitions` end-to-end runs timed one by one, per kind and per frame.
fn layer_kinds(network: &RplNetwork, image: &RgbImage, repetitions: usize, device: &Device) -> Result<Vec<LayerKind>, BenchmarkError> {
    layer_timing::start();
    let runs = (0..repetitions).try_for_each(|_| end_to_end(network, image, device).map(drop));
    let mut kinds = layer_timing::stop();
    runs?;
    for kind in &mut kinds {
        kind.calls /= repetitions;
        kind.ms /= repetitions as f64;
        kind.flop /= repetitions as f64;
    }
    Ok(kinds)
}

/// Times `network` at `size` (`[height, width]`): one first run, then `repetitions` end-to-end
/// runs, each followed by `after_each_run` (a peer's run, so that the two alternate), then as many
/// staged runs, and as many with each convolution timed where `layers`.
pub fn benchmark_size(
    network: &RplNetwork,
    size: [usize; 2],
    repetitions: usize,
    layers: bool,
    device: &Device,
    mut after_each_run: impl FnMut() -> Result<(), BenchmarkError>,
) -> Result<SizeReport, BenchmarkError> {
    if repetitions == 0 {
        return Err(BenchmarkError::NoRepetitions(repetitions));
    }
    let image = random_image(size[1], size[0], 7);
    let first_ms = end_to_end(network, &image, device)?;
    // The first timed run also counts its launches (an atomic and a lock per launch).
    let (counted_ms, launches) = end_to_end_counted(network, &image, device)?;
    after_each_run()?;
    let mut totals = vec![counted_ms];
    for _ in 1..repetitions {
        totals.push(end_to_end(network, &image, device)?);
        after_each_run()?;
    }
    let runs = (0..repetitions).map(|_| staged(network, &image, device)).collect::<Result<Vec<_>, _>>()?;
    let names = Stage::ALL.iter().map(|s| s.name()).chain([SCORE_STAGE]);
    let stages = names
        .enumerate()
        .map(|(i, name)| (name, median(&mut runs.iter().map(|r| r[i]).collect::<Vec<_>>())))
        .collect();
    let min_ms = totals.iter().copied().fold(f64::INFINITY, f64::min);
    let median_ms = median(&mut totals);
    let tflop_per_s = (network.config == RplConfig::RELEASED).then(|| {
        let tflop = RELEASED_TFLOP_AT_512X1024 * (size[0] * size[1]) as f64 / (512.0 * 1024.0);
        tflop / (median_ms / 1e3)
    });
    let memory_bytes = device.memory_pool_usage().map(|u| u.bytes_reserved).or_else(peak_resident_bytes);
    let layers = if layers { Some(layer_kinds(network, &image, repetitions, device)?) } else { None };
    Ok(SizeReport { height: size[0], width: size[1], first_ms, median_ms, min_ms, stages, tflop_per_s, memory_bytes, peer: None, layers, launches })
}
