//! The source hash: which code a build was made from, for `rpl --version`, the page and the API.
//! It is the SHA-256 of `sha256sum`'s listing of the sources, so anyone can recompute it:
//! `find Cargo.toml Cargo.lock build.rs src -type f | LC_ALL=C sort | xargs sha256sum | sha256sum`
//! (its first 12 hex digits).

use std::fmt::Write as _;
use std::path::Path;

use sha2::{Digest, Sha256};

/// The files and folders a build reads, relative to the crate's root.
const SOURCES: [&str; 4] = ["Cargo.toml", "Cargo.lock", "build.rs", "src"];

fn main() {
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&root);
    let mut files = Vec::new();
    for source in SOURCES {
        println!("cargo:rerun-if-changed={source}");
        collect(root, source, &mut files);
    }
    // Byte order of the paths, as `LC_ALL=C sort` puts them.
    files.sort();
    let mut listing = String::new();
    for file in &files {
        let bytes = std::fs::read(root.join(file)).unwrap_or_else(|e| panic!("reading {file} for the source hash: {e}"));
        writeln!(listing, "{}  {file}", hex(&Sha256::digest(&bytes))).expect("writing to a String");
    }
    let hash = hex(&Sha256::digest(listing.as_bytes()));
    println!("cargo:rustc-env=RPL_SOURCE_HASH={}", &hash[..12]);
}

/// Every file at `relative` (a file, or a folder walked whole), as `/`-separated paths.
fn collect(root: &Path, relative: &str, files: &mut Vec<String>) {
    let path = root.join(relative);
    if path.is_dir() {
        let entries = std::fs::read_dir(&path).unwrap_or_else(|e| panic!("listing {relative} for the source hash: {e}"));
        for entry in entries {
            let name = entry.expect("a directory entry").file_name();
            collect(root, &format!("{relative}/{}", name.to_string_lossy()), files);
        }
    } else if path.is_file() {
        files.push(relative.to_owned());
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut text, b| {
        let _ = write!(text, "{b:02x}");
        text
    })
}
