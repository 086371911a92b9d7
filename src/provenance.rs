//! What a result came from: the project's version, the hash of the sources this build was
//! made from (`build.rs` says how to recompute it), and a model file's SHA-256, the one
//! `sha256sum` prints for it, so a user can check that a checkpoint is the released one.

use std::io;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::weights::byte_source::ByteSource;

/// The project's version (Cargo.toml).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The first 12 hex digits of the source hash.
pub const SOURCE_HASH: &str = env!("RPL_SOURCE_HASH");
/// `0.1.0 (source 1a2b3c4d5e6f)`: the command line's `--version`.
pub const LONG_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (source ", env!("RPL_SOURCE_HASH"), ")");

/// Bytes hashed per read: a checkpoint is never held whole.
const CHUNK_BYTES: usize = 4 << 20;

/// A model file: its name, size and SHA-256 (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelIdentity {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// The version, the source hash and the model, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub version: &'static str,
    pub source: &'static str,
    pub model: Option<ModelIdentity>,
}

impl Provenance {
    pub fn new(model: Option<ModelIdentity>) -> Self {
        Self { version: VERSION, source: SOURCE_HASH, model }
    }
}

/// A source's SHA-256, hashed front to back in pieces that can be spread over time.
pub struct SourceDigest {
    hasher: Sha256,
    hashed: u64,
    len: u64,
}

impl SourceDigest {
    pub fn new(source: &dyn ByteSource) -> Self {
        Self { hasher: Sha256::new(), hashed: 0, len: source.len() }
    }

    /// Bytes hashed so far.
    pub fn hashed(&self) -> u64 {
        self.hashed
    }

    /// Hashes on up to byte `end` (at most the source's length).
    pub fn advance(&mut self, source: &dyn ByteSource, end: u64) -> io::Result<()> {
        let end = end.min(self.len);
        while self.hashed < end {
            let want = (end - self.hashed).min(CHUNK_BYTES as u64) as usize;
            let bytes = source.read_at(self.hashed, want)?;
            if bytes.is_empty() {
                // The file shrank since it was opened: a hash of part of it would be wrong.
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("the file ended at byte {} of {}", self.hashed, self.len)));
            }
            self.hasher.update(&bytes);
            self.hashed += bytes.len() as u64;
        }
        Ok(())
    }

    /// Hashes the rest; the digest as lowercase hex.
    pub fn finish(mut self, source: &dyn ByteSource) -> io::Result<String> {
        self.advance(source, self.len)?;
        Ok(hex(&self.hasher.finalize()))
    }
}

/// A whole source's SHA-256 as lowercase hex.
pub fn sha256_hex(source: &dyn ByteSource) -> io::Result<String> {
    SourceDigest::new(source).finish(source)
}

/// A model file's name (the file name), size and SHA-256.
#[cfg(not(target_arch = "wasm32"))]
pub fn identify_file(path: &std::path::Path) -> io::Result<ModelIdentity> {
    let file = crate::weights::byte_source::FileBytes::open(path)?;
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok(ModelIdentity { name, bytes: file.len(), sha256: sha256_hex(&file)? })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FIPS 180-2's "abc" example, and a source hashed across many pieces matches one piece.
    #[test]
    fn sha256_matches_the_standard_and_does_not_depend_on_the_pieces() {
        assert_eq!(sha256_hex(&b"abc".to_vec()).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let bytes: Vec<u8> = (0..(CHUNK_BYTES * 2 + 12345)).map(|i| (i * 7 % 251) as u8).collect();
        let whole = hex(&Sha256::digest(&bytes));
        let mut digest = SourceDigest::new(&bytes);
        for end in [0, 1, 4097, CHUNK_BYTES as u64 + 3, CHUNK_BYTES as u64 + 3, 2 * CHUNK_BYTES as u64] {
            digest.advance(&bytes, end).unwrap();
        }
        assert_eq!(digest.finish(&bytes).unwrap(), whole);
    }

    /// A source that shrinks under the digest is an error, not a hash of part of it.
    #[test]
    fn a_file_that_shrinks_is_an_error() {
        struct Shrunk;
        impl ByteSource for Shrunk {
            fn len(&self) -> u64 {
                100
            }
            fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
                Ok(vec![0; len.min(60usize.saturating_sub(offset as usize))])
            }
        }
        let error = sha256_hex(&Shrunk).unwrap_err();
        assert!(error.to_string().contains("byte 60 of 100"), "{error}");
    }
}
