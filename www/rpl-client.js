// The page's handle on the Worker: each call returns a promise of the Worker's reply.
export class RplClient {
  constructor(workerUrl = new URL('./worker.js', import.meta.url)) {
    this.worker = new Worker(workerUrl, { type: 'module' });
    this.pending = new Map();
    this.nextId = 1;
    this.worker.onmessage = ({ data }) => {
      const { resolve, reject } = this.pending.get(data.id);
      this.pending.delete(data.id);
      if (data.ok) resolve(data.result);
      else reject(new Error(data.error));
    };
    this.worker.onerror = (event) => {
      const error = new Error(`the inference worker failed: ${event.message}`);
      for (const { reject } of this.pending.values()) reject(error);
      this.pending.clear();
    };
  }

  request(op, args = {}, transfer = []) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, op, ...args }, transfer);
    });
  }

  /** Starts WebGPU, or the CPU backend where WebGPU is missing: {backend, adapter, ...}. */
  init({ preferCpu = false } = {}) {
    return this.request('init', { preferCpu });
  }

  /** Loads safetensors weights from bytes (an ArrayBuffer, transferred to the Worker). */
  loadWeights(name, bytes) {
    return this.request('load', { name, bytes }, [bytes]);
  }

  loadRandomWeights(widthDivisor) {
    return this.request('loadRandom', { widthDivisor });
  }

  /** Segments RGBA pixels (an ImageData). */
  segment(imageData) {
    const rgba = imageData.data.buffer.slice(0);
    return this.request('segment', { width: imageData.width, height: imageData.height, rgba }, [rgba]);
  }
}

/** Decodes an image file to its exact 8-bit pixels (no colour management, no premultiplication). */
export async function decodeImage(blob) {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext('2d');
  context.drawImage(bitmap, 0, 0);
  return context.getImageData(0, 0, bitmap.width, bitmap.height);
}
