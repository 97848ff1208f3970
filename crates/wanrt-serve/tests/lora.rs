//! Per-request LoRA adapters (`--lora-dir`): names refused in one 400 unless they are plain file
//! stems of the folder; an adapted job equals `generate` with the LoRA run unmerged; concurrent
//! jobs with different adapters (and none) do not see each other's; the shared model is left as
//! it was; full-weight deltas of linear layers run as exact side paths; norm deltas give the job's
//! copy its own norms, the same bits as merging them at load into f32 weights; deltas on tensors
//! the model lacks are refused in one 400 when the request is made (nothing queued).

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use wanrt_nn::weights::{write_safetensors, RawTensor};
use wanrt_nn::{HostTensor, WeightStore};
use wanrt_serve::adapters::AdapterRef;
use wanrt_serve::engine;
use wanrt_serve::inputs::Images;
use wanrt_serve::job::JobParams;
use wanrt_wan::lora::{LoraSpec, Unmatched};
use wanrt_wan::model::{LoadOptions, WanModel};
use wanrt_wan::pipeline::GenerateParams;

/// A deterministic `[rows, cols]` tensor of values in about ±`amp`.
fn t(rows: usize, cols: usize, seed: usize, amp: f32) -> RawTensor {
    let v = (0..rows * cols).map(|i| (((i * 7919 + seed * 104729) % 101) as f32 - 50.0) / 50.0 * amp).collect();
    RawTensor::from_f32(&HostTensor::new([rows, cols], v).unwrap())
}

/// PEFT-style rank-2 LoRA on block 0's self-attention query and FFN input (the demo model's
/// width is 128, its FFN 512), with a bias delta on the query when `bias`.
fn write_lora(path: &Path, seed: usize, bias: bool) {
    let (qd, qu, fd, fu) =
        (t(2, 128, seed, 0.3), t(128, 2, seed + 1, 0.3), t(2, 128, seed + 2, 0.3), t(512, 2, seed + 3, 0.3));
    let qb = RawTensor::from_f32(&HostTensor::new([128], vec![0.05; 128]).unwrap());
    let mut tensors = vec![
        ("transformer.blocks.0.attn1.to_q.lora_A.weight", &qd),
        ("transformer.blocks.0.attn1.to_q.lora_B.weight", &qu),
        ("transformer.blocks.0.ffn.net.0.proj.lora_A.weight", &fd),
        ("transformer.blocks.0.ffn.net.0.proj.lora_B.weight", &fu),
    ];
    if bias {
        tensors.push(("transformer.blocks.0.attn1.to_q.lora_B.bias", &qb));
    }
    write_safetensors(path, tensors).unwrap();
}

fn lora_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("loras");
    std::fs::create_dir_all(&dir).unwrap();
    write_lora(&dir.join("style.safetensors"), 1, true);
    write_lora(&dir.join("motion.safetensors"), 5, false);
    // Full-weight deltas of two linear layers (original key names), and the same deltas as a
    // PEFT pair `B · A` with A = the diff, B = the identity (alpha = rank: factor = scale).
    let (q, ffn) = (t(128, 128, 9, 0.05), t(512, 128, 10, 0.05));
    write_safetensors(
        &dir.join("full.safetensors"),
        [("diffusion_model.blocks.0.self_attn.q.diff", &q), ("diffusion_model.blocks.0.ffn.0.diff", &ffn)],
    )
    .unwrap();
    let eye = |n: usize| {
        RawTensor::from_f32(
            &HostTensor::new([n, n], (0..n * n).map(|i| f32::from(i % (n + 1) == 0)).collect()).unwrap(),
        )
    };
    let (eye_q, eye_ffn) = (eye(128), eye(512));
    write_safetensors(
        &root.join("full_as_low_rank.safetensors"),
        [
            ("transformer.blocks.0.attn1.to_q.lora_A.weight", &q),
            ("transformer.blocks.0.attn1.to_q.lora_B.weight", &eye_q),
            ("transformer.blocks.0.ffn.net.0.proj.lora_A.weight", &ffn),
            ("transformer.blocks.0.ffn.net.0.proj.lora_B.weight", &eye_ffn),
        ],
    )
    .unwrap();
    // Norm deltas as ComfyUI writes them: block 0's query RMSNorm gain, block 1's cross-attention
    // LayerNorm weight and bias (original `norm3` = diffusers `norm2`).
    let norm = |seed| {
        let v = (0..128).map(|i| (((i * 7919 + seed * 104729) % 101) as f32 - 50.0) / 50.0 * 0.5).collect();
        RawTensor::from_f32(&HostTensor::new([128], v).unwrap())
    };
    let (q, w, b) = (norm(11), norm(12), norm(13));
    write_safetensors(
        &dir.join("norms.safetensors"),
        [
            ("diffusion_model.blocks.0.self_attn.norm_q.diff", &q),
            ("diffusion_model.blocks.1.norm3.diff", &w),
            ("diffusion_model.blocks.1.norm3.diff_b", &b),
        ],
    )
    .unwrap();
    // A norm of image-conditioned models only: the demo has no such tensor.
    write_safetensors(
        &dir.join("image_norm.safetensors"),
        [("diffusion_model.blocks.0.cross_attn.norm_k_img.diff", &q)],
    )
    .unwrap();
    std::fs::write(root.join("outside.safetensors"), b"not in the folder").unwrap();
    dir
}

fn body(loras: Value) -> Value {
    json!({"prompt": "a red ball bounces", "num_inference_steps": 3, "seed": 11, "loras": loras})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_names_are_checked_and_refused_in_one_400() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = args(tmp.path());
    a.lora_dir = Some(lora_dir(tmp.path()));
    let s = start(&a).await;
    let refused: [(Value, &str); 9] = [
        (json!([{"name": "../outside"}]), "not an adapter name"),
        (json!([{"name": "sub/style"}]), "not an adapter name"),
        (json!([{"name": ".."}]), "not an adapter name"),
        (json!([{"name": "missing"}]), "no adapter named 'missing'"),
        (json!([{"name": "style", "scale": "big"}]), "finite number"),
        (json!([{"name": "style", "path": "/etc"}]), "unknown field 'path'"),
        (json!({"name": "style"}), "must be a list"),
        (json!([{"scale": 1}]), "needs a \"name\""),
        // A real file that is no per-request adapter: read when the request is made.
        (
            json!([{"name": "norms"}, {"name": "image_norm"}]),
            "`blocks.0.attn2.norm_added_k.weight`, which the transformer does not have",
        ),
    ];
    for (loras, want) in refused {
        let (st, v) = s.post("/v1/videos", &body(loras.clone())).await;
        assert_eq!(st, 400, "{loras}: {v}");
        let (_, param) = error_of(&v);
        assert_eq!(param.as_deref(), Some("loras"), "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(want), "{loras}: expected `{want}` in {msg}");
        assert!(!msg.contains(tmp.path().to_str().unwrap()), "no server paths in errors: {msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }
    let (_, list) = s.get("/v1/videos").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "nothing queued");
    s.shutdown().await;

    // Without --lora-dir every request naming adapters is refused.
    let tmp2 = tempfile::tempdir().unwrap();
    let s = start(&args(tmp2.path())).await;
    let (st, v) = s.post("/v1/videos", &body(json!([{"name": "style"}]))).await;
    assert_eq!(st, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("--lora-dir"), "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_keep_their_own_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = args(tmp.path());
    a.lora_dir = Some(lora_dir(tmp.path()));
    // Two worker pipelines on one model, each job alone in its batch: jobs with different
    // adapters run at the same time, and equal jobs do the same arithmetic.
    (a.workers, a.batch) = (2, 1);
    let s = start(&a).await;
    let plain = s.submit(body(json!([]))).await;
    let style = s.submit(body(json!([{"name": "style", "scale": 0.8}]))).await;
    let both = s.submit(body(json!([{"name": "style", "scale": 0.8}, {"name": "motion", "scale": -0.5}]))).await;
    let style_again = s.submit(body(json!([{"name": "style", "scale": 0.8}]))).await;
    let norms = s.submit(body(json!([{"name": "norms", "scale": 0.8}]))).await;
    let plain_again = s.submit(body(json!([]))).await;
    let mut videos = vec![];
    for id in [&plain, &style, &both, &style_again, &plain_again, &norms] {
        let done = s.wait_done(id).await;
        assert_eq!(done["status"], "completed", "{done}");
        videos.push(s.get_bytes(&format!("/v1/videos/{id}/content")).await.2);
    }
    let v = s.get(&format!("/v1/videos/{style}")).await.1;
    assert_eq!(v["parameters"]["loras"], json!([{"name": "style", "scale": 0.8}]), "{v}");
    assert_ne!(videos[0], videos[1], "the adapter changes the video");
    assert_ne!(videos[1], videos[2], "a second adapter changes it again");
    assert_eq!(videos[1], videos[3], "the same adapters make the same video");
    assert_eq!(videos[0], videos[4], "the shared model is unchanged after adapted jobs");
    assert!(videos[5] != videos[0] && videos[5] != videos[1], "norm deltas change the video, their own way");
    s.shutdown().await;
}

/// The engine on an adapted transformer computes what a model loaded with the LoRA as a side
/// path computes: the same bits without a bias delta; with one (a side-path bias here, merged
/// into the layer's bias there) within float rounding, amplified by a strong LoRA over the steps.
#[test]
fn an_adapted_job_matches_generate_with_the_lora_unmerged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = lora_dir(tmp.path());
    let model = WanModel::load(&demo_model(), |_| {}).unwrap();
    // (adapter, what the reference load runs as a side path, tolerance, (LoRA layers, rank range)):
    // `full` holds weight diffs only (a side-path load would merge them into the bf16 weights),
    // so its reference is the same deltas as a low-rank pair: the same products.
    for (name, reference, tolerance, shape) in [
        ("motion", dir.join("motion.safetensors"), 0.0, (2, (2, 2))),
        ("style", dir.join("style.safetensors"), 1e-3, (2, (2, 2))),
        ("full", tmp.path().join("full_as_low_rank.safetensors"), 0.0, (0, (0, 0))),
    ] {
        let spec = LoraSpec { path: dir.join(format!("{name}.safetensors")), scale: 0.8 };
        let reference = LoraSpec { path: reference, scale: 0.8 };
        let p = job(name);
        let (adapted, summary) =
            wanrt_wan::lora_adapter::adapted(&model.transformer, std::slice::from_ref(&spec), Unmatched::Error)
                .unwrap();
        assert_eq!((summary[0].layers, summary[0].rank), shape, "{name}");
        let got = adapted_video(&model, &adapted, &p);
        let opts = LoadOptions {
            loras: vec![reference],
            lora_mode: wanrt_nn::lora::MergeMode::SidePath,
            ..Default::default()
        };
        let with = WanModel::load_with(&demo_model(), opts, |_| {}).unwrap();
        let want =
            with.generate(&engine::generate_params(&p, Images::default()), &mut ()).unwrap().video.data().to_vec();
        let plain =
            model.generate(&engine::generate_params(&p, Images::default()), &mut ()).unwrap().video.data().to_vec();
        let (err, change) = (max_diff(&got, &want), max_diff(&plain, &want));
        eprintln!("{name}: adapted vs generate --lora-unmerged max|Δ| {err:e}; the LoRA's effect {change:e}");
        assert!(change > 1e-2, "{name}: the LoRA changes the video ({change})");
        assert!(err <= tolerance, "{name}: adapted job vs generate with the LoRA unmerged: {err}");
    }
}

/// The parameters of a 4-step 32×32 job with the adapter `name` at scale 0.8.
fn job(name: &str) -> JobParams {
    JobParams {
        model: "demo".into(),
        prompt: "a red ball".into(),
        negative_prompt: "blurry".into(),
        width: 32,
        height: 32,
        num_frames: 17,
        num_inference_steps: 4,
        guidance_scale: 4.0,
        seed: 3,
        fps: 8.0,
        warnings: vec![],
        loras: vec![AdapterRef { name: name.into(), scale: 0.8 }],
        image: None,
        last_image: None,
    }
}

/// The frames the engine makes for `p` on `model` with `transformer` in place of its own.
fn adapted_video(model: &WanModel, transformer: &wanrt_wan::transformer::WanTransformer, p: &JobParams) -> Vec<f32> {
    let enc = engine::encode(model, p, Images::default()).unwrap();
    let lat = engine::denoise_with(model, transformer, vec![enc], |_, _, _| engine::Next::Continue).unwrap();
    engine::decode(model, lat[0].as_ref().unwrap(), |_, _| {}).unwrap().data().to_vec()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The demo model with its transformer stored in f32 at `root/demo` (served as "demo"): the same
/// values (bf16 widens exactly), but merging deltas at load stores their f32 sums unrounded.
fn f32_demo(root: &Path) -> PathBuf {
    let dir = root.join("demo");
    // Hard links where possible: the rewrite below replaces the file (written atomically).
    wanrt_io::copy_tree(&demo_model(), &dir).unwrap();
    let file = dir.join("transformer/diffusion_pytorch_model.safetensors");
    let tensors: Vec<(String, RawTensor)> = {
        let ws = WeightStore::from_safetensors_files(std::slice::from_ref(&file)).unwrap();
        ws.names().map(|n| (n.to_string(), RawTensor::from_f32(&ws.get(n).unwrap()))).collect()
    };
    write_safetensors(&file, tensors.iter().map(|(n, t)| (n.as_str(), t))).unwrap();
    dir
}

/// Norm deltas run per request compute what `generate --lora` computes with them merged at load:
/// the same bits where the model stores its norms in f32. The demo stores them in bf16, and
/// merging rounds each sum to bf16 while the request's copy keeps it in f32: there the job equals
/// the f32 model's merge (the demo computes as its f32 copy does: bf16 widens exactly), and the
/// bf16 merge is off by that rounding only — far less than the LoRA's effect.
#[test]
fn norm_deltas_match_generate_with_the_lora_merged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = lora_dir(tmp.path());
    let spec = LoraSpec { path: dir.join("norms.safetensors"), scale: 0.8 };
    let merged = |model_dir: &Path| {
        let opts = LoadOptions { loras: vec![spec.clone()], ..Default::default() };
        let with = WanModel::load_with(model_dir, opts, |_| {}).unwrap();
        with.generate(&engine::generate_params(&job("norms"), Images::default()), &mut ())
            .unwrap()
            .video
            .data()
            .to_vec()
    };
    let f32_dir = f32_demo(tmp.path());
    let want = merged(&f32_dir);
    for model_dir in [f32_dir.clone(), demo_model()] {
        let model = WanModel::load(&model_dir, |_| {}).unwrap();
        let (adapted, summary) =
            wanrt_wan::lora_adapter::adapted(&model.transformer, std::slice::from_ref(&spec), Unmatched::Error)
                .unwrap();
        assert_eq!((summary[0].layers, summary[0].diffs), (0, 3));
        let got = adapted_video(&model, &adapted, &job("norms"));
        let plain = model
            .generate(&engine::generate_params(&job("norms"), Images::default()), &mut ())
            .unwrap()
            .video
            .data()
            .to_vec();
        let (err, change) = (max_diff(&got, &want), max_diff(&plain, &want));
        eprintln!(
            "{}: adapted vs generate --lora (f32 merge) max|Δ| {err:e}; the LoRA's effect {change:e}",
            model_dir.display()
        );
        assert!(change > 1e-2, "the norm deltas change the video ({change})");
        assert_eq!(err, 0.0, "{}: adapted job vs generate with the norms merged in f32", model_dir.display());
    }
    let rounded = max_diff(&merged(&demo_model()), &want);
    eprintln!("bf16 demo: generate --lora (bf16 merge) vs the f32 merge max|Δ| {rounded:e}");
    assert!(rounded > 0.0 && rounded < 1e-2, "the bf16 merge differs by its rounding only ({rounded})");
}

/// The same through the API: a served job with norm deltas is, byte for byte, the MP4 that
/// `generate --lora norms.safetensors:0.8` writes on the f32 model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_job_with_norm_deltas_is_generate_with_them_merged() {
    let tmp = tempfile::tempdir().unwrap();
    let model = f32_demo(tmp.path());
    let mut a = args(tmp.path());
    (a.models, a.lora_dir) = (vec![model.clone()], Some(lora_dir(tmp.path())));
    let s = start(&a).await;
    let id = s.submit(body(json!([{"name": "norms", "scale": 0.8}]))).await;
    let done = s.wait_done(&id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let served = s.get_bytes(&format!("/v1/videos/{id}/content")).await.2;
    s.shutdown().await;

    let gp = GenerateParams { steps: Some(3), seed: 11, ..GenerateParams::new("a red ball bounces") };
    let spec = LoraSpec { path: tmp.path().join("loras/norms.safetensors"), scale: 0.8 };
    let opts = LoadOptions { loras: vec![spec], ..Default::default() };
    assert!(served == generate_mp4_with(&model, opts, &gp, tmp.path()), "served MP4 differs from generate --lora's");
    assert!(served != generate_mp4(&model, &gp, tmp.path()), "the norm deltas change the MP4");
}
