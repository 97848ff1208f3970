//! wanrt-io: safe readers and writers of untrusted tensor files.
//!
//! - [`pth`]: PyTorch `torch.save` zip files, through a restricted pickle VM that never
//!   runs code and accepts only the globals a state_dict uses.
//! - [`gguf`]: GGUF files (ggml's container of quantized checkpoints), header and metadata
//!   checked, tensor bytes borrowed from a memory map.
//! - [`npy`] / [`npz`]: NumPy arrays and archives (what pytorch-fid's `numpy.load` reads).
//! - [`atomic`]: write-to-temp-then-rename helpers, so no failed write leaves a partial file.
//!
//! Headers are never trusted for allocation: sizes are checked against the file first,
//! with checked arithmetic. No tensor type lives here; callers get bytes, shapes, dtypes.

pub mod atomic;
pub mod error;
pub mod gguf;
pub mod npy;
pub mod npz;
mod pickle;
pub mod pth;
mod zipfile;

pub use atomic::{copy_tree, create_dir_atomic, write_atomic};
pub use error::{Error, Result};
pub use gguf::{read_gguf, GgmlType, GgufFile, GgufTensor, GgufValue};
pub use npy::{read_npy, read_npy_header, write_npy, write_npy_raw, NpyArray, NpyDType, NpyElement, NpyHeader};
pub use npz::{read_npz, write_npz, NpzReader};
pub use pth::{read_pth, PthFile, PthTensor, TorchDType};
