//! `spiece.model` → `tokenizers::Tokenizer`, for tokenizer folders saved by the slow `T5Tokenizer`
//! (no `tokenizer.json`). Built exactly as transformers' `convert_slow_tokenizer.T5Converter` builds
//! `T5TokenizerFast` from such a folder, so the ids equal those of the converted `tokenizer.json`.
//!
//! The SentencePiece `ModelProto` is parsed by hand: the converter reads only a few fields, and the
//! file is untrusted, so every length is checked against the bytes actually there.

use crate::{Error, Result};
use serde_json::Value;
use std::path::Path;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{NormalizerWrapper, Precompiled, Replace, Sequence, Strip};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// Far above any real model (UMT5's 256k pieces take 4.3 MB); keeps a stray huge file out of memory.
const MAX_FILE_BYTES: u64 = 256 << 20;
const UNIGRAM: u64 = 1;
const PIECE_CONTROL: u64 = 3;
const PIECE_USER_DEFINED: u64 = 4;
/// The converter's `</s>` is this literal piece, whatever the config calls its eos token.
const EOS: &str = "</s>";

/// One `ModelProto.SentencePiece`.
#[derive(Debug, Clone, PartialEq)]
struct Piece {
    text: String,
    score: f32,
    kind: u64,
}

/// The fields of `ModelProto` the converter uses (absent fields keep the proto2 defaults).
#[derive(Debug, Clone, PartialEq)]
struct SpModel {
    pieces: Vec<Piece>,
    model_type: u64,
    unk_id: i32,
    precompiled_charsmap: Vec<u8>,
}

/// What `tokenizer_config.json` / `special_tokens_map.json` tell the slow tokenizer.
#[derive(Debug, Clone, PartialEq)]
struct T5Config {
    extra_ids: usize,
    legacy: bool,
    add_prefix_space: bool,
    /// `all_special_tokens` order: eos, unk, pad, then the additional ones.
    special_tokens: Vec<String>,
}

/// Loads `dir/spiece.model` with the folder's tokenizer configs.
pub(crate) fn load_dir(dir: &Path) -> Result<Tokenizer> {
    let file = dir.join("spiece.model");
    let model = parse_model(&read_limited(&file)?).map_err(|m| Error::file(&file, m))?;
    let config = read_config(dir)?;
    build_tokenizer(&model, &config).map_err(|m| Error::file(&file, m))
}

fn read_limited(file: &Path) -> Result<Vec<u8>> {
    let io_err = |e: std::io::Error| Error::file(file, e.to_string());
    let len = std::fs::metadata(file).map_err(io_err)?.len();
    if len > MAX_FILE_BYTES {
        return Err(Error::file(file, format!("{len} bytes is too large for a sentencepiece model")));
    }
    std::fs::read(file).map_err(io_err)
}

// ---------------------------------------------------------------------------------------------
// protobuf

/// A protobuf wire-format cursor that never reads or slices past its buffer.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint(u64),
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
    /// 64-bit values: none of the fields read here, but they may sit among them.
    Fixed64,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, len: u64) -> std::result::Result<&'a [u8], String> {
        let rest = self.buf.len() - self.pos;
        let len = usize::try_from(len).ok().filter(|&l| l <= rest);
        let len = len.ok_or_else(|| format!("field length runs past the end ({rest} bytes left)"))?;
        let bytes = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    /// The next `(field number, value)`, or `None` at the end of the buffer.
    fn next_field(&mut self) -> std::result::Result<Option<(u64, Field<'a>)>, String> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed64
            }
            2 => {
                let len = self.varint()?;
                Field::Bytes(self.take(len)?)
            }
            5 => Field::Fixed32(self.take(4)?.try_into().map_err(|_| "bad fixed32")?),
            wire => return Err(format!("unsupported protobuf wire type {wire} (field {})", key >> 3)),
        };
        Ok(Some((key >> 3, value)))
    }
}

fn parse_model(bytes: &[u8]) -> std::result::Result<SpModel, String> {
    let mut model = SpModel { pieces: Vec::new(), model_type: UNIGRAM, unk_id: 0, precompiled_charsmap: Vec::new() };
    let mut r = Reader::new(bytes);
    while let Some((number, field)) = r.next_field()? {
        match (number, field) {
            (1, Field::Bytes(b)) => model.pieces.push(parse_piece(b, model.pieces.len())?),
            (2, Field::Bytes(b)) => parse_trainer_spec(b, &mut model)?,
            (3, Field::Bytes(b)) => parse_normalizer_spec(b, &mut model)?,
            (1..=3, _) => return Err(format!("not a sentencepiece model: field {number} has the wrong type")),
            _ => {}
        }
    }
    if model.pieces.is_empty() {
        return Err("not a sentencepiece model: no pieces".into());
    }
    Ok(model)
}

fn parse_piece(bytes: &[u8], index: usize) -> std::result::Result<Piece, String> {
    let mut piece = Piece { text: String::new(), score: 0.0, kind: 1 };
    let mut r = Reader::new(bytes);
    while let Some((number, field)) = r.next_field()? {
        match (number, field) {
            (1, Field::Bytes(b)) => {
                piece.text = String::from_utf8(b.to_vec()).map_err(|_| format!("piece {index} is not UTF-8"))?
            }
            (2, Field::Fixed32(b)) => piece.score = f32::from_le_bytes(b),
            (3, Field::Varint(v)) => piece.kind = v,
            (1..=3, _) => return Err(format!("piece {index}: field {number} has the wrong type")),
            _ => {}
        }
    }
    // The Unigram lattice needs non-empty pieces and comparable scores; sentencepiece never writes others.
    if piece.text.is_empty() {
        return Err(format!("piece {index} is empty"));
    }
    if !piece.score.is_finite() {
        return Err(format!("piece {index} ({:?}) has a non-finite score", piece.text));
    }
    Ok(piece)
}

fn parse_trainer_spec(bytes: &[u8], model: &mut SpModel) -> std::result::Result<(), String> {
    let mut r = Reader::new(bytes);
    while let Some((number, field)) = r.next_field()? {
        match (number, field) {
            (3, Field::Varint(v)) => model.model_type = v,
            // int32: negative ids arrive sign-extended to 64 bits, so truncating restores them
            (40, Field::Varint(v)) => model.unk_id = v as i32,
            (3 | 40, _) => return Err(format!("trainer_spec field {number} has the wrong type")),
            _ => {}
        }
    }
    Ok(())
}

fn parse_normalizer_spec(bytes: &[u8], model: &mut SpModel) -> std::result::Result<(), String> {
    let mut r = Reader::new(bytes);
    while let Some((number, field)) = r.next_field()? {
        match (number, field) {
            (2, Field::Bytes(b)) => model.precompiled_charsmap = b.to_vec(),
            (2, _) => return Err("normalizer_spec.precompiled_charsmap has the wrong type".into()),
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// precompiled charsmap

/// `Precompiled` indexes its double-array trie and output blob unchecked (a bad file would panic
/// mid-encode, or over-allocate while loading), so the charsmap is validated before it is handed over.
fn check_charsmap(charsmap: &[u8]) -> std::result::Result<(), String> {
    let bad = |why: &str| format!("invalid precompiled_charsmap: {why}");
    let (size, rest) = charsmap.split_first_chunk::<4>().ok_or_else(|| bad("shorter than its header"))?;
    let trie_bytes = u32::from_le_bytes(*size) as usize;
    if trie_bytes > rest.len() || !trie_bytes.is_multiple_of(4) || trie_bytes == 0 {
        return Err(bad("trie size does not fit the data"));
    }
    let units: Vec<usize> =
        rest[..trie_bytes].chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let normalized = std::str::from_utf8(&rest[trie_bytes..]).map_err(|_| bad("normalized text is not UTF-8"))?;
    check_trie(&units, normalized).map_err(|why| bad(&why))
}

// Unit layout of darts-clone, as `spm_precompiled` decodes it.
fn unit_offset(unit: usize) -> usize {
    (unit >> 10) << ((unit & (1 << 9)) >> 6)
}

fn unit_label(unit: usize) -> usize {
    unit & ((1 << 31) | 0xff)
}

fn unit_has_leaf(unit: usize) -> bool {
    (unit >> 8) & 1 == 1
}

/// Walks every node a lookup can reach: each byte 1..=255 must index inside the array, and each
/// leaf must point at a char boundary of the normalized text.
fn check_trie(units: &[usize], normalized: &str) -> std::result::Result<(), String> {
    let mut visited = vec![false; units.len()];
    let mut stack = vec![unit_offset(units[0])];
    while let Some(base) = stack.pop() {
        for byte in 1..=255usize {
            let pos = base ^ byte;
            let unit = *units.get(pos).ok_or("trie index out of range")?;
            if unit_label(unit) != byte || visited[pos] {
                continue;
            }
            visited[pos] = true;
            let next = pos ^ unit_offset(unit);
            if unit_has_leaf(unit) {
                let leaf = *units.get(next).ok_or("trie leaf out of range")?;
                let start = leaf & ((1 << 31) - 1);
                if !normalized.is_char_boundary(start) {
                    return Err("trie leaf points outside the normalized text".into());
                }
            }
            stack.push(next);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// configs

fn read_json(file: &Path) -> Result<Option<Value>> {
    if !file.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(file).map_err(|e| Error::file(file, e.to_string()))?;
    let value = serde_json::from_str(&text).map_err(|e| Error::file(file, format!("invalid JSON: {e}")))?;
    Ok(Some(value))
}

/// A token given as `"<pad>"` or as a serialized `AddedToken` (`{"content": "<pad>", ...}`).
fn token_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

fn token_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(token_text).collect(),
        // transformers 5 may write `extra_special_tokens` as a name → token map
        Some(Value::Object(map)) => map.values().filter_map(token_text).collect(),
        _ => Vec::new(),
    }
}

/// `special_tokens_map.json` overrides `tokenizer_config.json`, as in `from_pretrained`.
fn read_config(dir: &Path) -> Result<T5Config> {
    let mut merged = serde_json::Map::new();
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        if let Some(Value::Object(map)) = read_json(&dir.join(name))? {
            merged.extend(map);
        }
    }
    t5_config(&merged).map_err(|m| Error::file(dir.join("tokenizer_config.json"), m))
}

/// The special tokens `T5Tokenizer.__init__` settles on, with its defaults.
fn t5_config(cfg: &serde_json::Map<String, Value>) -> std::result::Result<T5Config, String> {
    let extra_ids = match cfg.get("extra_ids") {
        None => 100,
        Some(v) => v.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or("extra_ids is not a count")?,
    };
    let named = |key: &str, default: &str| cfg.get(key).and_then(token_text).unwrap_or_else(|| default.into());
    let mut special_tokens = vec![named("eos_token", EOS), named("unk_token", "<unk>"), named("pad_token", "<pad>")];
    let mut additional = token_list(cfg.get("additional_special_tokens"));
    additional.extend(token_list(cfg.get("extra_special_tokens")));
    let sentinels = additional.iter().filter(|t| t.contains("<extra_id_")).collect::<std::collections::HashSet<_>>();
    if sentinels.is_empty() {
        additional.extend((0..extra_ids).map(|i| format!("<extra_id_{i}>")));
    } else if extra_ids > 0 && sentinels.len() != extra_ids {
        return Err(format!("extra_ids is {extra_ids} but {} <extra_id_N> tokens are listed", sentinels.len()));
    }
    special_tokens.extend(additional);
    let flag = |key: &str| cfg.get(key).and_then(Value::as_bool).unwrap_or(true);
    Ok(T5Config { extra_ids, legacy: flag("legacy"), add_prefix_space: flag("add_prefix_space"), special_tokens })
}

// ---------------------------------------------------------------------------------------------
// tokenizer

fn build_tokenizer(model: &SpModel, config: &T5Config) -> std::result::Result<Tokenizer, String> {
    if model.model_type != UNIGRAM {
        return Err(format!(
            "sentencepiece model_type {} is not supported (only Unigram, as T5/UMT5 use)",
            model.model_type
        ));
    }
    let unk_id = usize::try_from(model.unk_id)
        .ok()
        .filter(|&id| id < model.pieces.len())
        .ok_or_else(|| format!("unk_id {} is not a piece", model.unk_id))?;
    let vocab = t5_vocab(model, config.extra_ids);
    let eos_id = vocab.iter().position(|(p, _)| p == EOS).ok_or("the vocabulary has no </s> piece")?;
    // T5Converter sets handle_byte_fallback = False whatever the trainer used
    let unigram = Unigram::from(vocab, Some(unk_id), false).map_err(|e| format!("invalid vocabulary: {e}"))?;
    let mut tok = Tokenizer::new(unigram);
    tok.with_normalizer(Some(normalizer(&model.precompiled_charsmap)?));
    let scheme = prepend_scheme(config);
    tok.with_pre_tokenizer(Some(Metaspace::new('▁', scheme, true)));
    tok.with_decoder(Some(Metaspace::new('▁', scheme, true)));
    tok.with_post_processor(Some(post_processor(eos_id as u32)?));
    tok.add_tokens(&spm_added_tokens(model));
    let specials: Vec<AddedToken> = config.special_tokens.iter().map(|t| AddedToken::from(t.as_str(), true)).collect();
    tok.add_special_tokens(&specials);
    Ok(tok)
}

/// `T5Converter.vocab`: the pieces, then the sentinels from `<extra_id_{n-1}>` down to `<extra_id_0>`.
fn t5_vocab(model: &SpModel, extra_ids: usize) -> Vec<(String, f64)> {
    let pieces = model.pieces.iter().map(|p| (p.text.clone(), f64::from(p.score)));
    let sentinels = (0..extra_ids).rev().map(|i| (format!("<extra_id_{i}>"), 0.0));
    pieces.chain(sentinels).collect()
}

/// `SpmConverter.normalizer`: [Precompiled], strip right, runs of 2+ spaces → one "▁".
fn normalizer(charsmap: &[u8]) -> std::result::Result<NormalizerWrapper, String> {
    let mut parts: Vec<NormalizerWrapper> = Vec::new();
    if !charsmap.is_empty() {
        check_charsmap(charsmap)?;
        let precompiled = Precompiled::from(charsmap).map_err(|e| format!("invalid precompiled_charsmap: {e}"))?;
        parts.push(precompiled.into());
    }
    parts.push(Strip::new(false, true).into());
    let spaces = Replace::new(ReplacePattern::Regex(" {2,}".into()), "▁").map_err(|e| e.to_string())?;
    parts.push(spaces.into());
    Ok(Sequence::new(parts).into())
}

/// transformers' `_get_prepend_scheme`.
fn prepend_scheme(config: &T5Config) -> PrependScheme {
    match (config.add_prefix_space, config.legacy) {
        (false, _) => PrependScheme::Never,
        (true, true) => PrependScheme::Always,
        (true, false) => PrependScheme::First,
    }
}

fn post_processor(eos_id: u32) -> std::result::Result<TemplateProcessing, String> {
    let err = |e: String| format!("post-processor: {e}");
    TemplateProcessing::builder()
        .try_single(format!("$A {EOS}"))
        .map_err(err)?
        .try_pair(format!("$A {EOS} $B {EOS}"))
        .map_err(err)?
        .special_tokens(vec![(EOS, eos_id)])
        .build()
        .map_err(|e| err(e.to_string()))
}

/// `SpmConverter.tokenizer`: control pieces become special added tokens, user-defined ones plain ones.
fn spm_added_tokens(model: &SpModel) -> Vec<AddedToken> {
    model
        .pieces
        .iter()
        .filter(|p| p.kind == PIECE_CONTROL || p.kind == PIECE_USER_DEFINED)
        .map(|p| AddedToken::from(p.text.as_str(), p.kind == PIECE_CONTROL).normalized(false))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn bytes_field(number: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    fn piece(text: &str, score: f32, kind: u64) -> Vec<u8> {
        let mut p = Vec::new();
        bytes_field(1, text.as_bytes(), &mut p);
        varint(2 << 3 | 5, &mut p);
        p.extend_from_slice(&score.to_le_bytes());
        varint(3 << 3, &mut p);
        varint(kind, &mut p);
        p
    }

    /// A minimal T5-layout model: <pad>, </s>, <unk>, then a few normal pieces; no charsmap.
    fn tiny_model(model_type: u64) -> Vec<u8> {
        let mut m = Vec::new();
        for (text, score, kind) in
            [("<pad>", 0.0, 3), ("</s>", 0.0, 3), ("<unk>", 0.0, 2), ("▁", -2.0, 1), ("▁a", -1.0, 1), ("b", -3.0, 1)]
        {
            bytes_field(1, &piece(text, score, kind), &mut m);
        }
        let mut trainer = Vec::new();
        varint(3 << 3, &mut trainer);
        varint(model_type, &mut trainer);
        varint(40 << 3, &mut trainer);
        varint(2, &mut trainer);
        bytes_field(2, &trainer, &mut m);
        m
    }

    fn config() -> T5Config {
        t5_config(&serde_json::Map::new()).unwrap()
    }

    #[test]
    fn parses_and_encodes_a_minimal_model() {
        let model = parse_model(&tiny_model(UNIGRAM)).unwrap();
        assert_eq!(model.pieces.len(), 6);
        assert_eq!(model.unk_id, 2);
        assert_eq!(model.pieces[5], Piece { text: "b".into(), score: -3.0, kind: 1 });
        let tok = build_tokenizer(&model, &T5Config { extra_ids: 2, ..config() }).unwrap();
        let enc = tok.encode("a  ab <extra_id_1>", true).unwrap();
        // "▁a" "▁a" "b" <extra_id_1> </s>: the double space counts once; sentinels follow the pieces reversed
        assert_eq!(enc.get_ids(), &[4, 4, 5, 6, 1]);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = tiny_model(UNIGRAM);
        for len in 0..full.len() {
            let Ok(model) = parse_model(&full[..len]) else { continue };
            // A cut between top-level fields is well-formed; it must still build or fail cleanly.
            let _ = build_tokenizer(&model, &config());
        }
        assert!(parse_model(&full[..full.len() - 1]).is_err());
    }

    #[test]
    fn corrupt_bytes_are_errors_not_panics() {
        let full = tiny_model(UNIGRAM);
        for i in 0..full.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = full.clone();
                bad[i] ^= flip;
                if let Ok(model) = parse_model(&bad) {
                    let _ = build_tokenizer(&model, &config()).map(|t| t.encode("a b", true).map(|_| ()));
                }
            }
        }
    }

    /// Byte flips all over a real model, charsmap trie included: never a panic while loading or encoding.
    #[test]
    fn flipped_bytes_in_a_trained_model_never_panic() {
        let full = include_bytes!("../tests/data/spiece/t5/spiece.model");
        let prompts = ["café ﬁrst ＦＯＸ", "a fox <extra_id_3> runs \u{1f98a}", "the ´ end"];
        for i in 0..full.len() {
            let mut bad = full.to_vec();
            bad[i] ^= 0x5a;
            let Ok(model) = parse_model(&bad) else { continue };
            if let Ok(tok) = build_tokenizer(&model, &config()) {
                prompts.iter().for_each(|p| drop(tok.encode(*p, true)));
            }
        }
    }

    #[test]
    fn clear_messages_for_bad_input() {
        let huge_len = [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(parse_model(&huge_len).unwrap_err().contains("runs past the end"));
        assert!(parse_model(&[0x0a; 12]).is_err());
        assert!(parse_model(b"").unwrap_err().contains("no pieces"));
        assert!(parse_model(&[0x0b]).unwrap_err().contains("wire type"));
        let bpe = parse_model(&tiny_model(2)).unwrap();
        assert!(build_tokenizer(&bpe, &config()).unwrap_err().contains("only Unigram"));
    }

    #[test]
    fn bad_charsmaps_are_rejected() {
        assert!(check_charsmap(&[]).is_err());
        assert!(check_charsmap(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).is_err());
        // one unit whose root offset sends lookups past the array
        let mut map = 4u32.to_le_bytes().to_vec();
        map.extend_from_slice(&(1u32 << 10).to_le_bytes());
        assert!(check_charsmap(&map).unwrap_err().contains("out of range"));
    }

    #[test]
    fn config_defaults_and_sentinel_count() {
        let cfg = config();
        assert_eq!((cfg.extra_ids, cfg.legacy, cfg.add_prefix_space), (100, true, true));
        assert_eq!(&cfg.special_tokens[..4], ["</s>", "<unk>", "<pad>", "<extra_id_0>"]);
        let listed: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"extra_ids": 3, "additional_special_tokens": ["<extra_id_0>"]}"#).unwrap();
        assert!(t5_config(&listed).unwrap_err().contains("extra_ids is 3"));
    }
}
