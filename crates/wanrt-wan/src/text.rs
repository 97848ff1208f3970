//! Prompt → UMT5 embeddings exactly as diffusers' `WanPipeline._get_t5_prompt_embeds`:
//! clean the prompt, tokenize padded to `max_sequence_length` with `</s>`,
//! encode with the mask, then zero the rows past each prompt's length.

use crate::umt5::Umt5Encoder;
use crate::{Error, Result};
use std::path::Path;
use tokenizers::{PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};
use wanrt_nn::Tensor;

/// diffusers' `prompt_clean`: `html.unescape` twice, strip, collapse whitespace.
/// (ftfy is not applied: diffusers only uses it when installed.)
pub fn prompt_clean(text: &str) -> String {
    let once = html_unescape(text);
    let twice = html_unescape(&once);
    twice.split(is_py_whitespace).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Python's `str.isspace` / `re` `\s` for str patterns.
fn is_py_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// The HTML entities prompts meet in practice: the XML five, `&nbsp;`, and
/// decimal/hex character references (a subset of Python's `html.unescape`).
fn html_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        let end = rest[1..].find(';').map(|e| e + 1).filter(|&e| e <= 32);
        let decoded = end.and_then(|e| {
            let name = &rest[1..e];
            let ch = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ if name.starts_with("#x") || name.starts_with("#X") => {
                    u32::from_str_radix(&name[2..], 16).ok().and_then(char::from_u32)
                }
                _ if name.starts_with('#') => name[1..].parse::<u32>().ok().and_then(char::from_u32),
                _ => None,
            };
            ch.map(|c| (c, e + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

pub struct PromptTokenizer {
    /// With any truncation or padding of the file removed: [`PromptTokenizer::encode`] sets its
    /// own, and [`PromptTokenizer::count_tokens`] needs the full length.
    tokenizer: Tokenizer,
    /// `model_max_length` of the folder's `tokenizer_config.json`, when it states a real one
    /// (transformers writes 1e30 for "no limit").
    pub model_max_length: Option<usize>,
}

/// Longest text context accepted when neither the tokenizer nor the model states one: UMT5's
/// relative positions have no hard limit, but the text encoder's attention grows with L².
pub const MAX_TEXT_LEN: usize = 4096;

/// Token ids and attention mask of a batch, `[B, L]` each.
pub struct TokenBatch {
    pub ids: Vec<u32>,
    pub mask: Vec<u32>,
    pub batch: usize,
    pub len: usize,
}

/// Runs a `tokenizers` call on a file we do not trust: that crate panics on some inconsistent
/// files (a post-processor naming a special token its map lacks, found by the mutation
/// harness), and a panic must become an error, not end the program.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Error::Tokenizer(format!("the tokenizer file is inconsistent ({msg})"))
    })
}

impl PromptTokenizer {
    /// Loads a tokenizer folder (diffusers `tokenizer/`, or the release's `google/umt5-xxl/`):
    /// `tokenizer.json` when present, otherwise the slow tokenizer's `spiece.model`, converted as
    /// transformers converts it for `T5TokenizerFast`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let file = dir.join("tokenizer.json");
        let tokenizer = if file.is_file() {
            let bytes = wanrt_io::tokenizer_json::read_checked(&file).map_err(|e| Error::Msg(e.to_string()))?;
            guarded(|| Tokenizer::from_bytes(&bytes))?
                .map_err(|e| Error::file(&file, format!("invalid tokenizer: {e}")))?
        } else if dir.join("spiece.model").is_file() {
            crate::spiece::load_dir(dir)?
        } else {
            return Err(Error::file(
                dir,
                "tokenizer folder has neither tokenizer.json (T5TokenizerFast) nor spiece.model (T5Tokenizer)",
            ));
        };
        let mut tokenizer = tokenizer;
        tokenizer.with_truncation(None).map_err(|e| Error::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        Ok(PromptTokenizer { tokenizer, model_max_length: model_max_length(dir)? })
    }

    /// Tokens of the cleaned prompt, `</s>` included, before any truncation.
    pub fn count_tokens(&self, prompt: &str) -> Result<usize> {
        let e = guarded(|| self.tokenizer.encode(prompt_clean(prompt), true))?
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(e.get_ids().len())
    }

    fn pad_id(&self) -> u32 {
        self.tokenizer.token_to_id("<pad>").unwrap_or(0)
    }

    /// Tokenizes cleaned prompts padded/truncated to exactly `max_len`.
    pub fn encode(&self, prompts: &[String], max_len: usize) -> Result<TokenBatch> {
        if max_len == 0 {
            return Err(Error::Config("max_sequence_length must be at least 1".into()));
        }
        let mut tok = self.tokenizer.clone();
        tok.with_truncation(Some(TruncationParams { max_length: max_len, ..Default::default() }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tok.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_len),
            direction: PaddingDirection::Right,
            pad_id: self.pad_id(),
            pad_token: "<pad>".into(),
            ..Default::default()
        }));
        let cleaned: Vec<String> = prompts.iter().map(|p| prompt_clean(p)).collect();
        let encodings = guarded(|| tok.encode_batch(cleaned, true))?.map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(prompts.len() * max_len);
        let mut mask = Vec::with_capacity(prompts.len() * max_len);
        for e in &encodings {
            if e.get_ids().len() != max_len {
                return Err(Error::Tokenizer(format!("expected {max_len} tokens, got {}", e.get_ids().len())));
            }
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        Ok(TokenBatch { ids, mask, batch: prompts.len(), len: max_len })
    }
}

/// `model_max_length` from `tokenizer_config.json`; absent, or transformers' "no limit" value
/// (`int(1e30)`), gives `None`. A present but malformed value is an error naming the file.
fn model_max_length(dir: &Path) -> Result<Option<usize>> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, format!("cannot read: {e}")))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("not valid JSON: {e}")))?;
    match json.get("model_max_length") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(n) if n >= 1e15 => Ok(None),
            Some(n) if n >= 1.0 && n.fract() == 0.0 => Ok(Some(n as usize)),
            _ => Err(Error::file(&path, format!("model_max_length must be a positive integer, found {v}"))),
        },
    }
}

impl TokenBatch {
    /// Real tokens per prompt. The tokenizer pads on the right, so each mask is a run of ones
    /// followed by zeros; anything else is an error.
    pub fn lengths(&self) -> Result<Vec<usize>> {
        self.mask
            .chunks(self.len.max(1))
            .map(|m| {
                let n = m.iter().take_while(|&&v| v > 0).count();
                if m[n..].iter().any(|&v| v > 0) {
                    return Err(Error::Tokenizer("attention mask is not right-padded".into()));
                }
                Ok(n)
            })
            .collect()
    }
}

/// Encodes prompts into the transformer's `encoder_hidden_states` `[B, L, d]`:
/// rows past each prompt's token count are exactly zero.
pub fn encode_prompts(tok: &PromptTokenizer, enc: &Umt5Encoder, prompts: &[String], max_len: usize) -> Result<Tensor> {
    let batch = tok.encode(prompts, max_len)?;
    embed_tokens(enc, &batch)
}

/// The token ids go to the encoder's backend (one upload); the padded rows are zeroed there.
pub fn embed_tokens(enc: &Umt5Encoder, batch: &TokenBatch) -> Result<Tensor> {
    let be = enc.backend();
    let lengths = batch.lengths()?;
    let ids = be.upload_ids(&[batch.batch, batch.len], &batch.ids)?;
    let mut h = enc.forward(&ids, &lengths)?;
    be.mask_rows(&mut h, &lengths)?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_collapses_whitespace_and_unescapes_twice() {
        assert_eq!(prompt_clean("  a  red\tfox \n"), "a red fox");
        assert_eq!(prompt_clean("rock &amp;amp; roll"), "rock & roll");
        assert_eq!(prompt_clean("x &#65;&#x42; &bogus; &"), "x AB &bogus; &");
    }
}
