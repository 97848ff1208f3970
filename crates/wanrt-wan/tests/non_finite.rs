//! NaN never becomes a video with success: non-finite settings and noise are refused before any
//! work, and a stage whose output turns non-finite (broken weights) stops the run, named.
// Tests read values to compare them; the lint forbids it in model code only.
#![allow(clippy::disallowed_methods)]

mod common;
use common::{copy_dir, fixture, Reference};
use wanrt_nn::weights::{write_safetensors, RawTensor};
use wanrt_nn::{DType, HostTensor, WeightStore};
use wanrt_wan::model::WanModel;

#[test]
fn non_finite_settings_and_noise_are_refused_up_front() {
    let model = WanModel::load(&fixture("a"), |_| {}).unwrap();
    let r = Reference::load("a");
    for (what, edit) in [
        (
            "guidance",
            Box::new(|p: &mut wanrt_wan::pipeline::GenerateParams| p.guidance = Some(f64::NAN)) as Box<dyn Fn(&mut _)>,
        ),
        ("shift", Box::new(|p: &mut wanrt_wan::pipeline::GenerateParams| p.shift = Some(f64::INFINITY))),
        ("shift", Box::new(|p: &mut wanrt_wan::pipeline::GenerateParams| p.shift = Some(-1.0))),
        ("cache threshold", Box::new(|p: &mut wanrt_wan::pipeline::GenerateParams| p.cache_threshold = Some(f64::NAN))),
        (
            "noise",
            Box::new(|p: &mut wanrt_wan::pipeline::GenerateParams| {
                let n = p.noise.as_mut().unwrap();
                n.data_mut()[3] = f32::NAN;
            }),
        ),
        (
            "T, H, W",
            Box::new(|p: &mut wanrt_wan::pipeline::GenerateParams| {
                p.noise = Some(HostTensor::zeros([1, 4, 0, 4, 4]));
            }),
        ),
    ] {
        let mut p = r.generate_params();
        edit(&mut p);
        let err = model.resolve(&p).unwrap_err().to_string();
        assert!(err.contains(what), "{what}: {err}");
    }
    // A negative guidance is a number like any other: CFG off, as diffusers does for ≤ 1.
    let mut p = r.generate_params();
    p.guidance = Some(-5.0);
    assert_eq!(model.resolve(&p).unwrap().guidance, -5.0);
}

#[test]
fn broken_weights_stop_the_run_naming_the_stage() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("a"), dir.path());
    // One NaN in the transformer's output projection: every prediction turns NaN.
    let tr = dir.path().join("transformer");
    let ws = WeightStore::from_diffusers_dir(&tr, "diffusion_pytorch_model").unwrap();
    let mut tensors: Vec<(String, RawTensor)> =
        ws.names().map(|n| (n.to_string(), ws.raw(n).unwrap().clone())).collect();
    for (name, t) in tensors.iter_mut() {
        if name == "proj_out.weight" {
            let mut v = t.to_f32().unwrap();
            v[0] = f32::NAN;
            *t = RawTensor::from_f32(&HostTensor::new(t.shape.clone(), v).unwrap());
            assert_eq!(t.dtype, DType::F32);
        }
    }
    drop(ws);
    for f in std::fs::read_dir(&tr).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "safetensors" || e == "json") && !p.ends_with("config.json") {
            std::fs::remove_file(p).unwrap();
        }
    }
    write_safetensors(&tr.join("diffusion_pytorch_model.safetensors"), tensors.iter().map(|(n, t)| (n.as_str(), t)))
        .unwrap();
    let model = WanModel::load(dir.path(), |_| {}).unwrap();
    let err = match model.generate(&Reference::load("a").generate_params(), &mut ()) {
        Ok(_) => panic!("a NaN transformer generated a video"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("denoising") && err.contains("NaN"), "{err}");
}
