//! wanrt-io: safe readers and writers of untrusted tensor files.
//!
//! - [`pth`]: PyTorch `torch.save` zip files, through a restricted pickle VM that never
//!   runs code and accepts only the globals a state_dict uses.
//! - [`gguf`]: GGUF files (ggml's container of quantized checkpoints), header and metadata
//!   checked, tensor bytes borrowed from a memory map.
//! - [`npy`] / [`npz`]: NumPy arrays and archives (what pytorch-fid's `numpy.load` reads).
//! - [`atomic`]: write-to-temp-then-rename helpers, so no failed write leaves a partial file,
//!   and the output checks that run before a long job ([`check_output_file`]).
//! - [`limits`]: the decode budget every reader of untrusted files allocates within.
//!
//! Headers are never trusted for allocation: sizes are checked against the file first,
//! with checked arithmetic. No tensor type lives here; callers get bytes, shapes, dtypes.

pub mod atomic;
pub mod error;
pub mod gguf;
pub mod limits;
pub mod npy;
pub mod npz;
mod pickle;
pub mod pth;
pub mod tokenizer_json;
mod zipfile;

pub use atomic::{
    check_output_dir, check_output_file, copy_tree, create_dir_atomic, create_dir_atomic_with, is_inside, write_atomic,
};
pub use error::{one_line, Error, Result};
pub use gguf::{read_gguf, GgmlType, GgufFile, GgufTensor, GgufValue};
pub use limits::{decode_budget, format_size, parse_size};
pub use npy::{read_npy, read_npy_header, write_npy, write_npy_raw, NpyArray, NpyDType, NpyElement, NpyHeader};
pub use npz::{read_npz, write_npz, NpzReader};
pub use pth::{read_pth, PthFile, PthTensor, TorchDType};
