//! Shared helpers of the parity tests: fixture paths, reference tensors and
//! comparisons that print max-abs and NMSE with the tensor's name.
//! Fixtures are made by `tools/fixtures/make_wan_fixtures.py`.
#![allow(dead_code)]

use std::path::PathBuf;
use wanrt_nn::{Backend, BackendRef, HostTensor, Tensor, WeightStore};

pub fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/wan").join(case)
}

pub struct Reference {
    ws: WeightStore,
    pub meta: serde_json::Value,
}

/// A case of another fixture group (`fixtures/<group>/<case>`).
pub fn fixture_in(group: &str, case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(group).join(case)
}

impl Reference {
    pub fn load(case: &str) -> Self {
        Self::load_dir(&fixture(case))
    }

    pub fn load_dir(dir: &std::path::Path) -> Self {
        let ws = WeightStore::from_safetensors_files(&[dir.join("ref.safetensors")]).expect("ref.safetensors");
        let meta = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
        Reference { ws, meta }
    }

    pub fn get(&self, name: &str) -> HostTensor {
        self.ws.get(name).unwrap_or_else(|e| panic!("reference {name}: {e}"))
    }

    pub fn has(&self, name: &str) -> bool {
        self.ws.contains(name)
    }

    /// Denoising steps recorded as `step{i}.latent_out`.
    pub fn steps_recorded(&self) -> usize {
        (0..).take_while(|i| self.has(&format!("step{i}.latent_out"))).count()
    }

    pub fn steps(&self) -> usize {
        self.get("sched.timesteps").numel()
    }

    /// The fixture's pipeline call (prompt, negative prompt, steps, guidance, text length, noise).
    pub fn generate_params(&self) -> wanrt_wan::pipeline::GenerateParams {
        let m = &self.meta;
        let mut p = wanrt_wan::pipeline::GenerateParams::new(m["prompt"].as_str().unwrap());
        p.negative_prompt = m["negative_prompt"].as_str().map(String::from);
        p.steps = Some(m["num_inference_steps"].as_u64().unwrap() as usize);
        p.guidance = Some(m["guidance_scale"].as_f64().unwrap());
        p.max_sequence_length = Some(m["max_sequence_length"].as_u64().unwrap() as usize);
        p.noise = Some(self.get("noise"));
        p
    }
}

/// The CPU reference backend (f32).
pub fn cpu() -> BackendRef {
    wanrt_nn::backend::cpu()
}

/// A backend tensor's values, for comparison.
pub fn host(be: &dyn Backend, t: &Tensor) -> HostTensor {
    be.to_host(t).expect("download")
}

/// Asserts `got ≈ want` within `max_abs` and `max_nmse`, printing both.
pub fn assert_close(name: &str, got: &HostTensor, want: &HostTensor, max_abs: f32, max_nmse: f64) {
    assert_eq!(got.shape(), want.shape(), "{name}: shape");
    let err = got.max_abs_diff(want).unwrap();
    let nmse = got.nmse(want).unwrap();
    println!("{name}: max|Δ| = {err:.3e}, NMSE = {nmse:.3e}");
    assert!(
        err <= max_abs && nmse <= max_nmse,
        "{name}: max|Δ| = {err:.3e} (≤ {max_abs:e}), NMSE = {nmse:.3e} (≤ {max_nmse:e})"
    );
}

/// A real copy of a fixture folder (tests edit copies; the artifact writer's hard links would
/// reach the committed files).
pub fn copy_dir(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}
