//! NumPy `.npy` files of float32: the score format the public benchmarks ask for.

use std::io::{self, Read, Write};

const MAGIC: &[u8] = b"\x93NUMPY";
/// Header (magic, version, length, dict) padded to a multiple of this.
const ALIGN: usize = 64;

/// Writes a C-order little-endian float32 array.
pub fn write_f32(mut out: impl Write, shape: &[usize], values: &[f32]) -> io::Result<()> {
    assert_eq!(shape.iter().product::<usize>(), values.len(), "shape and data disagree");
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // magic (6) + version (2) + header length (2) + header + '\n' is a multiple of ALIGN.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(ALIGN) - unpadded));
    header.push('\n');
    out.write_all(MAGIC)?;
    out.write_all(&[1, 0])?;
    out.write_all(&(header.len() as u16).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    out.write_all(&bytes)
}

/// Reads a C-order little-endian float32 array written by NumPy or [`write_f32`]: (shape, values).
pub fn read_f32(mut input: impl Read) -> io::Result<(Vec<usize>, Vec<f32>)> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("not a float32 .npy file: {what}"));
    let mut preamble = [0u8; 8];
    input.read_exact(&mut preamble)?;
    if &preamble[..6] != MAGIC {
        return Err(invalid("no NUMPY magic"));
    }
    let header_len = match preamble[6] {
        1 => {
            let mut len = [0u8; 2];
            input.read_exact(&mut len)?;
            u16::from_le_bytes(len) as usize
        }
        2 | 3 => {
            let mut len = [0u8; 4];
            input.read_exact(&mut len)?;
            u32::from_le_bytes(len) as usize
        }
        _ => return Err(invalid("unknown version")),
    };
    let mut header = vec![0u8; header_len];
    input.read_exact(&mut header)?;
    let header = String::from_utf8_lossy(&header);
    if !header.contains("'descr': '<f4'") || !header.contains("'fortran_order': False") {
        return Err(invalid("only C-order '<f4' arrays are read"));
    }
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .ok_or_else(|| invalid("no shape"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| invalid("bad shape")))
        .collect::<io::Result<Vec<usize>>>()?;
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    if bytes.len() != shape.iter().product::<usize>() * 4 {
        return Err(invalid("data size does not match the shape"));
    }
    Ok((shape, bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()))
}
