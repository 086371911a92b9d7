// Models kept in this browser for the next visit: one float32 safetensors file per model in the
// origin-private file system (OPFS), and index.json naming them. Written from the Worker, whose
// synchronous access handles take each tensor at its offset as it is read.
const DIRECTORY = 'rpl-models';
const INDEX = 'index.json';
const MIB = 1 << 20;

async function directory() {
  const root = await navigator.storage.getDirectory();
  return root.getDirectoryHandle(DIRECTORY, { create: true });
}

/** [{key, name, description, sourceBytes, sha256, bytes, date}] of the models kept, newest last
 * (sha256: the original file's). */
export async function listKept() {
  try {
    const file = await (await (await directory()).getFileHandle(INDEX)).getFile();
    return JSON.parse(await file.text());
  } catch {
    return [];
  }
}

async function writeIndex(folder, entries) {
  const writable = await (await folder.getFileHandle(INDEX, { create: true })).createWritable();
  await writable.write(JSON.stringify(entries));
  await writable.close();
}

/** A file's key: its size and a SHA-256 of its first and last MiB (a 672 MB file is never hashed whole). */
export async function fileKey(file) {
  const head = new Uint8Array(await file.slice(0, MIB).arrayBuffer());
  const tail = new Uint8Array(await file.slice(Math.max(0, file.size - MIB)).arrayBuffer());
  const both = new Uint8Array(head.length + tail.length);
  both.set(head);
  both.set(tail, head.length);
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', both));
  return `${file.size}-${[...digest.subarray(0, 16)].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** A kept copy being written: write(offset, bytes) as tensors arrive, then commit() or discard().
 * A write the storage refuses (full, or no OPFS) stops the copy, never the load: `failure` says why. */
export async function startKeeping(key) {
  let folder;
  let handle;
  const file = `${key}.safetensors`;
  const keeper = { failure: null };
  try {
    folder = await directory();
    handle = await (await folder.getFileHandle(file, { create: true })).createSyncAccessHandle();
    handle.truncate(0);
  } catch (e) {
    keeper.failure = `this browser cannot store it (${e.message})`;
  }
  keeper.write = (offset, bytes) => {
    if (keeper.failure) return;
    try {
      const written = handle.write(bytes, { at: offset });
      if (written !== bytes.length) throw new Error(`the storage took ${written} of ${bytes.length} bytes`);
    } catch (e) {
      keeper.failure = `the browser's storage refused it (${e.message})`;
    }
  };
  keeper.discard = async () => {
    try {
      handle?.close();
      await folder?.removeEntry(file);
    } catch {
      // Nothing was kept: nothing to remove.
    }
  };
  keeper.commit = async (entry) => {
    if (keeper.failure) {
      await keeper.discard();
      return null;
    }
    handle.flush();
    const bytes = handle.getSize();
    handle.close();
    const kept = { ...entry, key, file, bytes, date: new Date().toISOString() };
    await writeIndex(folder, [...(await listKept()).filter((e) => e.key !== key), kept]);
    return kept;
  };
  return keeper;
}

/** Adds `fields` to a kept model's index entry (its hash, known after the load). */
export async function noteKept(key, fields) {
  const entries = await listKept();
  const entry = entries.find((e) => e.key === key);
  if (!entry) return;
  Object.assign(entry, fields);
  await writeIndex(await directory(), entries);
}

/** {entry, file}: a kept model's index entry and its File. */
export async function keptModel(key) {
  const entry = (await listKept()).find((e) => e.key === key);
  if (!entry) throw Object.assign(new Error('that model is no longer kept in this browser'), { code: 'no-model' });
  const file = await (await (await directory()).getFileHandle(entry.file)).getFile();
  return { entry, file };
}

/** Removes every kept model. */
export async function forgetKept() {
  const root = await navigator.storage.getDirectory();
  await root.removeEntry(DIRECTORY, { recursive: true }).catch((e) => {
    if (e.name !== 'NotFoundError') throw e;
  });
}
