//! Slow-tokenizer folders (`spiece.model`, no `tokenizer.json`) tokenize exactly as transformers'
//! slow `T5Tokenizer` and `T5TokenizerFast` do. References: `tools/fixtures/make_spiece_fixtures.py`.
// Tests read values to compare them; the lint forbids it in model code only.
#![allow(clippy::disallowed_methods)]

use serde::Deserialize;
use std::path::{Path, PathBuf};
use wanrt_wan::text::{prompt_clean, PromptTokenizer};

#[derive(Deserialize)]
struct Refs {
    max_len: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    raw: String,
    clean: String,
    ids: Vec<u32>,
    mask: Vec<u32>,
}

fn data_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/spiece").join(name)
}

/// Each raw prompt goes through `encode` as the pipeline passes it (prompt_clean included); the
/// references were made on diffusers' `prompt_clean` of the same text.
fn check_folder(name: &str) {
    let dir = data_dir(name);
    assert!(!dir.join("tokenizer.json").exists(), "the fixture must exercise the spiece.model path");
    let refs: Refs = serde_json::from_str(&std::fs::read_to_string(dir.join("refs.json")).unwrap()).unwrap();
    let tok = PromptTokenizer::from_dir(&dir).unwrap();
    assert!(refs.cases.len() >= 10, "{name}: only {} cases", refs.cases.len());
    for case in &refs.cases {
        assert_eq!(prompt_clean(&case.raw), case.clean, "{name}/{}: prompt_clean", case.name);
        let batch = tok.encode(std::slice::from_ref(&case.raw), refs.max_len).unwrap();
        assert_eq!(batch.ids, case.ids, "{name}/{}: ids of {:?}", case.name, case.clean);
        assert_eq!(batch.mask, case.mask, "{name}/{}: mask of {:?}", case.name, case.clean);
    }
}

#[test]
fn t5_folder_matches_transformers() {
    check_folder("t5");
}

#[test]
fn umt5_style_folder_matches_transformers() {
    check_folder("umt5");
}

#[test]
fn batch_of_prompts_matches_single_encodes() {
    let dir = data_dir("t5");
    let refs: Refs = serde_json::from_str(&std::fs::read_to_string(dir.join("refs.json")).unwrap()).unwrap();
    let tok = PromptTokenizer::from_dir(&dir).unwrap();
    let prompts: Vec<String> = refs.cases.iter().map(|c| c.raw.clone()).collect();
    let batch = tok.encode(&prompts, refs.max_len).unwrap();
    let ids: Vec<u32> = refs.cases.iter().flat_map(|c| c.ids.iter().copied()).collect();
    assert_eq!((batch.batch, batch.len), (prompts.len(), refs.max_len));
    assert_eq!(batch.ids, ids);
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wanrt-spiece-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn corrupt_or_truncated_spiece_model_is_an_error() {
    let model = std::fs::read(data_dir("t5").join("spiece.model")).unwrap();
    let dir = scratch_dir("corrupt");
    let cuts = [1, 2, 7, model.len() / 3, model.len() / 2, model.len() - 1];
    for cut in cuts {
        std::fs::write(dir.join("spiece.model"), &model[..cut]).unwrap();
        let err = PromptTokenizer::from_dir(&dir).err().unwrap_or_else(|| panic!("cut at {cut} loaded"));
        let msg = err.to_string();
        assert!(msg.contains("spiece.model") && !msg.contains('\n'), "{msg}");
    }
    // Overwrite the charsmap's trie size (it sits in the last field): loading must fail cleanly.
    let mut bad = model.clone();
    let tail = bad.len() - 40;
    bad[tail..].iter_mut().for_each(|b| *b = 0xff);
    std::fs::write(dir.join("spiece.model"), &bad).unwrap();
    assert!(PromptTokenizer::from_dir(&dir).is_err());
    std::fs::write(dir.join("spiece.model"), b"not a protobuf at all").unwrap();
    assert!(PromptTokenizer::from_dir(&dir).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn folder_without_tokenizer_files_names_both() {
    let dir = scratch_dir("empty");
    let msg = PromptTokenizer::from_dir(&dir).err().unwrap().to_string();
    assert!(msg.contains("tokenizer.json") && msg.contains("spiece.model"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}
