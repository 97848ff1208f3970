//! Layers on the CPU backend: each stored format prepared and run, against the plain f32 layer.

use wanrt_nn::backend::{Activation, CpuBackend, CpuOptions, Prepack};
use wanrt_nn::ops::PaddingFull;
use wanrt_nn::quant::{ActQuant, QuantizedMatrix};
use wanrt_nn::weights::RawTensor;
use wanrt_nn::{Backend, Conv3d, DType, Embedding, HostTensor, Linear, LinearWeight, Tensor, WeightStore};

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn run(be: &dyn Backend, l: &Linear, x: &Tensor, act: Option<Activation>) -> HostTensor {
    let y = match act {
        None => l.forward(be, x).unwrap(),
        Some(a) => l.forward_activation(be, x, a).unwrap(),
    };
    be.to_host(&y).unwrap()
}

fn prepared(mut l: Linear, be: &dyn Backend) -> Linear {
    l.prepare(be).unwrap();
    l
}

/// bf16 checkpoint weights packed (widened) at load, streamed from the mapped file (widened and
/// packed block by block inside each product: the default for half checkpoints), or already in
/// process memory (a LoRA-merged weight: used where it lies, so it is held once) all give the
/// same bits.
#[test]
fn half_storage_matches_f32_exactly() {
    let (n, k, m) = (1100, 37, 5);
    let bits: Vec<u8> =
        (0..n * k).flat_map(|i| half::bf16::from_f32(((i % 17) as f32 - 8.0) / 9.0).to_bits().to_le_bytes()).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.safetensors");
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![n, k], &bits).unwrap();
    safetensors::serialize_to_file(vec![("w", view)], None, &file).unwrap();
    let mut ws = WeightStore::new("test");
    ws.add_safetensors(&file).unwrap();
    let mapped = ws.raw("w").unwrap().clone();
    let in_memory = RawTensor::from_bytes(DType::BF16, vec![n, k], bits).unwrap();
    let layer = |raw| Linear::new("w", vec![("w".into(), n)], k, LinearWeight::Float(vec![raw]), None).unwrap();
    let widened = CpuBackend::new(CpuOptions { prepack: Prepack::Always, ..Default::default() });
    let kept = CpuBackend::new(CpuOptions::default());
    let (a, b, c) = (
        prepared(layer(mapped.clone()), &widened),
        prepared(layer(mapped), &kept),
        prepared(layer(in_memory), &widened),
    );
    assert_eq!((a.format(), b.format(), c.format()), ("f32", "bf16", "bf16"));
    assert_eq!((b.bytes(), c.bytes()), (n * k * 2, n * k * 2));
    let x = HostTensor::new([m, k], (0..m * k).map(|i| (i as f32).sin()).collect()).unwrap();
    let (xa, xb) = (widened.upload(&x).unwrap(), kept.upload(&x).unwrap());
    let want = run(&widened, &a, &xa, None);
    assert_eq!(want.data(), run(&kept, &b, &xb, None).data());
    assert_eq!(want.data(), run(&widened, &c, &xa, None).data());
}

/// An activation fused into the W8A8 GEMM's output pass gives the bits of the two ops in sequence
/// (and so does the unfused path of f32 weights).
#[test]
fn fused_activation_equals_linear_then_activation() {
    let be = CpuBackend::new(CpuOptions::default());
    let (n, k, m) = (300, 70, 9);
    let w = HostTensor::new([n, k], (0..n * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect()).unwrap();
    let bias: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).cos()).collect();
    let q = QuantizedMatrix::quantize_per_row_symmetric(w.data(), n, k);
    let codes = RawTensor::from_bytes(DType::I8, vec![n, k], q.data.iter().map(|&c| c as u8).collect()).unwrap();
    let weight =
        LinearWeight::Int8 { codes: vec![codes], scales: q.scales, act: Some(ActQuant::PerToken), smooth: None };
    let int8 = prepared(Linear::new("q", vec![("q".into(), n)], k, weight, Some(bias.clone())).unwrap(), &be);
    let full = prepared(Linear::from_f32("f", &w, Some(bias)).unwrap(), &be);
    let x = be
        .upload(&HostTensor::new([m, k], (0..m * k).map(|i| (i as f32 * 0.71).sin() * 3.0).collect()).unwrap())
        .unwrap();
    for layer in [&int8, &full] {
        for act in Activation::ALL {
            let fused = run(&be, layer, &x, Some(act));
            let two = be.to_host(&be.activation(layer.forward(&be, &x).unwrap(), act).unwrap()).unwrap();
            assert!(fused.data().iter().zip(two.data()).all(|(a, b)| a.to_bits() == b.to_bits()), "{act:?}");
        }
    }
}

/// Quantized parts load fused, with their scales, smoothing and activation mode; bad ones are
/// refused with the tensor's name.
#[test]
fn loads_fused_int8_parts_and_rejects_bad_ones() {
    let be = CpuBackend::new(CpuOptions::default());
    let (k, outs) = (8, [3usize, 5]);
    let mut ws = WeightStore::new("test");
    for (i, &o) in outs.iter().enumerate() {
        let codes: Vec<u8> =
            (0..o * k).map(|j| ((j as i32 % 255) - 127 + i as i32).clamp(-127, 127) as i8 as u8).collect();
        ws.insert(format!("l{i}.weight"), RawTensor::from_bytes(DType::I8, vec![o, k], codes).unwrap());
        let scales: Vec<f32> = (0..o).map(|r| 0.01 * (r + 1) as f32).collect();
        ws.insert(
            format!("l{i}.weight_scale"),
            RawTensor::from_bytes(DType::F32, vec![o], f32_bytes(&scales)).unwrap(),
        );
        ws.insert(format!("l{i}.bias"), RawTensor::from_bytes(DType::F32, vec![o], f32_bytes(&vec![0.5; o])).unwrap());
    }
    let x = be.upload(&HostTensor::new([2, k], (0..2 * k).map(|i| (i as f32 * 0.7).cos()).collect()).unwrap()).unwrap();
    // Weight-only: equal to the f32 product on the dequantized weight (up to summation order).
    let w8a16 = prepared(Linear::load_fused(&ws, "l", &["l0", "l1"], k, &outs, true).unwrap(), &be);
    assert_eq!(w8a16.format(), "int8-weight");
    let deq = prepared(Linear::from_f32("d", &w8a16.to_f32().unwrap(), w8a16.bias.clone()).unwrap(), &be);
    let want = run(&be, &deq, &x, None);
    assert!(run(&be, &w8a16, &x, None).max_abs_diff(&want).unwrap() < 1e-5);
    // W8A8 when the store marks both parts.
    ws.set_activation_quant("l0", ActQuant::PerToken);
    assert!(Linear::load_fused(&ws, "l", &["l0", "l1"], k, &outs, true).is_err(), "parts disagree");
    ws.set_activation_quant("l1", ActQuant::PerToken);
    let w8a8 = prepared(Linear::load_fused(&ws, "l", &["l0", "l1"], k, &outs, true).unwrap(), &be);
    assert_eq!(w8a8.format(), "int8");
    assert!(run(&be, &w8a8, &x, None).nmse(&want).unwrap() < 1e-3);
    // Code -128 is out of range.
    ws.insert("l0.weight", RawTensor::from_bytes(DType::I8, vec![3, k], vec![0x80; 3 * k]).unwrap());
    let err = Linear::load_fused(&ws, "l", &["l0", "l1"], k, &outs, true).unwrap_err().to_string();
    assert!(err.contains("-128"), "{err}");
    // An unprepared layer is an error naming it, not a panic.
    let unprepared = Linear::from_f32("blocks.0.never", &HostTensor::zeros([2, k]), None).unwrap();
    let err = unprepared.forward(&be, &x).unwrap_err().to_string();
    assert!(err.contains("blocks.0.never"), "{err}");
}

fn ramp(shape: [usize; 5], step: f32) -> HostTensor {
    let n = shape.iter().product();
    HostTensor::new(shape, (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) * step).collect()).unwrap()
}

/// Cached frames given as history equal the concatenated input, on the Winograd and direct kernels.
#[test]
fn conv_history_equals_concatenated_input_on_both_kernels() {
    let be = CpuBackend::new(CpuOptions::default());
    let pad = PaddingFull { t: (0, 0), h: (1, 1), w: (1, 1) };
    for (k, stride) in [([3, 3, 3], (1, 1, 1)), ([3, 3, 3], (1, 2, 2)), ([3, 1, 1], (1, 1, 1))] {
        let w = RawTensor::from_f32(&ramp([4, 3, k[0], k[1], k[2]], 0.1));
        let mut conv = Conv3d::new("c", w, Some(vec![0.5, -0.5, 0.25, 0.0]), stride).unwrap();
        assert_eq!(conv.winograd_eligible(), k == [3, 3, 3] && stride == (1, 1, 1));
        conv.prepare(&be).unwrap();
        let (hist, x) =
            (be.upload(&ramp([1, 3, 2, 6, 6], 0.2)).unwrap(), be.upload(&ramp([1, 3, 3, 6, 6], 0.3)).unwrap());
        let pad = if k[1] == 1 { PaddingFull::default() } else { pad };
        let split = be.to_host(&conv.forward(&be, &x, Some(&hist), pad).unwrap()).unwrap();
        let whole = be.to_host(&conv.forward(&be, &be.cat(&[&hist, &x], 2).unwrap(), None, pad).unwrap()).unwrap();
        assert!(split.max_abs_diff(&whole).unwrap() < 1e-5, "kernel {k:?} stride {stride:?}");
    }
    assert!(Conv3d::new("c", RawTensor::from_f32(&ramp([4, 3, 1, 1, 1], 1.0)), Some(vec![0.0; 3]), (1, 1, 1)).is_err());
    assert!(Conv3d::new("c", RawTensor::from_f32(&HostTensor::zeros([4, 3, 3])), None, (1, 1, 1)).is_err());
}

/// An int8 table looks rows up dequantized; ids outside it are errors.
#[test]
fn int8_embedding_rows_dequantize_and_bad_ids_fail() {
    let be = CpuBackend::new(CpuOptions::default());
    let (v, d) = (5, 3);
    let table: Vec<f32> = (0..v * d).map(|i| (i as f32 - 7.0) * 0.25).collect();
    let q = QuantizedMatrix::quantize_per_row_symmetric(&table, v, d);
    let mut ws = WeightStore::new("test");
    ws.insert(
        "e.weight",
        RawTensor::from_bytes(DType::I8, vec![v, d], q.data.iter().map(|&c| c as u8).collect()).unwrap(),
    );
    ws.insert("e.weight_scale", RawTensor::from_bytes(DType::F32, vec![v], f32_bytes(&q.scales)).unwrap());
    let mut e = Embedding::load(&ws, "e", v, d).unwrap();
    e.prepare(&be).unwrap();
    assert_eq!(e.format(), "int8-weight");
    let ids = be.upload_ids(&[3], &[4, 0, 4]).unwrap();
    let got = be.to_host(&e.forward(&be, &ids).unwrap()).unwrap();
    let mut f = Embedding::from_f32("f", &HostTensor::new([v, d], table).unwrap()).unwrap();
    f.prepare(&be).unwrap();
    let want = be.to_host(&f.forward(&be, &ids).unwrap()).unwrap();
    assert_eq!(got.shape(), &[3, 3]);
    assert!(got.max_abs_diff(&want).unwrap() <= 0.5 * q.scales.iter().fold(0.0f32, |m, &s| m.max(s)));
    assert_eq!(got.data()[..3], got.data()[6..]);
    assert!(e.forward(&be, &be.upload_ids(&[1], &[5]).unwrap()).is_err());
}
