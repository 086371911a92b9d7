//! The state dict inside a `torch.save` pickle, read without executing anything: a small pickle
//! machine that knows containers, numbers, strings and tensor rebuilding, and treats every other
//! callable as an opaque value. Run [`super::pickle_guard::scan_pickle`] first: it refuses any
//! pickle that names a callable outside the allow-list, before this builds anything.

use std::collections::HashMap;

use super::pickle_guard::{PickleRefusal, Reader};

fn malformed(what: impl Into<String>) -> PickleRefusal {
    PickleRefusal::Malformed(what.into())
}

/// A storage's element type, from its class name (`torch.FloatStorage`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    F32,
    F16,
    BF16,
    F64,
    /// Integer or boolean storage of this many bytes per element (BatchNorm's step counter).
    Other(usize, &'static str),
}

impl StorageDtype {
    fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" | "float32" | "float" => Self::F32,
            "HalfStorage" | "float16" | "half" => Self::F16,
            "BFloat16Storage" | "bfloat16" => Self::BF16,
            "DoubleStorage" | "float64" | "double" => Self::F64,
            "LongStorage" | "int64" | "long" => Self::Other(8, "int64"),
            "IntStorage" | "int32" => Self::Other(4, "int32"),
            "ShortStorage" | "int16" => Self::Other(2, "int16"),
            "CharStorage" | "int8" => Self::Other(1, "int8"),
            "ByteStorage" | "uint8" => Self::Other(1, "uint8"),
            "BoolStorage" | "bool" => Self::Other(1, "bool"),
            _ => return None,
        })
    }

    pub fn element_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::F64 => 8,
            Self::Other(bytes, _) => bytes,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
            Self::F64 => "float64",
            Self::Other(_, name) => name,
        }
    }
}

/// Where a tensor's values lie: a run of elements in one storage (the zip entry `data/KEY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRecord {
    pub storage_key: String,
    pub storage_type: StorageDtype,
    /// Elements the storage holds, as the pickle declares.
    pub storage_elements: usize,
    /// First element of the tensor in its storage.
    pub offset: usize,
    pub shape: Vec<usize>,
    /// Whether the elements are in row-major order without gaps (every state dict `torch.save`
    /// writes; anything else is refused by name).
    pub contiguous: bool,
}

impl TensorRecord {
    pub fn elements(&self) -> usize {
        self.shape.iter().fold(1usize, |n, &d| n.saturating_mul(d))
    }
}

#[derive(Debug, Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float,
    Str(String),
    Bytes,
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String),
    Storage { key: String, storage_type: StorageDtype, elements: usize },
    Tensor(TensorRecord),
    /// What calling any other allowed callable gives: kept, never looked into.
    Opaque,
    Mark,
}

impl Value {
    /// This value and every value inside it.
    fn size(&self) -> usize {
        1 + match self {
            Self::Tuple(items) | Self::List(items) => items.iter().map(Value::size).sum(),
            Self::Dict(items) => items.iter().map(|(k, v)| k.size() + v.size()).sum(),
            _ => 0,
        }
    }
}

/// Every tensor of the pickle's top-level dictionary and the dictionaries nested in it, by
/// dotted name (`model.module.branch1.mod1.conv1.weight`), in the order the pickle lists them.
pub fn read_state_dict(pickle: &[u8]) -> Result<Vec<(String, TensorRecord)>, PickleRefusal> {
    let root = Machine::default().run(pickle)?;
    let mut tensors = Vec::new();
    collect(&root, "", &mut tensors, 0);
    Ok(tensors)
}

/// The deepest dictionary nesting looked into (a state dict sits at most two levels down).
const MAX_NESTING: usize = 8;

fn collect(value: &Value, prefix: &str, out: &mut Vec<(String, TensorRecord)>, depth: usize) {
    match value {
        Value::Tensor(record) if !prefix.is_empty() => out.push((prefix.to_string(), record.clone())),
        Value::Dict(items) if depth < MAX_NESTING => {
            for (key, item) in items {
                if let Value::Str(key) = key {
                    let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    collect(item, &name, out, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// The most values the memo may hand out copies of: a state dict's pickle fetches a few per tensor.
const MAX_COPIED_VALUES: usize = 10_000_000;

#[derive(Default)]
struct Machine {
    stack: Vec<Value>,
    memo: HashMap<u64, Value>,
    /// Values copied out of the memo so far.
    copied: usize,
}

impl Machine {
    fn run(mut self, data: &[u8]) -> Result<Value, PickleRefusal> {
        let mut r = Reader::new(data);
        loop {
            let at = r.pos;
            let op = r.byte()?;
            match op {
                b'.' => return self.pop(),
                0x80 => r.advance(1)?,
                0x95 => r.advance(8)?,
                b'(' => self.stack.push(Value::Mark),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                0x8f => self.stack.push(Value::Opaque),
                b'J' => self.stack.push(Value::Int(r.uint(4)? as u32 as i32 as i64)),
                b'K' => self.stack.push(Value::Int(r.uint(1)? as i64)),
                b'M' => self.stack.push(Value::Int(r.uint(2)? as i64)),
                0x8a => {
                    let n = r.uint(1)? as usize;
                    let value = r.signed(n)?;
                    self.stack.push(Value::Int(value));
                }
                0x8b => {
                    let n = r.uint(4)? as usize;
                    let value = r.signed(n)?;
                    self.stack.push(Value::Int(value));
                }
                b'I' | b'L' => {
                    let line = r.line()?;
                    let text = line.trim().trim_end_matches('L');
                    self.stack.push(match text {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        _ => Value::Int(text.parse().map_err(|_| malformed(format!("bad integer `{text}` at byte {at}")))?),
                    });
                }
                // Floats (a learning rate, a loss) never locate weights: kept as placeholders.
                b'G' => {
                    r.advance(8)?;
                    self.stack.push(Value::Float);
                }
                b'F' => {
                    r.line()?;
                    self.stack.push(Value::Float);
                }
                0x8c | b'U' => {
                    let n = r.uint(1)? as usize;
                    self.push_text(r.take(n)?);
                }
                b'X' | b'T' => {
                    let n = r.uint(4)? as usize;
                    self.push_text(r.take(n)?);
                }
                0x8d => {
                    let n = r.len8()?;
                    self.push_text(r.take(n)?);
                }
                b'V' | b'S' => {
                    let line = r.line()?;
                    self.stack.push(Value::Str(line.trim_matches(|c| c == '\'' || c == '"').to_string()));
                }
                b'C' => {
                    let n = r.uint(1)? as usize;
                    r.advance(n)?;
                    self.stack.push(Value::Bytes);
                }
                b'B' => {
                    let n = r.uint(4)? as usize;
                    r.advance(n)?;
                    self.stack.push(Value::Bytes);
                }
                0x8e | 0x96 => {
                    let n = r.len8()?;
                    r.advance(n)?;
                    self.stack.push(Value::Bytes);
                }
                b'q' => self.put(r.uint(1)?)?,
                b'r' => self.put(r.uint(4)?)?,
                b'p' => self.put(r.line()?.trim().parse().map_err(|_| malformed("bad PUT index"))?)?,
                0x94 => self.put(self.memo.len() as u64)?,
                b'h' => self.get(r.uint(1)?)?,
                b'j' => self.get(r.uint(4)?)?,
                b'g' => self.get(r.line()?.trim().parse().map_err(|_| malformed("bad GET index"))?)?,
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.stack.last().cloned().ok_or_else(|| malformed("DUP on an empty stack"))?;
                    self.stack.push(top);
                }
                b't' | 0x91 => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let at = self.stack.len().checked_sub(n).ok_or_else(|| malformed("TUPLE on too short a stack"))?;
                    let items = self.stack.split_off(at);
                    self.stack.push(Value::Tuple(items));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Dict(pairs(items)));
                }
                b'a' => {
                    let item = self.pop()?;
                    self.extend(vec![item])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    self.extend(items)?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.extend(vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.extend(items)?;
                }
                b'c' => {
                    let module = r.line()?;
                    let name = r.line()?;
                    self.stack.push(Value::Global(format!("{module}.{name}")));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(malformed("STACK_GLOBAL on values that are not names"));
                    };
                    self.stack.push(Value::Global(format!("{module}.{name}")));
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.stack.push(call(callable, args)?);
                }
                0x81 => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.stack.push(call(class, args)?);
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.stack.push(call(class, args)?);
                }
                b'i' => {
                    r.line()?;
                    r.line()?;
                    self.pop_mark()?;
                    self.stack.push(Value::Opaque);
                }
                b'o' => {
                    self.pop_mark()?;
                    self.stack.push(Value::Opaque);
                }
                // An object's state (OrderedDict's `_metadata`, a Namespace's fields): not weights.
                b'b' => {
                    self.pop()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(persistent_load(pid)?);
                }
                b'P' => return Err(malformed("text persistent ids (protocol 0) are not written by torch.save")),
                other => return Err(malformed(format!("unsupported pickle opcode 0x{other:02x} at byte {at}"))),
            }
        }
    }

    fn push_text(&mut self, bytes: &[u8]) {
        self.stack.push(Value::Str(String::from_utf8_lossy(bytes).into_owned()));
    }

    fn pop(&mut self) -> Result<Value, PickleRefusal> {
        match self.stack.pop() {
            Some(Value::Mark) | None => Err(malformed("the pickle pops more than it pushed")),
            Some(value) => Ok(value),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleRefusal> {
        let mark = self.stack.iter().rposition(|v| matches!(v, Value::Mark)).ok_or_else(|| malformed("no MARK on the stack"))?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items)
    }

    // Memo entries are copies: a container changed after it was memoised is seen unchanged when
    // fetched again, which no state dict's pickle does.
    fn put(&mut self, index: u64) -> Result<(), PickleRefusal> {
        let top = self.stack.last().cloned().ok_or_else(|| malformed("PUT on an empty stack"))?;
        self.memo.insert(index, top);
        Ok(())
    }

    fn get(&mut self, index: u64) -> Result<(), PickleRefusal> {
        let value = self.memo.get(&index).cloned().ok_or_else(|| malformed(format!("GET of memo entry {index}, never stored")))?;
        // Copies of copies grow exponentially in a hostile pickle: bounded, as a state dict never nears it.
        self.copied += value.size();
        if self.copied > MAX_COPIED_VALUES {
            return Err(malformed(format!("more than {MAX_COPIED_VALUES} values copied from the memo")));
        }
        self.stack.push(value);
        Ok(())
    }

    /// APPEND(S) to a list or SETITEM(S) on a dictionary: `items` are values or key-value pairs.
    fn extend(&mut self, items: Vec<Value>) -> Result<(), PickleRefusal> {
        match self.stack.last_mut() {
            Some(Value::List(list)) => list.extend(items),
            Some(Value::Dict(dict)) => dict.extend(pairs(items)),
            Some(Value::Opaque) => {}
            _ => return Err(malformed("items added to something that is neither a list nor a dictionary")),
        }
        Ok(())
    }
}

fn pairs(items: Vec<Value>) -> Vec<(Value, Value)> {
    let mut items = items.into_iter();
    std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
}

fn int(value: &Value, what: &str) -> Result<i64, PickleRefusal> {
    match value {
        Value::Int(i) => Ok(*i),
        Value::Bool(b) => Ok(i64::from(*b)),
        _ => Err(malformed(format!("{what} is not an integer"))),
    }
}

fn sizes(value: &Value, what: &str) -> Result<Vec<usize>, PickleRefusal> {
    let Value::Tuple(items) = value else { return Err(malformed(format!("{what} is not a tuple"))) };
    items.iter().map(|v| usize::try_from(int(v, what)?).map_err(|_| malformed(format!("{what} is negative")))).collect()
}

/// `('storage', torch.FloatStorage, KEY, LOCATION, NUMEL)`: the storage saved as `data/KEY`.
fn persistent_load(pid: Value) -> Result<Value, PickleRefusal> {
    let Value::Tuple(items) = pid else { return Err(malformed("a persistent id that is not a tuple")) };
    match items.as_slice() {
        [Value::Str(kind), Value::Global(class), key, _location, elements, ..] if kind == "storage" => {
            let class_name = class.rsplit('.').next().unwrap_or(class);
            let storage_type = StorageDtype::from_class(class_name).ok_or_else(|| malformed(format!("unknown storage type {class}")))?;
            let key = match key {
                Value::Str(key) => key.clone(),
                Value::Int(i) => i.to_string(),
                _ => return Err(malformed("a storage key that is not a name")),
            };
            let elements = usize::try_from(int(elements, "a storage size")?).map_err(|_| malformed("a negative storage size"))?;
            Ok(Value::Storage { key, storage_type, elements })
        }
        _ => Err(malformed("a persistent id that is not a storage")),
    }
}

/// REDUCE and NEWOBJ: the callables that build tensors and dictionaries; every other allowed one
/// (dtypes, numpy scalars, Namespace) gives an opaque value.
fn call(callable: Value, args: Value) -> Result<Value, PickleRefusal> {
    let Value::Global(name) = callable else { return Ok(Value::Opaque) };
    let args = match args {
        Value::Tuple(items) => items,
        _ => Vec::new(),
    };
    match name.as_str() {
        "torch._utils._rebuild_tensor" | "torch._utils._rebuild_tensor_v2" => rebuild_tensor(&args),
        "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
            args.into_iter().next().ok_or_else(|| malformed("a parameter without its tensor"))
        }
        "collections.OrderedDict" => Ok(match args.into_iter().next() {
            Some(Value::List(items)) => Value::Dict(
                items
                    .into_iter()
                    .filter_map(|item| match item {
                        Value::Tuple(mut kv) if kv.len() == 2 => {
                            let value = kv.pop()?;
                            Some((kv.pop()?, value))
                        }
                        _ => None,
                    })
                    .collect(),
            ),
            _ => Value::Dict(Vec::new()),
        }),
        _ => Ok(Value::Opaque),
    }
}

/// `(storage, storage_offset, size, stride, ...)`.
fn rebuild_tensor(args: &[Value]) -> Result<Value, PickleRefusal> {
    let [Value::Storage { key, storage_type, elements }, offset, size, stride, ..] = args else {
        return Err(malformed("a tensor rebuilt from something that is not a storage"));
    };
    let shape = sizes(size, "a tensor's size")?;
    let stride = sizes(stride, "a tensor's stride")?;
    let mut expected = 1;
    let mut contiguous = stride.len() == shape.len();
    for (&extent, &step) in shape.iter().zip(&stride).rev() {
        contiguous &= extent <= 1 || step == expected;
        expected *= extent;
    }
    let offset = usize::try_from(int(offset, "a storage offset")?).map_err(|_| malformed("a negative storage offset"))?;
    Ok(Value::Tensor(TensorRecord {
        storage_key: key.clone(),
        storage_type: *storage_type,
        storage_elements: *elements,
        offset,
        shape,
        contiguous,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_copies_from_the_memo_are_bounded() {
        // [], then 40 times: a list of two copies of the last one (2^40 values if copied freely).
        let mut pickle = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..40 {
            pickle.extend([b'(', b'h', 0, b'h', 0, b'l', b'q', 0]);
        }
        pickle.push(b'.');
        let refusal = read_state_dict(&pickle).unwrap_err();
        assert!(refusal.to_string().contains("values copied from the memo"), "{refusal}");
    }
}
