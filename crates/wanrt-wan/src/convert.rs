//! `wanrt convert`: an original Wan-Video release folder rewritten in the diffusers layout
//! (`model_index.json`, `text_encoder/`, `tokenizer/`, `transformer/`, `vae/`, `scheduler/`, and
//! for image-to-video releases `image_encoder/` + `image_processor/`), the form `wanrt optimize`
//! and diffusers' `WanPipeline` / `WanImageToVideoPipeline.from_pretrained` read.
//!
//! Tensors are renamed by [`crate::names`] and written with their stored dtype and bytes
//! (bf16 stays bf16), so the converted folder generates the same frames bit for bit. Configs are
//! the ones the loader infers from the release's tensors and `config.json`, serialized under
//! diffusers' / transformers' keys; the release's `text_len` becomes the folder's default
//! `max_sequence_length` (`wanrt.json`). The folder appears whole or not at all.

use crate::image::ClipImageProcessor;
use crate::model::{original, ModelDefaults, DEFAULTS_FILE};
use crate::scheduler::SchedulerConfig;
use crate::{Error, Result};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;
use wanrt_nn::WeightStore;

/// Config JSON of `config` with diffusers' / transformers' identification keys added.
fn config_with(config: &impl Serialize, extra: Value) -> Result<Value> {
    let mut v = serde_json::to_value(config).map_err(|e| Error::Config(format!("cannot serialize a config: {e}")))?;
    if let (Some(obj), Value::Object(add)) = (v.as_object_mut(), extra) {
        obj.extend(add);
    }
    Ok(v)
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::file(path, e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|e| Error::file(path, format!("cannot write: {e}")))
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::file(path, format!("cannot create: {e}")))
}

/// One component folder: `config.json` plus its weights in one safetensors file.
fn write_component(dir: &Path, config: &Value, weights: &WeightStore, file: &str) -> Result<()> {
    create_dir(dir)?;
    write_json(&dir.join("config.json"), config)?;
    Ok(weights.write_safetensors(&dir.join(file))?)
}

/// Writes the diffusers-layout copy of the original release folder `src` to `out` (which must
/// not exist or be empty). `stage` is told which component is being written.
pub fn original_to_diffusers(src: &Path, out: &Path, mut stage: impl FnMut(&str)) -> Result<()> {
    if crate::model::Layout::detect(src)? != crate::model::Layout::Original {
        return Err(Error::file(
            src,
            "is not in the original release layout (it has model_index.json or transformer/)",
        ));
    }
    if wanrt_io::is_inside(out, src) {
        return Err(Error::file(
            out,
            format!("is inside the release folder {} (choose a folder outside it)", src.display()),
        ));
    }
    wanrt_io::check_output_dir(out).map_err(|e| Error::Msg(e.to_string()))?;
    let defaults = ModelDefaults::read(src)?;
    let fill = |tmp: &Path| -> Result<()> {
        stage("text encoder");
        let (t5, te_cfg) = original::text_encoder(src)?;
        let te_json = config_with(&te_cfg, json!({"model_type": "umt5", "architectures": ["UMT5EncoderModel"]}))?;
        write_component(&tmp.join("text_encoder"), &te_json, &t5, "model.safetensors")?;
        drop(t5);
        let tokenizer = original::tokenizer_dir(src);
        wanrt_io::copy_tree(&tokenizer, &tmp.join("tokenizer")).map_err(|e| Error::Msg(e.to_string()))?;

        stage("transformer");
        let experts = original::Experts::of(src);
        let (dit, tr_cfg, release) = original::transformer(experts.first(), None)?;
        let with_images = tr_cfg.is_image_conditioned();
        // Image-to-video: the image latent rides beside the noise (Wan2.2 A14B I2V has no CLIP).
        let image_latent = tr_cfg.in_channels != tr_cfg.out_channels();
        let tr_json = config_with(&tr_cfg, json!({"_class_name": "WanTransformer3DModel"}))?;
        write_component(&tmp.join("transformer"), &tr_json, &dit, "diffusion_pytorch_model.safetensors")?;
        drop(dit);

        let mut index = json!({
            "_class_name": if image_latent { "WanImageToVideoPipeline" } else { "WanPipeline" },
            "text_encoder": ["transformers", "UMT5EncoderModel"],
            "tokenizer": ["transformers", "T5TokenizerFast"],
            "transformer": ["diffusers", "WanTransformer3DModel"],
            "vae": ["diffusers", "AutoencoderKLWan"],
        });
        if let original::Experts::Two { low_noise, .. } = &experts {
            stage("transformer_2");
            let (dit, cfg, _) = original::transformer(low_noise, None)?;
            let json = config_with(&cfg, json!({"_class_name": "WanTransformer3DModel"}))?;
            write_component(&tmp.join("transformer_2"), &json, &dit, "diffusion_pytorch_model.safetensors")?;
            index["transformer_2"] = json!(["diffusers", "WanTransformer3DModel"]);
            index["boundary_ratio"] = json!(original::boundary_ratio(release.model_type, &defaults)?);
        }
        if with_images {
            stage("image encoder");
            let (clip, clip_cfg) = original::image_encoder(src, &defaults)?;
            let clip_json = config_with(
                &clip_cfg,
                json!({"model_type": "clip_vision_model", "architectures": ["CLIPVisionModel"]}),
            )?;
            write_component(&tmp.join("image_encoder"), &clip_json, &clip, "model.safetensors")?;
            create_dir(&tmp.join("image_processor"))?;
            write_json(
                &tmp.join("image_processor/preprocessor_config.json"),
                &ClipImageProcessor::openai(clip_cfg.image_size).to_json(),
            )?;
            index["image_encoder"] = json!(["transformers", "CLIPVisionModel"]);
            index["image_processor"] = json!(["transformers", "CLIPImageProcessor"]);
        }
        if release.model_type == original::ModelType::Ti2v {
            index["expand_timesteps"] = json!(true);
        }

        stage("vae");
        let (vae, vae_cfg) = original::vae(src, release.model_type, &defaults)?;
        let vae_json = config_with(&vae_cfg, json!({"_class_name": "AutoencoderKLWan"}))?;
        write_component(&tmp.join("vae"), &vae_json, &vae, "diffusion_pytorch_model.safetensors")?;

        let scheduler = SchedulerConfig::original_release_default().json;
        create_dir(&tmp.join("scheduler"))?;
        write_json(&tmp.join("scheduler/scheduler_config.json"), &scheduler)?;
        index["scheduler"] = json!(["diffusers", scheduler.get("_class_name").cloned().unwrap_or(Value::Null)]);
        write_json(&tmp.join("model_index.json"), &index)?;

        // The release's own defaults, plus its context length (a diffusers folder has no text_len).
        let defaults_path = src.join(DEFAULTS_FILE);
        let mut wanrt_json: Value = if defaults_path.is_file() {
            let text = std::fs::read_to_string(&defaults_path)
                .map_err(|e| Error::file(&defaults_path, format!("cannot read: {e}")))?;
            serde_json::from_str(&text).map_err(|e| Error::file(&defaults_path, format!("invalid JSON: {e}")))?
        } else {
            json!({})
        };
        if let (Some(obj), Some(len)) = (wanrt_json.as_object_mut(), release.text_len) {
            obj.entry("max_sequence_length").or_insert(json!(len));
        }
        if wanrt_json.as_object().is_some_and(|o| !o.is_empty()) {
            write_json(&tmp.join(DEFAULTS_FILE), &wanrt_json)?;
        }
        Ok(())
    };
    wanrt_io::create_dir_atomic_with(out, fill, |e| Error::file(out, e.to_string()))
}
