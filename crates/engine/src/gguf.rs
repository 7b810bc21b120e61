//! GGUF reader: memory-maps the file, parses metadata and tensor infos, and hands out tensor
//! bytes without copying.
//!
//! Every read is bounds-checked: a truncated or corrupt file gives [`Error::Gguf`] naming the file
//! and what is wrong, never a panic.

use crate::error::{Error, Result};
use crate::quant::GgmlType;
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    /// f32 or f64.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// An array of values.
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F64(v) => Some(v),
            Value::U64(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            _ => None,
        }
    }
    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// Where one tensor lies in the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// GGUF dims, innermost first (`[cols, rows]` for a matrix).
    pub dims: Vec<usize>,
    /// Storage type.
    pub dtype: GgmlType,
    /// Byte offset from the start of the file.
    pub offset: usize,
    /// Byte length.
    pub len: usize,
}

/// An opened GGUF file.
pub struct GgufFile {
    /// Path, for error messages.
    pub path: PathBuf,
    /// The mapping every tensor borrows from.
    pub mmap: Arc<Mmap>,
    /// Metadata key/values.
    pub metadata: HashMap<String, Value>,
    /// Tensor infos by name.
    pub tensors: HashMap<String, TensorInfo>,
    /// Tensor names in file order (for writers that keep it).
    pub tensor_order: Vec<String>,
    /// The metadata section's bytes (for writers that copy it unchanged).
    pub metadata_bytes: std::ops::Range<usize>,
    /// Metadata entries.
    pub n_kv: usize,
    /// Data alignment.
    pub alignment: usize,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: impl Into<String>) -> Error {
        Error::Gguf { path: self.path.to_path_buf(), reason: what.into() }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err(format!("truncated: {what} needs {n} bytes at offset {} but the file has {}", self.pos, self.buf.len())))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)? as usize;
        let bytes = self.take(n, what)?;
        // Some vocabularies hold invalid UTF-8 pieces; keep them lossily rather than refuse the file.
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U64(self.take(1, key)?[0] as u64),
            1 => Value::I64(self.take(1, key)?[0] as i8 as i64),
            2 => Value::U64(u16::from_le_bytes(self.take(2, key)?.try_into().unwrap()) as u64),
            3 => Value::I64(i16::from_le_bytes(self.take(2, key)?.try_into().unwrap()) as i64),
            4 => Value::U64(self.u32(key)? as u64),
            5 => Value::I64(self.u32(key)? as i32 as i64),
            6 => Value::F64(f32::from_le_bytes(self.take(4, key)?.try_into().unwrap()) as f64),
            7 => Value::Bool(self.take(1, key)?[0] != 0),
            8 => Value::Str(self.string(key)?),
            9 => {
                if depth > 2 {
                    return Err(self.err(format!("metadata `{key}`: arrays nested too deeply")));
                }
                let ety = self.u32(key)?;
                let n = self.u64(key)? as usize;
                // Each element takes at least one byte: a count beyond the file is corrupt.
                if n > self.buf.len() - self.pos {
                    return Err(self.err(format!("metadata `{key}`: array of {n} elements exceeds the file")));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(ety, key, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(self.u64(key)? as i64),
            12 => Value::F64(f64::from_le_bytes(self.take(8, key)?.try_into().unwrap())),
            t => return Err(self.err(format!("metadata `{key}`: unknown value type {t}"))),
        })
    }
}

impl GgufFile {
    /// Opens and parses a GGUF file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
        // SAFETY: the file is opened read-only; like every mmap-based loader we assume it is not
        // truncated underneath us while mapped.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
        let mut c = Cursor { buf: &mmap, pos: 0, path };
        let magic = c.take(4, "magic")?;
        if magic != b"GGUF" {
            return Err(c.err(format!("not a GGUF file (magic {:?})", String::from_utf8_lossy(magic))));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(c.err(format!("unsupported GGUF version {version}")));
        }
        let n_tensors = c.u64("tensor count")? as usize;
        let n_kv = c.u64("metadata count")? as usize;
        if n_tensors > 1 << 20 || n_kv > 1 << 20 {
            return Err(c.err(format!("implausible header: {n_tensors} tensors, {n_kv} metadata entries")));
        }
        let mut metadata = HashMap::with_capacity(n_kv);
        let kv_start = c.pos;
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32(&key)?;
            let v = c.value(ty, &key, 0)?;
            metadata.insert(key, v);
        }
        let kv_end = c.pos;
        let mut infos = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let nd = c.u32(&name)? as usize;
            if nd == 0 || nd > 4 {
                return Err(c.err(format!("tensor `{name}`: {nd} dimensions")));
            }
            let mut dims = Vec::with_capacity(nd);
            for _ in 0..nd {
                dims.push(c.u64(&name)? as usize);
            }
            let ty = c.u32(&name)?;
            let dtype = GgmlType::from_u32(ty).ok_or_else(|| c.err(format!("tensor `{name}`: unsupported type id {ty}")))?;
            let off = c.u64(&name)? as usize;
            infos.push((name, dims, dtype, off));
        }
        let align = metadata.get("general.alignment").and_then(Value::as_u64).unwrap_or(32) as usize;
        if align == 0 {
            return Err(c.err("general.alignment is 0"));
        }
        let data_start = c.pos.div_ceil(align) * align;
        let mut tensors = HashMap::with_capacity(n_tensors);
        let tensor_order: Vec<String> = infos.iter().map(|i| i.0.clone()).collect();
        for (name, dims, dtype, off) in infos {
            let numel = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            let len = numel.and_then(|n| dtype.row_bytes(n));
            let Some(len) = len else {
                return Err(c.err(format!("tensor `{name}`: dims {dims:?} do not fit type {dtype:?}")));
            };
            let offset = data_start + off;
            if offset.checked_add(len).is_none_or(|e| e > mmap.len()) {
                return Err(c.err(format!("truncated: tensor `{name}` ends at byte {} but the file has {} bytes", offset.saturating_add(len), mmap.len())));
            }
            tensors.insert(name, TensorInfo { dims, dtype, offset, len });
        }
        drop(c);
        Ok(GgufFile { path: path.to_path_buf(), mmap: Arc::new(mmap), metadata, tensors, tensor_order, metadata_bytes: kv_start..kv_end, n_kv, alignment: align })
    }

    /// A metadata value, or an error naming the missing key.
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.metadata.get(key).ok_or_else(|| Error::Gguf { path: self.path.clone(), reason: format!("missing metadata `{key}`") })
    }

    /// A required unsigned integer.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get(key)?.as_u64().ok_or_else(|| self.bad(key, "an unsigned integer"))
    }

    /// A required float.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.get(key)?.as_f64().ok_or_else(|| self.bad(key, "a number"))
    }

    /// A required string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get(key)?.as_str().ok_or_else(|| self.bad(key, "a string"))
    }

    /// An optional value.
    pub fn opt(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    fn bad(&self, key: &str, want: &str) -> Error {
        Error::Gguf { path: self.path.clone(), reason: format!("metadata `{key}` is not {want}") }
    }

    /// A required string array.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<String>> {
        match self.get(key)? {
            Value::Array(v) => v.iter().map(|x| x.as_str().map(str::to_owned).ok_or_else(|| self.bad(key, "an array of strings"))).collect(),
            _ => Err(self.bad(key, "an array")),
        }
    }

    /// An optional numeric array as f32.
    pub fn opt_f32_array(&self, key: &str) -> Result<Option<Vec<f32>>> {
        match self.opt(key) {
            None => Ok(None),
            Some(Value::Array(v)) => v.iter().map(|x| x.as_f64().map(|f| f as f32).ok_or_else(|| self.bad(key, "an array of numbers"))).collect::<Result<Vec<_>>>().map(Some),
            Some(_) => Err(self.bad(key, "an array")),
        }
    }
}
