//! LoRA deltas on a weight store: merged into float weights (in their own dtype), as a side path
//! on quantized ones and on request, fused layers included; bad targets refused.

use wanrt_nn::lora::{apply, Delta, MergeMode, Target};
use wanrt_nn::weights::RawTensor;
use wanrt_nn::{DType, HostTensor, Linear, WeightStore};

fn tensor(shape: &[usize], seed: usize) -> HostTensor {
    let n = shape.iter().product();
    HostTensor::new(shape.to_vec(), (0..n).map(|i| (((i * 7919 + seed * 104_729) % 97) as f32 - 48.0) / 64.0).collect())
        .unwrap()
}

/// Two layers `a` (`[6, 8]`) and `b` (`[4, 8]`) with biases, f32.
fn store() -> WeightStore {
    let mut ws = WeightStore::new("test");
    for (name, rows, seed) in [("a", 6, 1), ("b", 4, 2)] {
        ws.insert(format!("{name}.weight"), RawTensor::from_f32(&tensor(&[rows, 8], seed)));
        ws.insert(format!("{name}.bias"), RawTensor::from_f32(&tensor(&[rows], seed + 10)));
    }
    ws
}

fn lora(name: &str, rows: usize, rank: usize, factor: f32) -> Target {
    Target {
        name: format!("{name}.weight"),
        delta: Delta::LowRank { down: tensor(&[rank, 8], 3), up: tensor(&[rows, rank], 4), factor },
    }
}

/// `W + f·up·down` in f64.
fn expected(w: &HostTensor, down: &HostTensor, up: &HostTensor, f: f32) -> Vec<f32> {
    let (n, k, r) = (w.shape()[0], w.shape()[1], down.shape()[0]);
    let mut out = w.data().to_vec();
    for o in 0..n {
        for i in 0..k {
            let d: f64 = (0..r).map(|j| up.data()[o * r + j] as f64 * down.data()[j * k + i] as f64).sum();
            out[o * k + i] = (w.data()[o * k + i] as f64 + f as f64 * d) as f32;
        }
    }
    out
}

fn layer(ws: &WeightStore, fused: bool) -> Linear {
    let be = wanrt_nn::backend::cpu();
    let mut l = if fused {
        Linear::load_fused(ws, "ab", &["a", "b"], 8, &[6, 4], true).unwrap()
    } else {
        Linear::load_fused(ws, "a", &["a"], 8, &[6], true).unwrap()
    };
    l.prepare(&*be).unwrap();
    l
}

fn forward(l: &Linear) -> Vec<f32> {
    let be = wanrt_nn::backend::cpu();
    let x = be.upload(&tensor(&[3, 8], 9)).unwrap();
    be.to_host(&l.forward(&*be, &x).unwrap()).unwrap().into_data()
}

#[test]
fn merged_and_side_path_agree() {
    let mut merged = store();
    let targets = vec![
        lora("a", 6, 2, 0.7),
        lora("a", 6, 3, -0.2),
        lora("b", 4, 1, 1.5),
        Target { name: "b.bias".into(), delta: Delta::Full { diff: tensor(&[4], 5), factor: 0.5 } },
    ];
    let done = apply(&mut merged, targets.clone(), MergeMode::Merge).unwrap();
    assert_eq!((done.merged, done.side_paths), (3, 0));
    let w = store().get("a.weight").unwrap();
    let step = HostTensor::new([6, 8], expected(&w, &tensor(&[2, 8], 3), &tensor(&[6, 2], 4), 0.7)).unwrap();
    let want = expected(&step, &tensor(&[3, 8], 3), &tensor(&[6, 3], 4), -0.2);
    let got = merged.get("a.weight").unwrap();
    let err = got.data().iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(err < 1e-5, "merged a.weight off by {err}");
    assert_eq!(merged.raw("a.weight").unwrap().dtype, DType::F32);

    let mut side = store();
    let done = apply(&mut side, targets, MergeMode::SidePath).unwrap();
    assert_eq!((done.merged, done.side_paths), (1, 2), "the bias merges, the two layers get side paths");
    assert_eq!(side.get("a.weight").unwrap().data(), store().get("a.weight").unwrap().data(), "untouched");
    for fused in [false, true] {
        let (m, s) = (forward(&layer(&merged, fused)), forward(&layer(&side, fused)));
        let err = m.iter().zip(&s).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-5, "fused {fused}: merged vs side path {err}");
    }
}

#[test]
fn half_weights_stay_half_and_quantized_weights_take_the_side_path() {
    let mut ws = store();
    let w = tensor(&[6, 8], 1);
    let bf16: Vec<u8> = w.data().iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
    ws.insert("a.weight", RawTensor::from_bytes(DType::BF16, vec![6, 8], bf16).unwrap());
    apply(&mut ws, vec![lora("a", 6, 2, 0.3)], MergeMode::Merge).unwrap();
    assert_eq!(ws.raw("a.weight").unwrap().dtype, DType::BF16, "merged in the weight's own dtype");

    // int8 codes with per-row scales: a LoRA becomes a side path, a full diff is refused.
    let mut q = store();
    q.insert(
        "a.weight",
        RawTensor::from_bytes(DType::I8, vec![6, 8], (0..48).map(|i| (i * 5 % 200) as u8).collect()).unwrap(),
    );
    q.insert("a.weight_scale", RawTensor::from_f32(&HostTensor::new([6], vec![0.01; 6]).unwrap()));
    let base = forward(&layer(&q, false));
    let done = apply(&mut q, vec![lora("a", 6, 2, 0.3)], MergeMode::Merge).unwrap();
    assert_eq!(done.side_paths, 1);
    let l = layer(&q, false);
    assert!(l.side.is_some());
    let delta: Vec<f32> = forward(&l).iter().zip(&base).map(|(a, b)| a - b).collect();
    let x = tensor(&[3, 8], 9);
    let (d, u) = (tensor(&[2, 8], 3), tensor(&[6, 2], 4));
    for (t, got) in delta.chunks(6).enumerate() {
        for (o, g) in got.iter().enumerate() {
            let want: f32 = (0..2)
                .map(|j| {
                    0.3 * u.data()[o * 2 + j] * (0..8).map(|i| d.data()[j * 8 + i] * x.data()[t * 8 + i]).sum::<f32>()
                })
                .sum();
            assert!((g - want).abs() < 1e-5, "row {t} out {o}: {g} vs {want}");
        }
    }
    let full = Target { name: "a.weight".into(), delta: Delta::Full { diff: tensor(&[6, 8], 7), factor: 1.0 } };
    let err = apply(&mut q, vec![full], MergeMode::Merge).unwrap_err().to_string();
    assert!(err.contains("a full-weight diff cannot be applied to a i8 weight"), "{err}");
}

#[test]
fn bad_targets_are_refused() {
    let cases = [
        (lora("c", 6, 2, 1.0), "the model has no parameter `c.weight`"),
        (lora("a", 5, 2, 1.0), "a.weight: parameter of shape [6, 8] cannot take a LoRA of down [2, 8] and up [5, 2]"),
        (
            Target { name: "a.bias".into(), delta: Delta::Full { diff: tensor(&[5], 1), factor: 1.0 } },
            "cannot take a diff of shape [5]",
        ),
        (lora("a", 6, 2, f32::INFINITY), "non-finite"),
    ];
    for (t, want) in cases {
        let err = apply(&mut store(), vec![t], MergeMode::Merge).unwrap_err().to_string();
        assert!(err.contains(want), "expected `{want}` in: {err}");
    }
}
