//! `optimize()` end to end on a tiny random diffusers Wan model (fixtures/wan/a):
//! every mode writes an artifact that loads and runs, the loaded artifact
//! reproduces the in-memory optimized transformer exactly, pruning zero
//! channels changes nothing, and damaged artifacts fail with clear errors.

use std::path::{Path, PathBuf};
use wanrt_nn::{HostTensor, Module, WeightStore};
use wanrt_opt::calibrate::{calibrate, CalibPrompt, CalibSettings};
use wanrt_opt::sensitivity::{outputs, relative_error};
use wanrt_opt::{optimize, ActivationChoice, OptimizeOptions, QuantMode};
use wanrt_wan::artifact::LayerFormat;
use wanrt_wan::model::WanModel;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/wan/a")
}

fn calib() -> CalibSettings {
    CalibSettings {
        prompts: ["a red fox runs through snow", "waves on a beach at sunset"].map(CalibPrompt::text).to_vec(),
        frames: Some(9),
        height: Some(32),
        width: Some(48),
        steps: 3,
        seed: 7,
        max_samples: 4,
    }
}

fn options(quant: QuantMode) -> OptimizeOptions {
    OptimizeOptions { quant, ..OptimizeOptions::default() }
}

fn run(src: &Path, out: &Path, opts: &OptimizeOptions) -> wanrt_opt::OptimizeSummary {
    optimize(src, out, opts, &calib(), &mut ()).unwrap_or_else(|e| panic!("optimize: {e}"))
}

/// Relative output error of `model_dir`'s transformer vs the fixture's on the calibration inputs.
fn artifact_error(model_dir: &Path) -> f64 {
    let mut source = WanModel::load(&fixture(), |_| {}).unwrap();
    let samples = calibrate(&mut source, &calib(), &mut |_, _| {}).unwrap().samples;
    let reference = outputs(&source.transformer, &samples).unwrap();
    let artifact = WanModel::load(model_dir, |_| {}).unwrap();
    relative_error(&outputs(&artifact.transformer, &samples).unwrap(), &reference)
}

#[test]
fn every_mode_writes_an_artifact_that_reproduces_the_measured_model() {
    let tmp = tempfile::tempdir().unwrap();
    let static_int8 = OptimizeOptions { activation: ActivationChoice::Static, ..options(QuantMode::Int8) };
    let attn = OptimizeOptions { attn_quant: true, ..options(QuantMode::Int8) };
    let cases = [
        ("int8-weight", options(QuantMode::Int8Weight), LayerFormat::Int8Weight),
        ("int8", options(QuantMode::Int8), LayerFormat::Int8),
        ("int8-static", static_int8, LayerFormat::Int8),
        ("fp8", options(QuantMode::Fp8), LayerFormat::Fp8),
        ("int8-attn", attn, LayerFormat::Int8),
    ];
    let f32_bytes = WanModel::load(&fixture(), |_| {}).unwrap().transformer.weight_bytes();
    for (name, opts, format) in cases {
        let out = tmp.path().join(name);
        let summary = run(&fixture(), &out, &opts);
        let loaded = WanModel::load(&out, |_| {}).unwrap();
        let manifest = loaded.artifact.as_ref().expect("artifact manifest");
        assert_eq!(manifest.layers.len(), 14, "{name}: 7 linears × 2 blocks");
        assert!(manifest.layers.iter().all(|l| l.format == format), "{name}");
        assert_eq!(manifest.int8_attention_blocks.is_empty(), !opts.attn_quant, "{name}");
        assert!(loaded.transformer.weight_bytes() < f32_bytes, "{name}: weights must shrink");
        assert_eq!(loaded.transformer.weight_bytes(), summary.weight_bytes_after, "{name}");
        // The artifact on disk is the model whose error optimize measured.
        let err = artifact_error(&out);
        println!("{name}: transformer relative error {err:.3e}");
        assert!(err > 0.0 && err < 0.2, "{name}: {err}");
        assert!(
            (err - summary.transformer_error).abs() <= 1e-9 * err.max(1.0),
            "{name}: {err} vs {}",
            summary.transformer_error
        );
        // And it generates.
        let mut p = wanrt_wan::pipeline::GenerateParams::new("a red fox");
        p.steps = Some(2);
        p.num_frames = Some(5);
        p.height = Some(32);
        p.width = Some(32);
        let video = loaded.generate(&p, &mut ()).unwrap().video;
        assert!(video.data().iter().all(|v| v.is_finite()));
    }
}

#[test]
fn max_error_keeps_the_most_sensitive_layers_in_full_precision() {
    let tmp = tempfile::tempdir().unwrap();
    let all =
        run(&fixture(), &tmp.path().join("all"), &OptimizeOptions { sensitivity: true, ..options(QuantMode::Fp8) });
    assert_eq!(all.sensitivity.len(), 14);
    let bound = all.transformer_error / 3.0;
    let opts = OptimizeOptions { max_error: Some(bound), ..options(QuantMode::Fp8) };
    let capped = run(&fixture(), &tmp.path().join("capped"), &opts);
    assert!(capped.transformer_error <= bound, "{} > {bound}", capped.transformer_error);
    let kept: Vec<_> = capped.manifest.layers.iter().filter(|l| l.format == LayerFormat::F32).collect();
    assert!(!kept.is_empty() && kept.len() < 14);
    // The first layer reverted is the most sensitive one.
    let worst = all.sensitivity.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    assert!(kept.iter().any(|l| l.name == worst.0), "{} not kept", worst.0);
    // --keep-precision globs match checkpoint tensor names.
    let glob = OptimizeOptions {
        keep_precision: vec!["blocks.1.*".into(), "*.attn2.to_k".into()],
        ..options(QuantMode::Int8)
    };
    let s = run(&fixture(), &tmp.path().join("glob"), &glob);
    for l in &s.manifest.layers {
        let full = l.name.starts_with("blocks.1.") || l.name == "blocks.0.attn2.to_kv";
        assert_eq!(l.format == LayerFormat::F32, full, "{}", l.name);
    }
}

/// Writes a copy of the fixture whose FFN channels `zeroed` have zero output weights.
fn fixture_with_dead_channels(dst: &Path, zeroed: &[usize]) {
    copy_dir(&fixture(), dst);
    let file = dst.join("transformer/diffusion_pytorch_model.safetensors");
    let ws = WeightStore::from_safetensors_files(std::slice::from_ref(&file)).unwrap();
    let mut tensors: Vec<(String, HostTensor)> = ws.names().map(|n| (n.to_string(), ws.get(n).unwrap())).collect();
    for (name, t) in tensors.iter_mut() {
        if name.ends_with("ffn.net.2.weight") {
            let cols = t.dim(1);
            for (i, v) in t.data_mut().iter_mut().enumerate() {
                if zeroed.contains(&(i % cols)) {
                    *v = 0.0;
                }
            }
        }
    }
    drop(ws);
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.data().iter().flat_map(|v| v.to_le_bytes()).collect(), t.shape().to_vec()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
        })
        .collect();
    std::fs::remove_file(&file).unwrap();
    safetensors::serialize_to_file(views, None, &file).unwrap();
}

#[test]
fn ffn_pruned_model_equals_unpruned_when_pruned_channels_are_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let zeroed: Vec<usize> = (0..48).filter(|c| c % 4 == 1).collect(); // 12 of 48 = 25%
    fixture_with_dead_channels(&src, &zeroed);
    let opts = OptimizeOptions { prune_ffn: 0.25, ..options(QuantMode::None) };
    let summary = optimize(&src, &tmp.path().join("pruned"), &opts, &calib(), &mut ()).unwrap();
    let kept = summary.manifest.pruning.ffn_kept.clone().unwrap();
    let expected: Vec<usize> = (0..48).filter(|c| !zeroed.contains(c)).collect();
    assert_eq!(kept, vec![expected.clone(), expected]);
    assert!(summary.params_after < summary.params_before);
    let pruned = WanModel::load(&tmp.path().join("pruned"), |_| {}).unwrap();
    assert_eq!(pruned.transformer.config.ffn_dim, 36);
    let mut source = WanModel::load(&src, |_| {}).unwrap();
    let samples = calibrate(&mut source, &calib(), &mut |_, _| {}).unwrap().samples;
    let err = relative_error(
        &outputs(&pruned.transformer, &samples).unwrap(),
        &outputs(&source.transformer, &samples).unwrap(),
    );
    println!("pruned vs unpruned relative error {err:.3e}");
    assert!(err < 1e-6, "{err}");
}

#[test]
fn head_pruning_runs_and_its_error_is_measured() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = OptimizeOptions { prune_heads: 1, prune_ffn: 0.5, ..options(QuantMode::Int8) };
    let s = run(&fixture(), &tmp.path().join("p"), &opts);
    assert!(s.pruning_error > 0.0 && s.transformer_error > 0.0);
    let m = WanModel::load(&tmp.path().join("p"), |_| {}).unwrap();
    assert_eq!(m.transformer.config.self_attn_heads, Some(vec![1, 1]));
    assert_eq!(m.transformer.config.ffn_dim, 24);
    assert!((artifact_error(&tmp.path().join("p")) - s.transformer_error).abs() < 1e-9);
    let too_many = OptimizeOptions { prune_heads: 2, ..options(QuantMode::None) };
    let err = optimize(&fixture(), &tmp.path().join("q"), &too_many, &calib(), &mut ()).unwrap_err().to_string();
    assert!(err.contains("every head"), "{err}");
    assert!(!tmp.path().join("q").exists(), "no partial artifact");
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

fn load_err(dir: &Path) -> String {
    match WanModel::load(dir, |_| {}) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("wanrt-artifact.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn damaged_artifacts_fail_with_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    run(&fixture(), &good, &options(QuantMode::Int8));
    let case = |name: &str| {
        let d = tmp.path().join(name);
        copy_dir(&good, &d);
        d
    };
    let d = case("format");
    edit_manifest(&d, |m| m["layers"][0]["format"] = "fp8".into());
    assert!(load_err(&d).contains("is i8 but the layer is Fp8"), "{}", load_err(&d));

    let d = case("unlisted");
    edit_manifest(&d, |m| {
        m["layers"].as_array_mut().unwrap().remove(0);
    });
    assert!(load_err(&d).contains("quantized but not listed"), "{}", load_err(&d));

    let d = case("smooth");
    edit_manifest(&d, |m| m["layers"][0]["smooth"] = false.into());
    assert!(load_err(&d).contains("not listed in the manifest"), "{}", load_err(&d));

    let d = case("activation");
    edit_manifest(&d, |m| m["layers"][0]["activation"] = serde_json::Value::Null);
    assert!(load_err(&d).contains("needs an activation mode"), "{}", load_err(&d));

    let d = case("version");
    edit_manifest(&d, |m| m["version"] = 99.into());
    assert!(load_err(&d).contains("unsupported artifact format"), "{}", load_err(&d));

    let d = case("json");
    std::fs::write(d.join("wanrt-artifact.json"), "{ not json").unwrap();
    assert!(load_err(&d).contains("invalid artifact manifest"), "{}", load_err(&d));

    let d = case("truncated");
    let f = d.join("transformer/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    assert!(load_err(&d).contains("safetensors"), "{}", load_err(&d));

    let d = case("scale");
    let f = d.join("transformer/diffusion_pytorch_model.safetensors");
    let ws = WeightStore::from_safetensors_files(std::slice::from_ref(&f)).unwrap();
    let kept: Vec<(String, wanrt_nn::DType, Vec<usize>, Vec<u8>)> = ws
        .names()
        .filter(|n| *n != "blocks.0.ffn.net.2.weight_scale")
        .map(|n| {
            let r = ws.raw(n).unwrap();
            (n.to_string(), r.dtype, r.shape.clone(), r.bytes().into_owned())
        })
        .collect();
    drop(ws);
    let views: Vec<(String, safetensors::tensor::TensorView)> = kept
        .iter()
        .map(|(n, d, s, b)| {
            let dt = match d {
                wanrt_nn::DType::I8 => safetensors::Dtype::I8,
                _ => safetensors::Dtype::F32,
            };
            (n.clone(), safetensors::tensor::TensorView::new(dt, s.clone(), b).unwrap())
        })
        .collect();
    std::fs::remove_file(&f).unwrap();
    safetensors::serialize_to_file(views, None, &f).unwrap();
    assert!(load_err(&d).contains("missing tensor `blocks.0.ffn.net.2.weight_scale`"), "{}", load_err(&d));

    // The source of an optimization must not be an artifact, and outputs are never overwritten.
    let err = optimize(&good, &tmp.path().join("again"), &options(QuantMode::Int8), &calib(), &mut ()).unwrap_err();
    assert!(err.to_string().contains("already an optimized artifact"), "{err}");
    let err = optimize(&fixture(), &good, &options(QuantMode::Int8), &calib(), &mut ()).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}

/// `--text-encoder int8-weight`: every UMT5 linear and the embedding stored as int8 codes, the artifact's encoder is
/// the one whose embedding error optimize measured, it generates, and a mislabelled layer fails.
#[test]
fn text_encoder_int8_weight_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("te");
    let opts = OptimizeOptions { text_encoder_int8: true, ..options(QuantMode::Int8) };
    let summary = run(&fixture(), &out, &opts);
    let te = summary.text_encoder.as_ref().expect("text encoder summary");
    println!(
        "text encoder: embedding error {:.3e}, {} → {} bytes",
        te.embedding_error, te.weight_bytes_before, te.weight_bytes_after
    );
    assert!(te.embedding_error > 0.0 && te.embedding_error < 0.05, "{}", te.embedding_error);
    assert!(te.weight_bytes_after < te.weight_bytes_before);

    let source = WanModel::load(&fixture(), |_| {}).unwrap();
    let loaded = WanModel::load(&out, |_| {}).unwrap();
    let layers = &loaded.artifact.as_ref().unwrap().text_encoder_layers;
    let cfg = &source.text_encoder.config;
    assert_eq!(layers.len(), 7 * cfg.num_layers + 1, "7 linears per block + the token embedding");
    assert_eq!(layers[0].name, "shared");
    assert!(layers.iter().all(|l| l.format == LayerFormat::Int8Weight && l.activation.is_none()));
    let te_file = WeightStore::from_diffusers_dir(&out.join("text_encoder"), "model").unwrap();
    let q = te_file.raw("encoder.block.0.layer.0.SelfAttention.q.weight").unwrap();
    assert_eq!(q.dtype, wanrt_nn::DType::I8);
    assert_eq!(loaded.text_encoder.weight_bytes(), te.weight_bytes_after);

    // The measured error is the loaded artifact's error.
    let prompts: Vec<String> = calib().prompts.into_iter().map(|p| p.prompt).collect();
    let max_len = source.resolve(&wanrt_wan::pipeline::GenerateParams::new(&prompts[0])).unwrap().max_sequence_length;
    let embed = |m: &WanModel| {
        let e = wanrt_wan::text::encode_prompts(&m.tokenizer, &m.text_encoder, &prompts, max_len).unwrap();
        m.text_encoder.backend().to_host(&e).unwrap()
    };
    let err = relative_error(&[embed(&loaded)], &[embed(&source)]);
    assert!((err - te.embedding_error).abs() <= 1e-12, "{err} vs {}", te.embedding_error);

    let mut p = wanrt_wan::pipeline::GenerateParams::new("a red fox");
    (p.num_frames, p.height, p.width, p.steps) = (Some(5), Some(32), Some(32), Some(2));
    assert!(loaded.generate(&p, &mut ()).unwrap().video.data().iter().all(|v| v.is_finite()));

    // A quantized text encoder tensor the manifest does not list is refused.
    let d = tmp.path().join("te-unlisted");
    copy_dir(&out, &d);
    edit_manifest(&d, |m| {
        m["text_encoder_layers"].as_array_mut().unwrap().remove(0);
    });
    let e = load_err(&d);
    assert!(e.contains("quantized but not listed") && e.contains("text_encoder"), "{e}");
}

/// A folder in the original release layout is converted (into a staging folder beside the
/// output, removed afterwards) and optimized like its diffusers copy.
#[test]
fn original_release_folder_is_converted_then_optimized() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("release");
    copy_dir(&fixture().join("../a_original"), &src);
    // The fixture's VAE has z_dim 4, for which the release defines no latent statistics.
    let vae: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("vae/config.json")).unwrap()).unwrap();
    let defaults = serde_json::json!({"vae_latents_mean": vae["latents_mean"], "vae_latents_std": vae["latents_std"]});
    std::fs::write(src.join("wanrt.json"), defaults.to_string()).unwrap();
    let out = tmp.path().join("artifact");
    let summary = run(&src, &out, &options(QuantMode::Int8));
    assert!(summary.transformer_error > 0.0 && summary.transformer_error < 0.2, "{}", summary.transformer_error);
    let loaded = WanModel::load(&out, |_| {}).unwrap();
    assert_eq!(loaded.layout, wanrt_wan::model::Layout::Diffusers);
    let manifest = loaded.artifact.as_ref().expect("artifact manifest");
    assert_eq!(manifest.source["folder"], "release");
    assert_eq!(manifest.source["layout"], "original (converted)");
    assert!(manifest.layers.iter().all(|l| l.format == LayerFormat::Int8));
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "staging folder left behind: {left:?}");
    let mut p = wanrt_wan::pipeline::GenerateParams::new("a red fox");
    p.steps = Some(2);
    p.num_frames = Some(5);
    p.height = Some(32);
    p.width = Some(32);
    assert!(loaded.generate(&p, &mut ()).unwrap().video.data().iter().all(|v| v.is_finite()));
}

fn read_png(path: &Path) -> wanrt_wan::image::RgbImage {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_rgb8();
    wanrt_wan::image::RgbImage::new(img.height() as usize, img.width() as usize, img.into_raw()).unwrap()
}

/// Image-to-video (CLIP states + image latent channels), first-last-frame and Wan2.2 TI2V (image
/// latent as the first frame, per-frame timesteps): calibration runs them with their images, and
/// the artifact on disk is the model whose error was measured on those inputs.
#[test]
fn image_models_calibrate_on_their_images() {
    let tmp = tempfile::tempdir().unwrap();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    for (group, case, images) in [
        ("wan_i2v", "i2v_a", &["image.png"][..]),
        ("wan_i2v", "flf2v_a", &["image.png", "last_image.png"][..]),
        ("wan_ti2v", "ti2v_a", &["image.png"][..]),
    ] {
        let src = fixtures.join(group).join(case);
        let frames: Vec<_> = images.iter().map(|f| read_png(&src.join(f))).collect();
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(src.join("meta.json")).unwrap()).unwrap();
        let mut settings = calib();
        settings.height = meta["height"].as_u64().map(|v| v as usize);
        settings.width = meta["width"].as_u64().map(|v| v as usize);
        for p in &mut settings.prompts {
            p.image = frames.first().cloned();
            p.last_image = frames.get(1).cloned();
        }
        let out = tmp.path().join(case);
        let summary = optimize(&src, &out, &options(QuantMode::Int8), &settings, &mut ()).unwrap();
        let mut source = WanModel::load(&src, |_| {}).unwrap();
        let samples = calibrate(&mut source, &settings, &mut |_, _| {}).unwrap().samples;
        let with_images = samples.iter().filter(|s| s.image.is_some()).count();
        assert_eq!(with_images > 0, source.image_encoder.is_some(), "{case}: image states recorded");
        let reference = outputs(&source.transformer, &samples).unwrap();
        let artifact = WanModel::load(&out, |_| {}).unwrap();
        let err = relative_error(&outputs(&artifact.transformer, &samples).unwrap(), &reference);
        println!("{case}: transformer relative error {err:.3e}");
        assert!(err > 0.0 && err < 0.2, "{case}: {err}");
        assert!(
            (err - summary.transformer_error).abs() <= 1e-9 * err.max(1.0),
            "{case}: {err} vs {}",
            summary.transformer_error
        );
    }
    // Without its image, an image-to-video model's calibration stops with the pipeline's error.
    let err = optimize(
        &fixtures.join("wan_i2v/i2v_a"),
        &tmp.path().join("none"),
        &options(QuantMode::Int8),
        &calib(),
        &mut (),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("needs --image"), "{err}");
}

/// Two-expert models (Wan2.2 A14B; diffusers and release layout): each expert is calibrated on the
/// steps it runs, quantized on its own inputs, and the artifact's experts are the ones whose errors
/// were measured.
#[test]
fn two_expert_models_optimize_each_expert() {
    let tmp = tempfile::tempdir().unwrap();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    for two in [fixtures.join("wan_moe/t2v_a"), fixtures.join("wan_original/a14b_t2v")] {
        let out = tmp.path().join(format!("two-{}", two.file_name().unwrap().to_string_lossy()));
        let mut settings = calib();
        settings.steps = 4;
        let summary = optimize(&two, &out, &options(QuantMode::Int8), &settings, &mut ()).unwrap();
        let (e1, e2) = (summary.transformer_error, summary.transformer_2_error.expect("a second expert's error"));
        assert!(e1 > 0.0 && e1 < 0.2 && e2 > 0.0 && e2 < 0.2, "{e1} {e2}");
        let artifact = WanModel::load(&out, |_| {}).unwrap();
        let manifest = artifact.artifact.as_ref().unwrap();
        let second = manifest.transformer_2.as_ref().expect("a transformer_2 section");
        assert!(second.layers.iter().all(|l| l.format == LayerFormat::Int8) && !second.layers.is_empty());
        let mut source = WanModel::load(&two, |_| {}).unwrap();
        let cal = calibrate(&mut source, &settings, &mut |_, _| {}).unwrap();
        assert!(!cal.samples.is_empty() && !cal.samples_2.is_empty());
        for (src_tr, art_tr, samples, want) in [
            (&source.transformer, &artifact.transformer, &cal.samples, e1),
            (source.transformer_2.as_ref().unwrap(), artifact.transformer_2.as_ref().unwrap(), &cal.samples_2, e2),
        ] {
            let err = relative_error(&outputs(art_tr, samples).unwrap(), &outputs(src_tr, samples).unwrap());
            assert!((err - want).abs() <= 1e-9 * err.max(1.0), "{}: {err} vs {want}", two.display());
        }
        let mut p = wanrt_wan::pipeline::GenerateParams::new("a fox");
        (p.steps, p.num_frames, p.height, p.width) = (Some(3), Some(5), Some(32), Some(48));
        assert!(artifact.generate(&p, &mut ()).unwrap().video.data().iter().all(|v| v.is_finite()));
    }
}

/// `--lora-2` bakes a low-noise LoRA into the artifact's `transformer_2`: with `--quant none` the
/// artifact generates what the source does with the LoRA loaded on its second expert, the
/// manifest records it under `loras_2`, and the video differs from the LoRA-free source's.
#[test]
fn two_expert_models_bake_a_low_noise_lora() {
    use wanrt_nn::weights::{write_safetensors, RawTensor};
    use wanrt_wan::lora::LoraSpec;
    use wanrt_wan::model::LoadOptions;
    let tmp = tempfile::tempdir().unwrap();
    let two = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/wan_moe/t2v_a");
    // Rank 2 on the low-noise expert's first query projection (24 × 24).
    let a = HostTensor::new([2, 24], (0..48).map(|i| (i as f32 * 0.7).sin() * 0.4).collect()).unwrap();
    let b = HostTensor::new([24, 2], (0..48).map(|i| (i as f32 * 1.3).cos() * 0.4).collect()).unwrap();
    let lora = tmp.path().join("low.safetensors");
    let (ra, rb) = (RawTensor::from_f32(&a), RawTensor::from_f32(&b));
    let keys = [
        ("transformer.blocks.0.attn1.to_q.lora_A.weight", &ra),
        ("transformer.blocks.0.attn1.to_q.lora_B.weight", &rb),
    ];
    write_safetensors(&lora, keys).unwrap();
    let spec = LoraSpec { path: lora, scale: 0.8 };
    let out = tmp.path().join("baked");
    let mut opts = options(QuantMode::None);
    opts.loras_2 = vec![spec.clone()];
    let mut settings = calib();
    settings.steps = 4;
    let summary = optimize(&two, &out, &opts, &settings, &mut ()).unwrap();
    assert_eq!((summary.loras.len(), summary.loras_2.len()), (0, 1));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("wanrt-artifact.json")).unwrap()).unwrap();
    assert_eq!(manifest["settings"]["loras_2"][0]["file"], "low.safetensors");

    let mut p = wanrt_wan::pipeline::GenerateParams::new("a fox");
    (p.steps, p.num_frames, p.height, p.width, p.seed) = (Some(4), Some(5), Some(32), Some(48), 3);
    let video = |m: &WanModel| m.generate(&p, &mut ()).unwrap().video;
    let baked = video(&WanModel::load(&out, |_| {}).unwrap());
    let load = LoadOptions { loras_2: vec![spec], ..Default::default() };
    let loaded = video(&WanModel::load_with(&two, load, |_| {}).unwrap());
    let err = baked.max_abs_diff(&loaded).unwrap();
    assert!(err <= 2e-5, "baked vs loaded low-noise LoRA: max|Δ| {err:e}");
    let effect = baked.max_abs_diff(&video(&WanModel::load(&two, |_| {}).unwrap())).unwrap();
    assert!(effect > 1e-3, "the LoRA changes the video ({effect:e})");
}
