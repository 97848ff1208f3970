//! The CUDA C sources of the backend's kernels, one file per family under `kernels/`, embedded in
//! the binary and compiled at run time by NVRTC (see [`super::nvrtc`]). Each family is compiled
//! with `kernels/common.cuh` prepended, so NVRTC needs no include path.

/// One kernel family: a source file and the entry points it defines.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub source: &'static str,
    pub entries: &'static [&'static str],
}

/// Prepended to every family (dtype loads/stores, reductions, argument structs).
pub const COMMON: &str = include_str!("kernels/common.cuh");

/// C++ stand-ins for CUDA's built-ins: prepended (with [`COMMON`]) to a family's source, it
/// compiles as host C++ and its grid-stride kernels run on the CPU (tests/cuda_emulation.rs).
pub const HOST_EMULATION: &str = include_str!("kernels/host_emulation.h");

/// Every family the backend launches.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "elementwise",
        source: include_str!("kernels/elementwise.cu"),
        entries: &[
            "binary_broadcast",
            "binary_same",
            "scalar_op",
            "convert",
            "add_assign",
            "lincomb",
            "cfg_combine",
            "affine_clamp",
            "mask_rows",
            "add_gated",
        ],
    },
    Family { name: "activation", source: include_str!("kernels/activation.cu"), entries: &["activation"] },
    Family {
        name: "layout",
        source: include_str!("kernels/layout.cu"),
        entries: &["copy_block", "permute", "upsample_nearest2x", "embedding", "im2col3d", "conv_out"],
    },
    Family {
        name: "norm",
        source: include_str!("kernels/norm.cu"),
        entries: &["rms_norm", "layer_norm", "channel_rms_norm"],
    },
    Family {
        name: "position",
        source: include_str!("kernels/position.cu"),
        entries: &["rope_interleaved", "timestep_embedding", "relative_position_bias"],
    },
    Family {
        name: "quant",
        source: include_str!("kernels/quant.cu"),
        entries: &["row_absmax", "tensor_absmax", "quantize_rows", "dequantize_acc"],
    },
    Family { name: "reduce", source: include_str!("kernels/reduce.cu"), entries: &["relative_l1", "all_finite"] },
    Family {
        name: "attention",
        source: include_str!("kernels/attention.cu"),
        entries: &["attention_d16", "attention_d32", "attention_d64", "attention_d128"],
    },
    Family {
        name: "attention_int8",
        source: include_str!("kernels/attention_int8.cu"),
        entries: &[
            "key_mean",
            "quantize_heads",
            "attention_int8_d16",
            "attention_int8_d32",
            "attention_int8_d64",
            "attention_int8_d128",
        ],
    },
];

impl Family {
    /// The full translation unit NVRTC compiles.
    pub fn translation_unit(&self) -> String {
        format!("{COMMON}\n// ---- {}.cu ----\n{}", self.name, self.source)
    }
}

/// The family defining kernel `entry`.
pub fn family_of(entry: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.entries.contains(&entry))
}

/// Threads per block each entry point is launched with (what its register budget is checked
/// against: registers × threads ≤ 64K registers of an SM, so one block always fits).
pub fn block_threads(entry: &str) -> u32 {
    match entry {
        e if e.starts_with("attention_d") || e.starts_with("attention_int8_d") => super::launch::ATTENTION_THREADS,
        "rms_norm" | "layer_norm" | "row_absmax" | "quantize_rows" => super::launch::ROW_THREADS,
        "relative_l1" | "all_finite" | "tensor_absmax" => super::launch::REDUCE_THREADS,
        _ => super::launch::ELEMENTWISE_THREADS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_defined_once_in_its_source() {
        let mut seen = std::collections::HashSet::new();
        for f in FAMILIES {
            for e in f.entries {
                assert!(seen.insert(*e), "{e} listed twice");
                // `attention_d64` comes from a line `ATTENTION_ENTRY(64)`, `attention_int8_d64` from
                // `ATTENTION_INT8_ENTRY(64)`.
                let by_macro = e.rsplit_once("_d").map(|(stem, d)| format!("\n{}_ENTRY({d})\n", stem.to_uppercase()));
                let defined = f.source.contains(&format!(" {e}(")) || by_macro.is_some_and(|m| f.source.contains(&m));
                assert!(defined, "{e} not defined in {}.cu", f.name);
                assert_eq!(family_of(e).map(|g| g.name), Some(f.name));
            }
            // Every extern "C" kernel of the file is listed (none compiled but never launched);
            // the attention files define theirs through a macro, one line each.
            let entry_line = |l: &str| {
                l.split_once("_ENTRY(").is_some_and(|(m, _)| {
                    m.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') && !m.is_empty()
                })
            };
            let macros = f.source.lines().filter(|l| l.starts_with("#define ") && l.contains("_ENTRY(")).count();
            let defined = f.source.matches("extern \"C\" __global__").count()
                + f.source.lines().filter(|l| entry_line(l)).count()
                - macros;
            assert_eq!(defined, f.entries.len(), "{}.cu defines {defined} kernels", f.name);
        }
    }
}
