// Types of rpl.js, rpl-web's browser API (checked by `tsc --noEmit` in the browser tests).

/** The network's heads: out1 is the closed-set network, out2 has the RPL block. */
export type Head = 'out1' | 'out2';
/** Both heads' values of one kind. */
export type PerHead<T> = { out1: T; out2: T };
export type ScoreMode = 'energy' | 'entropy' | 'max-softmax' | 'max-logit';

export declare const HEADS: readonly Head[];
export declare const SCORE_MODES: readonly ScoreMode[];
export declare const CONVOLUTIONS: readonly GpuConvolution[];
/** File names taken as models. */
export declare const MODEL_FILE: RegExp;

export type ErrorCode =
  | 'bad-model' | 'model-too-large' | 'no-model' | 'fetch-failed' | 'load-stopped'
  | 'bad-image' | 'image-too-large' | 'no-image' | 'bad-mask'
  | 'cancelled'
  | 'webgpu-failed' | 'backend-unavailable' | 'no-gpu-device' | 'readback-failed' | 'not-started'
  | 'device-lost' | 'module-crashed' | 'worker-failed' | 'worker-restarted' | 'disposed'
  | 'bad-argument' | 'export-failed'
  | 'failed';

export declare class RplError extends Error {
  constructor(message: string, code?: ErrorCode, options?: { fatal?: boolean; cause?: unknown });
  /** What went wrong, for programs (the message is for people). */
  readonly code: ErrorCode;
  /** The session cannot go on: restart() it. */
  readonly fatal: boolean;
}
export declare class ModelError extends RplError {}
export declare class ImageError extends RplError {}
export declare class CancelledError extends RplError {}
export declare class BackendError extends RplError {}
export declare class UsageError extends RplError {}

/** Images the API takes. */
export type ImageSource =
  | ImageData | ImageBitmap | HTMLImageElement | HTMLVideoElement | HTMLCanvasElement
  | OffscreenCanvas | VideoFrame | SVGImageElement | Blob;

export interface DecodedImage {
  /** The pixels, at the size `fit` chose. */
  image: ImageData;
  /** The source's own size. */
  width: number;
  height: number;
}

export declare function toImageData(
  source: ImageSource,
  fit?: (width: number, height: number) => [number, number],
  options?: { smooth?: boolean },
): Promise<DecodedImage>;

export declare function drawImageData(canvas: HTMLCanvasElement | OffscreenCanvas, image: ImageData): void;

export interface SessionOptions {
  /** 'auto' (default): WebGPU on a hardware adapter, else the CPU; 'webgpu': WebGPU even on a
   * software adapter; 'cpu'. */
  backend?: 'auto' | 'webgpu' | 'cpu';
  /** 'float16' where the adapter has shader-f16 (info.halfPrecisionError says why not). */
  dtype?: 'float32' | 'float16';
  /** The CPU path's threads; 0 (default): every core, where the page is cross-origin isolated. */
  threads?: number;
  /** How WebGPU runs the convolutions: 'direct' (default: burn's kernel), 'products' (im2col
   * matrix products), 'implicit' (implicit matrix products on register tiles) or 'tiles' (our
   * kernel of register tiles). */
  convolution?: GpuConvolution;
  workerUrl?: string | URL;
}

export type GpuConvolution = 'direct' | 'products' | 'implicit' | 'tiles';

/** Convolutions run each way in one call: burn's kernel, matrix products, the implicit routine
 * (WebGPU), our own kernel (the CPU), our register tiles (WebGPU). */
export interface ConvolutionPaths {
  kernel: number;
  products: number;
  implicit: number;
  taps: number;
  tiles: number;
}

export interface SessionInfo {
  backend: 'webgpu' | 'cpu';
  /** The GPU adapter, or the CPU backend and its threads. */
  adapter: string;
  dtype: 'f32' | 'f16';
  /** Why the CPU runs the network (where it does). */
  fallbackReason?: string;
  /** The CPU path's threads, and why only one where that is so. */
  threads?: number;
  threadsReason?: string | null;
  halfPrecisionError?: string;
  /** On WebGPU: how it runs the convolutions. */
  convolution?: GpuConvolution;
  maxBufferSize?: number;
  maxStorageBufferBindingSize?: number;
  /** Milliseconds the WebAssembly module took to start. */
  wasmMs: number;
  build: BuildInfo;
  ms: number;
}

export interface BuildInfo {
  /** The project's version. */
  version: string;
  /** The first 12 hex digits of the hash of the sources the module was built from (`rpl --version`). */
  source: string;
  /** 'webgpu': WebGPU, or the CPU on one thread; 'threads': the CPU on a pool of Workers. */
  module: 'webgpu' | 'threads';
}

/** A model file: null sizes and hashes where there was no file (random weights), or where a copy
 * was kept before hashes were noted. */
export interface ModelIdentity {
  name: string;
  bytes: number | null;
  /** The file's SHA-256, lowercase hex, as sha256sum prints it (null until known: loads from a
   * URL, File or Blob hash the file afterwards; provenance() waits for it). */
  sha256: string | null;
  /** Why the file could not be hashed (it changed or went away after the load). */
  hashError?: string;
}

export interface OutlierKind {
  name: string;
  /** Never in the demo model's training: how RPL meets a truly unknown object. */
  heldOut: boolean;
}

/** An outlier to paste: where it stands (its bottom centre) and its height, in pixels. */
export type PlacedOutlier = {
  x: number;
  y: number;
  size: number;
} & ({
  /** One of outlierKinds. */
  kind: string;
  /** Its colours and shape. */
  seed: number;
} | {
  /** The index of its cut-out in pasteOutliers' `cutouts`. */
  cutout: number;
});

export interface MeanChange {
  before: number;
  after: number;
  change: number;
}

export interface ObjectChange {
  pixels: number;
  /** Mean scores over the object's pixels. */
  inside: PerHead<MeanChange>;
  /** Mean scores over every other pixel (NaN where there is none). */
  outside: PerHead<MeanChange>;
  /** The class out1 gives most of the object's pixels, their share, and out1's mean softmax
   * probability of its label there. */
  out1Class: { id: number; name: string; share: number; confidence: number };
  /** The share of the known pixels (the truth's inliers, or every pixel off the object) where out2
   * gives out1's class (NaN where there are none). */
  sameClassOnInliers: number;
}

export interface Provenance extends BuildInfo {
  model: ModelIdentity | null;
}

export interface LoadProgress {
  /** 'downloading', then the reading of the weights. */
  phase: string;
  bytes: number;
  totalBytes: number;
  tensors: number;
  totalTensors: number;
}

export interface LoadOptions {
  /** The model's name (by default the file's or URL's). */
  name?: string;
  onProgress?: ((progress: LoadProgress) => void) | null;
  signal?: AbortSignal;
  /** Keep a float32 copy in this browser for the next visit. */
  keep?: boolean;
  /** URLs: keep the download in Cache Storage while the server's copy is the same (default true). */
  cache?: boolean;
}

export interface KeptModel {
  key: string;
  name: string;
  description: string;
  sourceBytes: number;
  /** The original file's SHA-256 (absent for copies kept by earlier versions). */
  sha256?: string;
  bytes: number;
  date: string;
}

export interface LoadedModel extends ModelIdentity {
  /** What the model is (width, classes, weights). */
  description: string;
  kept: KeptModel | null;
  keptFailure: string | null;
  ms: number;
}

export interface Scores {
  mode: ScoreMode;
  /** Whether the mode is a baseline, not the paper's score. */
  baseline: boolean;
  /** The lowest and highest score of both heads. */
  scoreRange: [number, number];
  ms: number;
}

export interface Segmentation extends Scores {
  width: number;
  height: number;
  /** The pixels the network saw (at the inference size). */
  image: ImageData;
  sourceWidth: number;
  sourceHeight: number;
  /** Why the image was shrunk, or ''. */
  shrunk: string;
  /** Cityscapes colours of each head's classes. */
  classImages: PerHead<ImageData>;
  /** Train ids present in either head's class map, ascending. */
  classesPresent: Uint8Array;
}

export interface PixelInfo {
  classes: PerHead<number>;
  names: PerHead<string>;
  probabilities: PerHead<Float32Array>;
  scores: PerHead<number>;
}

export interface Metrics {
  auroc: number;
  ap: number;
  fpr95: number;
  nOod: number;
  nInlier: number;
  /** (x, y) pairs, flattened. */
  roc: Float64Array;
  pr: Float64Array;
}

export interface Mask {
  width: number;
  height: number;
  /** 0 inlier, 1 OoD, 255 ignored. */
  values: Uint8Array;
}

export interface LegendEntry {
  id: number;
  name: string;
  colour: [number, number, number];
}

export declare class RplSession {
  static create(options?: SessionOptions): Promise<RplSession>;
  constructor(options?: SessionOptions);
  readonly ready: Promise<SessionInfo>;
  readonly info: SessionInfo | null;
  readonly model: (ModelIdentity & { description: string }) | null;
  readonly maxPixels: number;
  readonly legend: LegendEntry[];
  readonly outlierKinds: OutlierKind[];
  onFatal: ((error: RplError) => void) | null;

  loadModel(source: string | URL | Blob | ArrayBuffer | ArrayBufferView, options?: LoadOptions): Promise<LoadedModel>;
  keptModels(): Promise<KeptModel[]>;
  loadKept(key: string, options?: Pick<LoadOptions, 'onProgress' | 'signal'>): Promise<LoadedModel>;
  forgetModels(): Promise<{ kept: number; downloads: number }>;
  loadWeights(name: string, bytes: ArrayBuffer): Promise<LoadedModel>;
  loadRandomWeights(widthDivisor: number): Promise<LoadedModel>;

  inferenceSize(width: number, height: number, maxSide?: number): [number, number, string];
  segment(source: ImageSource, options?: { score?: ScoreMode; maxSide?: number; sourceSize?: [number, number] | null }): Promise<Segmentation>;
  rescore(score: ScoreMode): Promise<Scores>;
  scores(): Promise<{ classes: PerHead<Uint8Array>; scores: PerHead<Float32Array> }>;
  pixel(x: number, y: number): Promise<PixelInfo>;
  heatImage(head: Head, options?: { range?: [number, number]; opacity?: number; before?: boolean }): Promise<ImageData>;
  keepBefore(): Promise<void>;
  objectChange(object: Mask, options?: { truth?: Mask | null }): Promise<ObjectChange>;
  maskImage(head: Head, threshold: number): Promise<{ share: number; image: ImageData }>;
  evaluate(mask: ImageSource | Mask): Promise<PerHead<Metrics>>;
  maskValues(source: ImageSource): Promise<Mask>;
  pasteOutliers(image: ImageData, outliers: PlacedOutlier[], options?: { baseMask?: Mask | null; cutouts?: ImageData[] }): Promise<{ image: ImageData; mask: Mask; lastObject: Mask; pastedPixels: number }>;
  /** A region of `image` inside `outline` ([x, y] points in pixels) as a cut-out for pasteOutliers. */
  cutOut(image: ImageData, outline: [number, number][]): Promise<{ image: ImageData; pixels: number }>;
  npy(head: Head): Promise<Uint8Array<ArrayBuffer>>;
  runThrough(image: ImageData, stage: 'trunk' | 'aspp' | 'residual block' | 'decoder' | 'score'): Promise<{ ms: number; convolutions: ConvolutionPaths }>;
  memory(): Promise<{ wasmBytes: number; constructorRuns: number; deviceBytesReserved?: number; deviceBytesInUse?: number }>;
  /** The version, the module's source hash and the model's name and SHA-256. */
  provenance(): Promise<Provenance>;
  /** A Worker operation by name (worker.js), for tests and tools. */
  request(op: string, args?: object, transfer?: Transferable[], onProgress?: ((progress: LoadProgress) => void) | null): Promise<any>;

  restart(): Promise<SessionInfo>;
  dispose(): void;
}
