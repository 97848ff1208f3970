//! HostTensor-name maps from the original Wan-Video release layout to diffusers
//! names (the inverse of diffusers' `scripts/convert_wan_to_diffusers.py`;
//! rules documented in tools/fixtures/README.md and fixtures/wan/name_maps.json).
//! Each function returns `None` for a name it does not know, so callers can
//! report unmapped tensors instead of silently ignoring them.

/// Splits `blocks.{i}.{rest}` into `(i, rest)`.
fn indexed<'a>(name: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let rest = name.strip_prefix(prefix)?;
    let (idx, tail) = rest.split_once('.')?;
    Some((idx.parse().ok()?, tail))
}

/// DiT: original → diffusers. A `model.diffusion_model.` prefix is stripped.
pub fn transformer(name: &str) -> Option<String> {
    let name = name.strip_prefix("model.diffusion_model.").unwrap_or(name);
    const TOP: &[(&str, &str)] = &[
        ("text_embedding.0.", "condition_embedder.text_embedder.linear_1."),
        ("text_embedding.2.", "condition_embedder.text_embedder.linear_2."),
        ("time_embedding.0.", "condition_embedder.time_embedder.linear_1."),
        ("time_embedding.2.", "condition_embedder.time_embedder.linear_2."),
        ("time_projection.1.", "condition_embedder.time_proj."),
        ("head.head.", "proj_out."),
        ("patch_embedding.", "patch_embedding."),
        // Image-to-video: the CLIP-token embedder (LayerNorm, Linear, GELU, Linear, LayerNorm).
        ("img_emb.proj.0.", "condition_embedder.image_embedder.norm1."),
        ("img_emb.proj.1.", "condition_embedder.image_embedder.ff.net.0.proj."),
        ("img_emb.proj.3.", "condition_embedder.image_embedder.ff.net.2."),
        ("img_emb.proj.4.", "condition_embedder.image_embedder.norm2."),
    ];
    match name {
        "head.modulation" => return Some("scale_shift_table".into()),
        "img_emb.emb_pos" => return Some("condition_embedder.image_embedder.pos_embed".into()),
        _ => {}
    }
    for (from, to) in TOP {
        if let Some(rest) = name.strip_prefix(from) {
            return Some(format!("{to}{rest}"));
        }
    }
    let (i, rest) = indexed(name, "blocks.")?;
    let mapped = match rest {
        "modulation" => "scale_shift_table".to_string(),
        _ => {
            let (module, leaf) = rest.split_once('.')?;
            match module {
                "self_attn" | "cross_attn" => {
                    let attn = if module == "self_attn" { "attn1" } else { "attn2" };
                    let (proj, p) = leaf.split_once('.')?;
                    let proj = match proj {
                        "q" => "to_q",
                        "k" => "to_k",
                        "v" => "to_v",
                        "o" => "to_out.0",
                        "norm_q" | "norm_k" => proj,
                        // The image tokens' own keys and values (I2V cross-attention).
                        "k_img" if module == "cross_attn" => "add_k_proj",
                        "v_img" if module == "cross_attn" => "add_v_proj",
                        "norm_k_img" if module == "cross_attn" => "norm_added_k",
                        _ => return None,
                    };
                    format!("{attn}.{proj}.{p}")
                }
                "norm3" => format!("norm2.{leaf}"),
                "ffn" => {
                    let (idx, p) = leaf.split_once('.')?;
                    match idx {
                        "0" => format!("ffn.net.0.proj.{p}"),
                        "2" => format!("ffn.net.2.{p}"),
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    };
    Some(format!("blocks.{i}.{mapped}"))
}

/// Original residual-block leaf → diffusers `WanResidualBlock` leaf.
fn residual_leaf(leaf: &str) -> Option<String> {
    Some(match leaf {
        "residual.0.gamma" => "norm1.gamma".into(),
        "residual.3.gamma" => "norm2.gamma".into(),
        _ => {
            if let Some(p) = leaf.strip_prefix("residual.2.") {
                format!("conv1.{p}")
            } else if let Some(p) = leaf.strip_prefix("residual.6.") {
                format!("conv2.{p}")
            } else if let Some(p) = leaf.strip_prefix("shortcut.") {
                format!("conv_shortcut.{p}")
            } else {
                return None;
            }
        }
    })
}

/// The VAE names both releases share: the convolutions around the latent, the stems, heads and
/// middle blocks.
fn vae_shared(name: &str) -> Option<String> {
    const TOP: &[(&str, &str)] = &[
        ("conv1.", "quant_conv."),
        ("conv2.", "post_quant_conv."),
        ("encoder.conv1.", "encoder.conv_in."),
        ("decoder.conv1.", "decoder.conv_in."),
        ("encoder.head.0.", "encoder.norm_out."),
        ("encoder.head.2.", "encoder.conv_out."),
        ("decoder.head.0.", "decoder.norm_out."),
        ("decoder.head.2.", "decoder.conv_out."),
    ];
    for (from, to) in TOP {
        if let Some(rest) = name.strip_prefix(from) {
            return Some(format!("{to}{rest}"));
        }
    }
    for side in ["encoder", "decoder"] {
        if let Some((k, leaf)) = indexed(name, &format!("{side}.middle.")) {
            return match k {
                0 | 2 => Some(format!("{side}.mid_block.resnets.{}.{}", k / 2, residual_leaf(leaf)?)),
                1 => Some(format!("{side}.mid_block.attentions.0.{leaf}")),
                _ => None,
            };
        }
    }
    None
}

/// Wan2.1 VAE (`Wan2.1_VAE.pth`): original → diffusers; `num_res_blocks` (R) fixes the decoder's
/// flat indices.
pub fn vae(name: &str, num_res_blocks: usize) -> Option<String> {
    if let Some(mapped) = vae_shared(name) {
        return Some(mapped);
    }
    if let Some((k, leaf)) = indexed(name, "encoder.downsamples.") {
        let leaf = if leaf.starts_with("resample.") || leaf.starts_with("time_conv.") {
            leaf.to_string()
        } else {
            residual_leaf(leaf)?
        };
        return Some(format!("encoder.down_blocks.{k}.{leaf}"));
    }
    if let Some((k, leaf)) = indexed(name, "decoder.upsamples.") {
        let per_stage = num_res_blocks + 2;
        let (i, j) = (k / per_stage, k % per_stage);
        return if j <= num_res_blocks {
            Some(format!("decoder.up_blocks.{i}.resnets.{j}.{}", residual_leaf(leaf)?))
        } else {
            Some(format!("decoder.up_blocks.{i}.upsamplers.0.{leaf}"))
        };
    }
    None
}

/// Wan2.2's residual VAE (`Wan2.2_VAE.pth`): original → diffusers. Each stage nests its blocks
/// (`encoder.downsamples.{i}.downsamples.{j}`): residual blocks, then the stage's resampler.
pub fn vae_residual(name: &str) -> Option<String> {
    if let Some(mapped) = vae_shared(name) {
        return Some(mapped);
    }
    for (side, stages, blocks, sampler) in
        [("encoder", "downsamples", "down_blocks", "downsampler"), ("decoder", "upsamples", "up_blocks", "upsampler")]
    {
        let Some((i, rest)) = indexed(name, &format!("{side}.{stages}.")) else { continue };
        let (j, leaf) = indexed(rest, &format!("{stages}."))?;
        return if leaf.starts_with("resample.") || leaf.starts_with("time_conv.") {
            Some(format!("{side}.{blocks}.{i}.{sampler}.{leaf}"))
        } else {
            Some(format!("{side}.{blocks}.{i}.resnets.{j}.{}", residual_leaf(leaf)?))
        };
    }
    None
}

/// One tensor of the I2V release's open-clip file, by what the image encoder makes of it.
#[derive(Debug, PartialEq, Eq)]
pub enum ClipTensor {
    /// Read under this transformers `CLIPVisionModel` name.
    Renamed(String),
    /// Layer `.0`'s fused `to_qkv` `.1` (`weight` / `bias`): rows split into `q_proj`, `k_proj`,
    /// `v_proj` of `encoder.layers.{0}.self_attn`.
    FusedQkv(usize, String),
    /// The text tower, the contrastive scale and the visual projection: not part of the image
    /// encoder (Wan reads the penultimate hidden states).
    Unused,
}

/// Wan's open-clip XLM-RoBERTa ViT-H/14 (`models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`)
/// → transformers `CLIPVisionModel` names (transformers 5 stores them without `vision_model.`).
pub fn clip(name: &str) -> Option<ClipTensor> {
    if name.starts_with("textual.") || name == "log_scale" || name == "visual.head" {
        return Some(ClipTensor::Unused);
    }
    let name = name.strip_prefix("visual.")?;
    const TOP: &[(&str, &str)] = &[
        ("patch_embedding.weight", "embeddings.patch_embedding.weight"),
        ("cls_embedding", "embeddings.class_embedding"),
        ("pos_embedding", "embeddings.position_embedding.weight"),
        ("pre_norm.weight", "pre_layrnorm.weight"),
        ("pre_norm.bias", "pre_layrnorm.bias"),
        ("post_norm.weight", "post_layernorm.weight"),
        ("post_norm.bias", "post_layernorm.bias"),
    ];
    if let Some((_, to)) = TOP.iter().find(|(from, _)| *from == name) {
        return Some(ClipTensor::Renamed(to.to_string()));
    }
    let (i, rest) = indexed(name, "transformer.")?;
    let (module, leaf) = rest.rsplit_once('.')?;
    if leaf != "weight" && leaf != "bias" {
        return None;
    }
    let to = match module {
        "attn.to_qkv" => return Some(ClipTensor::FusedQkv(i, leaf.to_string())),
        "norm1" => "layer_norm1",
        "norm2" => "layer_norm2",
        "attn.proj" => "self_attn.out_proj",
        "mlp.0" => "mlp.fc1",
        "mlp.2" => "mlp.fc2",
        _ => return None,
    };
    Some(ClipTensor::Renamed(format!("encoder.layers.{i}.{to}.{leaf}")))
}

/// UMT5: Wan's `T5Encoder` names → transformers `UMT5EncoderModel` names.
pub fn t5(name: &str) -> Option<String> {
    match name {
        "token_embedding.weight" => return Some("shared.weight".into()),
        "norm.weight" => return Some("encoder.final_layer_norm.weight".into()),
        _ => {}
    }
    let (i, rest) = indexed(name, "blocks.")?;
    let leaf = match rest {
        "norm1.weight" => "layer.0.layer_norm.weight",
        "attn.q.weight" => "layer.0.SelfAttention.q.weight",
        "attn.k.weight" => "layer.0.SelfAttention.k.weight",
        "attn.v.weight" => "layer.0.SelfAttention.v.weight",
        "attn.o.weight" => "layer.0.SelfAttention.o.weight",
        "pos_embedding.embedding.weight" => "layer.0.SelfAttention.relative_attention_bias.weight",
        "norm2.weight" => "layer.1.layer_norm.weight",
        "ffn.gate.0.weight" => "layer.1.DenseReluDense.wi_0.weight",
        "ffn.fc1.weight" => "layer.1.DenseReluDense.wi_1.weight",
        "ffn.fc2.weight" => "layer.1.DenseReluDense.wo.weight",
        _ => return None,
    };
    Some(format!("encoder.block.{i}.{leaf}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The image-to-video names the fixtures' files do not show on their own: every case of the
    /// open-clip map, and the Wan2.2 VAE's nested stages against diffusers' `convert_vae_22`.
    #[test]
    fn image_family_names() {
        let renamed = |n: &str| clip(n).and_then(|c| if let ClipTensor::Renamed(s) = c { Some(s) } else { None });
        assert_eq!(renamed("visual.pos_embedding").as_deref(), Some("embeddings.position_embedding.weight"));
        assert_eq!(renamed("visual.transformer.31.mlp.2.bias").as_deref(), Some("encoder.layers.31.mlp.fc2.bias"));
        assert_eq!(clip("visual.transformer.3.attn.to_qkv.weight"), Some(ClipTensor::FusedQkv(3, "weight".into())));
        for unused in ["visual.head", "log_scale", "textual.blocks.0.attn.q.weight"] {
            assert_eq!(clip(unused), Some(ClipTensor::Unused), "{unused}");
        }
        for unknown in
            ["visual.transformer.0.attn.to_qkv.scale", "visual.proj", "head", "visual.transformer.x.norm1.weight"]
        {
            assert_eq!(clip(unknown), None, "{unknown}");
        }
        let cases = [
            ("encoder.downsamples.1.downsamples.0.residual.2.weight", "encoder.down_blocks.1.resnets.0.conv1.weight"),
            ("encoder.downsamples.1.downsamples.2.time_conv.bias", "encoder.down_blocks.1.downsampler.time_conv.bias"),
            ("decoder.upsamples.0.upsamples.3.resample.1.weight", "decoder.up_blocks.0.upsampler.resample.1.weight"),
            ("decoder.upsamples.2.upsamples.1.shortcut.weight", "decoder.up_blocks.2.resnets.1.conv_shortcut.weight"),
            ("decoder.middle.1.to_qkv.bias", "decoder.mid_block.attentions.0.to_qkv.bias"),
            ("conv1.weight", "quant_conv.weight"),
        ];
        for (original, diffusers) in cases {
            assert_eq!(vae_residual(original).as_deref(), Some(diffusers), "{original}");
        }
        assert_eq!(vae_residual("encoder.downsamples.0.residual.0.gamma"), None, "a Wan2.1 (flat) name");
        assert_eq!(
            transformer("blocks.4.cross_attn.norm_k_img.weight").as_deref(),
            Some("blocks.4.attn2.norm_added_k.weight")
        );
        assert_eq!(transformer("blocks.4.self_attn.k_img.weight"), None, "image keys only in cross-attention");
        assert_eq!(transformer("img_emb.emb_pos").as_deref(), Some("condition_embedder.image_embedder.pos_embed"));
    }

    /// Every tensor of the fixture's original files maps to the diffusers name
    /// that `make_wan_fixtures.py` verified by round trip through diffusers' converters.
    #[test]
    fn maps_cover_case_a_keys() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/wan/name_maps.json");
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let keys = &json["case_a_keys"];
        let mut checked = 0;
        for (component, map) in keys.as_object().unwrap() {
            for (diffusers, original) in map.as_object().unwrap() {
                let original = original.as_str().unwrap();
                let got = match component.as_str() {
                    "transformer" => transformer(original),
                    "vae" => vae(original, 2),
                    "t5" | "text_encoder" => t5(original),
                    other => panic!("unknown component {other}"),
                };
                let want = if diffusers == "encoder.embed_tokens.weight" { "shared.weight" } else { diffusers };
                assert_eq!(got.as_deref(), Some(want), "{component}: {original}");
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} names checked");
    }
}
