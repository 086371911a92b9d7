//! Refuses `.pth` files whose pickle names any callable outside the data-building ones that
//! `torch.save` writes. The reader never executes pickle code, but a file that tries to
//! (`os.system`, `builtins.eval`, ...) is hostile and is refused outright, not half-loaded.

use std::collections::HashMap;

/// Callables a state dict's pickle may name: tensor and storage rebuilding, containers,
/// dtypes, and the numpy scalars some training scripts save beside the weights.
const ALLOWED_GLOBALS: &[&str] = &[
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch.Size",
    "torch.storage.UntypedStorage",
    "torch.storage.TypedStorage",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
    "_codecs.encode",
    "builtins.set",
    "builtins.frozenset",
    "builtins.slice",
    "builtins.complex",
    "builtins.bytearray",
    "argparse.Namespace",
];

/// `torch.FloatStorage`, `torch.float32`, ...: storage classes and dtype names.
fn is_torch_type_name(module: &str, name: &str) -> bool {
    module == "torch"
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && (name.ends_with("Storage") || name.starts_with("float") || name.starts_with("bfloat") || name.starts_with("int")
            || name.starts_with("uint") || name == "bool" || name.starts_with("complex") || name == "half" || name == "double"
            || name == "long")
}

fn is_allowed(module: &str, name: &str) -> bool {
    is_torch_type_name(module, name) || ALLOWED_GLOBALS.iter().any(|g| g.rsplit_once('.') == Some((module, name)))
}

/// Why a checkpoint's pickle is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickleRefusal {
    /// It names a callable outside the allow-list: `module.name`.
    Callable(String),
    /// It uses a construct whose target cannot be checked (extension codes, computed names).
    Unverifiable(String),
    /// It is not a pickle stream at all (damaged or not a checkpoint).
    Malformed(String),
}

impl std::fmt::Display for PickleRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Callable(name) => write!(f, "its pickle calls `{name}`, which no state dict needs: refused, nothing was executed"),
            Self::Unverifiable(what) => write!(f, "its pickle uses {what}, whose target cannot be checked: refused"),
            Self::Malformed(what) => write!(f, "damaged pickle ({what})"),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Checks the pickles inside a `.pth` file: the zip format's `*/data.pkl`, the legacy tar
/// format's `pickle`, or the legacy raw format's leading pickles. Reads only those, not the
/// tensor data (the released checkpoint is 672 MB).
pub fn check_checkpoint<R: std::io::Read + std::io::Seek>(mut file: R) -> Result<(), PickleRefusal> {
    use std::io::{Read, SeekFrom};
    let io = |e: std::io::Error| PickleRefusal::Malformed(e.to_string());
    let mut head = [0u8; 262];
    let read = file.read(&mut head).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    if head[..read].starts_with(b"PK") {
        let mut archive = zip::ZipArchive::new(file).map_err(|e| PickleRefusal::Malformed(format!("zip: {e}")))?;
        let names: Vec<String> = archive
            .file_names()
            .filter_map(Result::ok)
            .map(|name| name.into_owned())
            .filter(|name| name == "data.pkl" || name.ends_with("/data.pkl"))
            .collect();
        if names.is_empty() {
            return Err(PickleRefusal::Malformed("the zip archive has no data.pkl".into()));
        }
        for name in names {
            let mut pickle = Vec::new();
            archive
                .by_name(&name)
                .and_then(|mut entry| entry.read_to_end(&mut pickle).map_err(Into::into))
                .map_err(|e| PickleRefusal::Malformed(format!("{name}: {e}")))?;
            scan_pickle(&pickle)?;
        }
        Ok(())
    } else if read == head.len() && &head[257..262] == b"ustar" {
        let mut archive = tar::Archive::new(file);
        let entries = archive.entries().map_err(|e| PickleRefusal::Malformed(format!("tar: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| PickleRefusal::Malformed(format!("tar: {e}")))?;
            let is_pickle = entry.path().map(|p| p.to_string_lossy() == "pickle").unwrap_or(false);
            if is_pickle {
                let mut pickle = Vec::new();
                entry.read_to_end(&mut pickle).map_err(|e| PickleRefusal::Malformed(format!("tar: {e}")))?;
                return scan_pickle(&pickle).map(|_| ());
            }
        }
        Err(PickleRefusal::Malformed("the tar archive has no pickle entry".into()))
    } else {
        // Legacy raw format: magic number, protocol, system info, the object, storage keys.
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut offset = 0;
        for _ in 0..5 {
            offset += scan_pickle(&bytes[offset..])?;
            if offset >= bytes.len() {
                break;
            }
        }
        Ok(())
    }
}

/// Walks one pickle's opcodes up to STOP without building anything; returns its length.
/// Every GLOBAL / INST / STACK_GLOBAL target must be allowed; the strings that STACK_GLOBAL
/// reads are tracked through the memo, and anything less direct is refused.
pub fn scan_pickle(data: &[u8]) -> Result<usize, PickleRefusal> {
    let mut r = Reader::new(data);
    // The last values pushed, as far as they are known strings (None: anything else).
    let mut recent: Vec<Option<String>> = Vec::new();
    let mut memo: HashMap<u64, Option<String>> = HashMap::new();
    let push = |recent: &mut Vec<Option<String>>, v: Option<String>| {
        recent.push(v);
        if recent.len() > 2 {
            recent.remove(0);
        }
    };
    loop {
        let op = r.byte()?;
        match op {
            b'.' => return Ok(r.pos),
            // Strings: their values matter to STACK_GLOBAL.
            0x8c => {
                let n = r.byte()? as usize;
                let s = r.text(n)?;
                push(&mut recent, Some(s));
            }
            b'X' => {
                let n = r.uint(4)? as usize;
                let s = r.text(n)?;
                push(&mut recent, Some(s));
            }
            0x8d => {
                let n = r.len8()?;
                let s = r.text(n)?;
                push(&mut recent, Some(s));
            }
            b'V' | b'S' => {
                let line = r.line()?;
                push(&mut recent, Some(line));
            }
            // Memo: a stored string stays known when fetched again.
            b'q' => {
                let i = r.uint(1)?;
                memo.insert(i, recent.last().cloned().flatten());
            }
            b'r' => {
                let i = r.uint(4)?;
                memo.insert(i, recent.last().cloned().flatten());
            }
            b'p' => {
                let i = r.line()?.trim().parse().map_err(|_| PickleRefusal::Malformed("PUT index".into()))?;
                memo.insert(i, recent.last().cloned().flatten());
            }
            0x94 => {
                let i = memo.len() as u64;
                memo.insert(i, recent.last().cloned().flatten());
            }
            b'h' => {
                let i = r.uint(1)?;
                push(&mut recent, memo.get(&i).cloned().flatten());
            }
            b'j' => {
                let i = r.uint(4)?;
                push(&mut recent, memo.get(&i).cloned().flatten());
            }
            b'g' => {
                let i: u64 = r.line()?.trim().parse().map_err(|_| PickleRefusal::Malformed("GET index".into()))?;
                push(&mut recent, memo.get(&i).cloned().flatten());
            }
            // Callables named in the stream.
            b'c' | b'i' => {
                let module = r.line()?;
                let name = r.line()?;
                check_global(&module, &name)?;
                push(&mut recent, None);
            }
            0x93 => {
                let (Some(Some(module)), Some(Some(name))) = (recent.first().cloned(), recent.get(1).cloned()) else {
                    return Err(PickleRefusal::Unverifiable("STACK_GLOBAL on computed names".into()));
                };
                check_global(&module, &name)?;
                recent.clear();
                push(&mut recent, None);
            }
            // PROTO and FRAME leave the stack alone.
            0x80 => r.advance(1)?,
            0x95 => r.advance(8)?,
            0x82..=0x84 => return Err(PickleRefusal::Unverifiable("the copyreg extension registry (EXT opcodes)".into())),
            // Everything else only needs its argument skipped.
            _ => {
                skip_argument(&mut r, op)?;
                push(&mut recent, None);
            }
        }
    }
}

fn check_global(module: &str, name: &str) -> Result<(), PickleRefusal> {
    if is_allowed(module, name) { Ok(()) } else { Err(PickleRefusal::Callable(format!("{module}.{name}"))) }
}

/// Skips the argument of an opcode that neither names a callable nor pushes a string.
fn skip_argument(r: &mut Reader, op: u8) -> Result<(), PickleRefusal> {
    match op {
        // No argument.
        b'(' | b'0' | b'1' | b'2' | b'N' | b'Q' | b'R' | b'a' | b'b' | b'd' | b'}' | b'e' | b'l' | b']' | b'o' | b's'
        | b't' | b')' | b'u' | 0x81 | 0x85..=0x89 | 0x8f..=0x92 | 0x97 | 0x98 => Ok(()),
        // Fixed-size arguments.
        b'K' => r.advance(1),
        b'M' => r.advance(2),
        b'J' => r.advance(4),
        b'G' => r.advance(8),
        // Newline-terminated arguments.
        b'F' | b'I' | b'L' | b'P' => r.line().map(|_| ()),
        // Length-prefixed arguments.
        b'U' | b'C' | 0x8a => {
            let n = r.uint(1)? as usize;
            r.advance(n)
        }
        b'T' | b'B' | 0x8b => {
            let n = r.uint(4)? as usize;
            r.advance(n)
        }
        0x8e | 0x96 => {
            let n = r.len8()?;
            r.advance(n)
        }
        other => Err(PickleRefusal::Malformed(format!("unknown opcode 0x{other:02x} at byte {}", r.pos - 1))),
    }
}

/// A pickle's bytes, read opcode by opcode (shared with [`super::torch_pickle`]).
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&[u8], PickleRefusal> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.data.len());
        let end = end.ok_or_else(|| PickleRefusal::Malformed(format!("ends inside an opcode at byte {}", self.pos)))?;
        let slice = &self.data[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    pub(crate) fn byte(&mut self) -> Result<u8, PickleRefusal> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn advance(&mut self, n: usize) -> Result<(), PickleRefusal> {
        self.take(n).map(|_| ())
    }

    pub(crate) fn uint(&mut self, n: usize) -> Result<u64, PickleRefusal> {
        Ok(self.take(n)?.iter().rev().fold(0u64, |acc, &b| (acc << 8) | b as u64))
    }

    /// A little-endian two's-complement integer of `n` bytes (LONG1, LONG4), at most 8 of them.
    pub(crate) fn signed(&mut self, n: usize) -> Result<i64, PickleRefusal> {
        if n > 8 {
            return Err(PickleRefusal::Malformed(format!("an integer of {n} bytes")));
        }
        let bytes = self.take(n)?;
        let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) { 0xff } else { 0 };
        let mut full = [fill; 8];
        full[..n].copy_from_slice(bytes);
        Ok(i64::from_le_bytes(full))
    }

    pub(crate) fn len8(&mut self) -> Result<usize, PickleRefusal> {
        usize::try_from(self.uint(8)?).map_err(|_| PickleRefusal::Malformed("length out of range".into()))
    }

    pub(crate) fn text(&mut self, n: usize) -> Result<String, PickleRefusal> {
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    pub(crate) fn line(&mut self) -> Result<String, PickleRefusal> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| PickleRefusal::Malformed("unterminated line".into()))?;
        let line = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(line)
    }
}
