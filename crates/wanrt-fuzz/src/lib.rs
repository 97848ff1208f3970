//! wanrt-fuzz: a mutation-testing harness on stable Rust for every input format wanrt reads.
//!
//! Valid seeds of each format (committed under `fixtures/fuzz/<format>/`) are mutated with
//! structure-aware mutations ([`mutate`]: the size and count fields a format's walker finds,
//! JSON nodes, zip members rewritten with valid CRCs, plus plain byte edits) and handed to
//! wanrt's own readers ([`targets`]). Every case must end in `Ok` or a clean one-line error:
//! no panic, no abort, and no allocation past the case's budget (a counting allocator,
//! [`alloc`], fails allocations above it). A failing input is saved for a regression seed
//! under `fixtures/fuzz/regress/<format>/`, which every run replays.
//!
//! The test `tests/mutate.rs` runs it for a bounded time (`WANRT_FUZZ_SECONDS`, default 40)
//! with a fixed seed (`WANRT_FUZZ_SEED`); a longer run with another seed finds more.

pub mod alloc;
pub mod fields;
pub mod harness;
pub mod json;
pub mod mutate;
pub mod protobuf;
pub mod targets;

/// The input formats (one corpus folder each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Safetensors,
    Pth,
    Npy,
    Npz,
    Gif,
    Png,
    Mp4,
    /// `tokenizer.json` (tokenizers' format: UMT5 Unigram, CLIP BPE).
    Tokenizer,
    /// A sentencepiece `spiece.model` (protobuf), the slow T5 tokenizer's file.
    Spiece,
    /// The JSON files of a model folder (model_index, component configs, scheduler, wanrt.json).
    Config,
    /// GGUF checkpoints (ggml block-quantized tensors).
    Gguf,
}

impl Format {
    pub const ALL: [Format; 11] = [
        Format::Safetensors,
        Format::Pth,
        Format::Npy,
        Format::Npz,
        Format::Gif,
        Format::Png,
        Format::Mp4,
        Format::Tokenizer,
        Format::Spiece,
        Format::Config,
        Format::Gguf,
    ];

    /// Corpus folder name and case file extension.
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::Pth => "pth",
            Format::Npy => "npy",
            Format::Npz => "npz",
            Format::Gif => "gif",
            Format::Png => "png",
            Format::Mp4 => "mp4",
            Format::Tokenizer => "tokenizer",
            Format::Spiece => "spiece",
            Format::Config => "config",
            Format::Gguf => "gguf",
        }
    }
}
