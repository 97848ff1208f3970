//! The pipeline moves data between host and backend only where it must: the token ids and the
//! initial noise go up, one scalar comes back after the text encoder and one after denoising (the
//! finiteness checks) and one per step when the step cache decides, and the final frames come
//! down once. Everything else — text embeddings, latents, every activation — stays
//! in the backend's memory (model code has no way to read it: `clippy.toml`, and no accessor).
// Tests read values to compare them; the lint forbids it in model code only.
#![allow(clippy::disallowed_methods)]

mod common;
use common::{fixture, Reference};
use std::sync::Arc;
use wanrt_nn::backend::{CpuBackend, CpuOptions, Transfers};
use wanrt_nn::Backend;
use wanrt_wan::model::{LoadOptions, WanModel};

fn load(be: &Arc<CpuBackend>) -> WanModel {
    let opts = LoadOptions {
        backend: be.clone(),
        vae_backend: be.clone(),
        vae_encoder: false,
        transformer_file: None,
        loras: vec![],
        loras_2: vec![],
        lora_mode: Default::default(),
        lora_unmatched: Default::default(),
    };
    WanModel::load_with(&fixture("a"), opts, |_| {}).unwrap()
}

#[test]
fn generate_transfers_ids_noise_and_frames_only() {
    let be = Arc::new(CpuBackend::new(CpuOptions::default()));
    let model = load(&be);
    assert_eq!(be.transfers(), Transfers::default(), "loading prepares weights; it transfers no tensors");

    let r = Reference::load("a");
    let p = r.generate_params();
    let noise = p.noise.clone().unwrap();
    let out = model.generate(&p, &mut ()).unwrap();
    let t = be.transfers();
    let text_len = out.settings.max_sequence_length;
    let frames = out.video.numel();
    // CFG: prompt and negative prompt, `text_len` u32 ids each.
    let want = Transfers {
        uploads: 2,
        upload_bytes: (2 * text_len * 4 + noise.numel() * 4) as u64,
        downloads: 1,
        download_bytes: (frames * 4) as u64,
        // Are the text embeddings and the final latents finite?
        scalar_reads: 2,
    };
    assert_eq!(t, want, "transfers of one generate");
}

#[test]
fn step_cache_reads_one_scalar_per_decision() {
    let be = Arc::new(CpuBackend::new(CpuOptions::default()));
    let model = load(&be);
    let mut p = wanrt_wan::pipeline::GenerateParams::new("a small red fox");
    (p.steps, p.num_frames, p.height, p.width, p.seed, p.cache_threshold) =
        (Some(6), Some(5), Some(32), Some(32), 7, Some(0.5));
    let out = model.generate(&p, &mut ()).unwrap();
    let t = be.transfers();
    // Seeded noise is drawn on the host and uploaded like given noise.
    assert_eq!((t.uploads, t.downloads), (2, 1), "{t:?}");
    // The first step has no earlier indicator to compare with; plus the two finiteness checks.
    assert_eq!(t.scalar_reads, 5 + 2, "{t:?}");
    assert_eq!(out.transformer_evals + out.steps_skipped, 6);
}
