//! Weights as the engine holds them: typed byte ranges borrowed from a memory map (GGUF,
//! safetensors) or owned, never dequantized up front.

use crate::quant::{dequantize_row, GgmlType};
use memmap2::Mmap;
use std::sync::Arc;

/// The bytes behind a weight.
#[derive(Clone)]
pub enum Storage {
    /// A mapped file shared by all of its tensors.
    Mapped(Arc<Mmap>),
    /// Bytes owned in memory (tiny test models, converted tensors).
    Owned(Arc<Vec<u8>>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }

    /// Tells the kernel this process no longer needs the mapped pages of `range` (whole pages
    /// inside it), so bytes that were copied elsewhere stop counting in its resident memory.
    fn release(&self, range: std::ops::Range<usize>) {
        if let Storage::Mapped(m) = self {
            const PAGE: usize = 4096;
            let start = range.start.div_ceil(PAGE) * PAGE;
            let end = range.end / PAGE * PAGE;
            if end > start {
                // SAFETY: the map is read-only and file-backed, so dropping its pages loses
                // nothing: a later read faults them in again from the file.
                let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
            }
        }
    }
}

/// How a weight's bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Row after row, as the file stores them (ggml's layout).
    Rows,
    /// Groups of 8 interleaved rows (Q4_1, Q8_0), for the CPU kernels ([`crate::packed`]).
    Packed,
}

/// A 2-D weight matrix (`rows` outputs x `cols` inputs, row-major) or a vector (`rows` = 1).
#[derive(Clone)]
pub struct Weight {
    /// Storage type.
    pub ty: GgmlType,
    /// Number of rows (output features).
    pub rows: usize,
    /// Number of columns (input features).
    pub cols: usize,
    storage: Storage,
    offset: usize,
    row_bytes: usize,
    layout: Layout,
}

impl std::fmt::Debug for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Weight({:?}, {}x{})", self.ty, self.rows, self.cols)
    }
}

impl Weight {
    /// A weight over `storage[offset..]`. The caller has checked that the range is in bounds and
    /// that `cols` is a whole number of blocks.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, storage: Storage, offset: usize) -> Self {
        let row_bytes = ty.row_bytes(cols).expect("cols checked by the loader");
        debug_assert!(offset + rows * row_bytes <= storage.bytes().len());
        Weight { ty, rows, cols, storage, offset, row_bytes, layout: Layout::Rows }
    }

    /// Whether `other` reads the very same bytes (a tied output head and embedding).
    pub fn same_bytes(&self, other: &Weight) -> bool {
        self.ty == other.ty && self.rows == other.rows && self.cols == other.cols && self.layout == other.layout && std::ptr::eq(self.bytes().as_ptr(), other.bytes().as_ptr())
    }

    /// The layout of the bytes.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// All of the tensor's bytes, in its layout.
    pub fn bytes(&self) -> &[u8] {
        &self.storage.bytes()[self.offset..self.offset + self.rows * self.row_bytes]
    }

    /// The weight in the layout the CPU kernels read fastest, if it has one: Q4_1 and Q8_0
    /// matrices whose rows come in groups of 8 are repacked ([`crate::packed`]) into memory of their own, and
    /// the mapped pages they came from are released. Others are returned as they are.
    pub fn packed_for_cpu(self) -> Weight {
        if !crate::packed::packs(self.ty) || self.layout != Layout::Rows || !self.rows.is_multiple_of(crate::packed::GROUP) {
            return self;
        }
        // A few hundred rows at a time, each run's mapped pages released once copied, so the
        // file's pages and the copy are never both resident for a whole tensor (SmolLM2's
        // 30 MB embedding raised the peak RSS by that much).
        const RUN: usize = 512;
        let mut packed = Vec::with_capacity(self.rows * self.row_bytes);
        for r0 in (0..self.rows).step_by(RUN) {
            let rows = RUN.min(self.rows - r0);
            let range = self.offset + r0 * self.row_bytes..self.offset + (r0 + rows) * self.row_bytes;
            crate::packed::pack(self.ty, &self.storage.bytes()[range.clone()], rows, self.cols / 32, &mut packed);
            self.storage.release(range);
        }
        Weight { storage: Storage::Owned(Arc::new(packed)), offset: 0, layout: Layout::Packed, ..self }
    }

    /// An owned f32 matrix.
    pub fn from_f32(rows: usize, cols: usize, data: &[f32]) -> Self {
        assert_eq!(data.len(), rows * cols);
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        Weight::new(GgmlType::F32, rows, cols, Storage::Owned(Arc::new(bytes)), 0)
    }

    /// The raw bytes of row `i`, for weights in [`Layout::Rows`].
    #[inline]
    pub fn row_bytes(&self, i: usize) -> &[u8] {
        debug_assert_eq!(self.layout, Layout::Rows, "row bytes of a packed weight");
        let start = self.offset + i * self.row_bytes;
        &self.storage.bytes()[start..start + self.row_bytes]
    }

    /// Row `i` dequantized into `out` (length `cols`).
    pub fn dequantize_row_into(&self, i: usize, out: &mut [f32]) {
        match self.layout {
            Layout::Rows => dequantize_row(self.ty, self.row_bytes(i), out),
            Layout::Packed => {
                let mut row = Vec::with_capacity(self.row_bytes);
                crate::packed::unpack_row(self.ty, self.bytes(), self.cols / 32, i, &mut row);
                dequantize_row(self.ty, &row, out);
            }
        }
    }

    /// The whole tensor as f32 (for norms and other small vectors).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (i, chunk) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row_into(i, chunk);
        }
        out
    }
}
