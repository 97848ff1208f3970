//! Tokenizer ids/mask and UMT5 embeddings against transformers + diffusers.
// Tests read values to compare them; the lint forbids it in model code only.
#![allow(clippy::disallowed_methods)]

mod common;
use common::{assert_close, cpu, fixture, host, Reference};
use wanrt_nn::WeightStore;
use wanrt_wan::text::{embed_tokens, PromptTokenizer};
use wanrt_wan::umt5::{Umt5Config, Umt5Encoder};

fn check_case(case: &str) {
    let dir = fixture(case);
    let r = Reference::load(case);
    let tok = PromptTokenizer::from_dir(&dir.join("tokenizer")).unwrap();
    let cfg: Umt5Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("text_encoder/config.json")).unwrap()).unwrap();
    let ws = WeightStore::from_diffusers_dir(&dir.join("text_encoder"), "model").unwrap();
    let be = cpu();
    let enc = Umt5Encoder::load(&ws, cfg, be.clone()).unwrap();
    let max_len = r.get("text.input_ids").numel();
    let mut prompts = vec![(
        "text",
        r.meta["prompt"].as_str().unwrap().to_string(),
        "text.input_ids",
        "text.attention_mask",
        "text.prompt_embeds",
    )];
    if r.has("text.negative_prompt_embeds") {
        prompts.push((
            "neg",
            r.meta["negative_prompt"].as_str().unwrap().to_string(),
            "text.neg_input_ids",
            "text.neg_attention_mask",
            "text.negative_prompt_embeds",
        ));
    }
    if let Some(p) = r.meta.get("text2_prompt").and_then(|v| v.as_str()) {
        prompts.push(("text2", p.to_string(), "text2.input_ids", "text2.attention_mask", "text2.prompt_embeds"));
    }
    for (label, prompt, ids_key, mask_key, emb_key) in prompts {
        let batch = tok.encode(&[prompt], max_len).unwrap();
        let want_ids: Vec<u32> = r.get(ids_key).data().iter().map(|&v| v as u32).collect();
        let want_mask: Vec<u32> = r.get(mask_key).data().iter().map(|&v| v as u32).collect();
        assert_eq!(batch.ids, want_ids, "{case} {label}: token ids");
        assert_eq!(batch.mask, want_mask, "{case} {label}: attention mask");
        let emb = host(&*be, &embed_tokens(&enc, &batch).unwrap());
        assert_close(&format!("{case} {emb_key}"), &emb, &r.get(emb_key), 2e-5, 1e-10);
    }
}

#[test]
fn text_case_a() {
    check_case("a");
}

#[test]
fn text_case_b() {
    check_case("b");
}

#[test]
fn text_case_c() {
    check_case("c");
}
