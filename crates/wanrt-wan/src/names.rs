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
    ];
    if name == "head.modulation" {
        return Some("scale_shift_table".into());
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

/// VAE: original → diffusers; `num_res_blocks` (R) fixes the decoder's flat indices.
pub fn vae(name: &str, num_res_blocks: usize) -> Option<String> {
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
