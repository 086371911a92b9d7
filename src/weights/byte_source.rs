//! A checkpoint's bytes, read in pieces wherever they are: a file natively, the page's `File`
//! (a `Blob`, sliced) in the browser's Worker, or memory. Readers ask for the header, the
//! directory and one tensor at a time, so a 672 MB checkpoint is never held whole.

use std::io;

pub trait ByteSource {
    /// Bytes in the source.
    fn len(&self) -> u64;

    /// `len` bytes from `offset`, or fewer where the source ends first.
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>>;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ByteSource for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let bytes = self.as_slice();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
        let end = start.saturating_add(len).min(bytes.len());
        Ok(bytes[start..end].to_vec())
    }
}

/// A file on disk, read at offsets.
#[cfg(not(target_arch = "wasm32"))]
pub struct FileBytes {
    file: std::fs::File,
    len: u64,
}

#[cfg(not(target_arch = "wasm32"))]
impl FileBytes {
    pub fn open(path: &std::path::Path) -> io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self { file, len })
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl ByteSource for FileBytes {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        // `&File` reads and seeks: no lock needed for one reader at a time.
        let mut file = &self.file;
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::with_capacity(len.min(self.len.saturating_sub(offset) as usize));
        file.take(len as u64).read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

/// A `Blob` (the page's `File`, or one in the origin-private file system), read slice by slice
/// with `FileReaderSync`: Workers only.
#[cfg(target_arch = "wasm32")]
pub struct BlobBytes {
    blob: web_sys::Blob,
    reader: web_sys::FileReaderSync,
}

#[cfg(target_arch = "wasm32")]
impl BlobBytes {
    pub fn new(blob: web_sys::Blob) -> io::Result<Self> {
        let reader = web_sys::FileReaderSync::new().map_err(|e| io::Error::other(js_message(&e)))?;
        Ok(Self { blob, reader })
    }
}

/// A thrown JS value's message.
#[cfg(target_arch = "wasm32")]
pub(crate) fn js_message(error: &wasm_bindgen::JsValue) -> String {
    js_sys::Reflect::get(error, &"message".into()).ok().and_then(|m| m.as_string()).unwrap_or_else(|| format!("{error:?}"))
}

#[cfg(target_arch = "wasm32")]
impl ByteSource for BlobBytes {
    fn len(&self) -> u64 {
        self.blob.size() as u64
    }

    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let end = offset.saturating_add(len as u64).min(self.len());
        let slice = self.blob.slice_with_f64_and_f64(offset as f64, end as f64).map_err(|e| io::Error::other(js_message(&e)))?;
        // NotReadableError here: the file changed or went away since it was picked.
        let buffer = self.reader.read_as_array_buffer(&slice).map_err(|e| io::Error::other(js_message(&e)))?;
        Ok(js_sys::Uint8Array::new(&buffer).to_vec())
    }
}

/// `Read + Seek` over a source, for parsers that want a stream (the zip directory).
pub struct SourceReader<'a> {
    source: &'a dyn ByteSource,
    position: u64,
}

impl<'a> SourceReader<'a> {
    pub fn new(source: &'a dyn ByteSource) -> Self {
        Self { source, position: 0 }
    }
}

impl io::Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let bytes = self.source.read_at(self.position, buf.len())?;
        buf[..bytes.len()].copy_from_slice(&bytes);
        self.position += bytes.len() as u64;
        Ok(bytes.len())
    }
}

impl io::Seek for SourceReader<'_> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let target = match to {
            io::SeekFrom::Start(at) => Some(at),
            io::SeekFrom::End(delta) => self.source.len().checked_add_signed(delta),
            io::SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        self.position = target.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.position)
    }
}
