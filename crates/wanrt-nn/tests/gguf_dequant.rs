//! ggml's formats decoded bit for bit as the reference does: random blocks of every type wanrt
//! reads from GGUF files, dequantized by gguf-py 0.19's numpy code
//! (`tools/fixtures/make_gguf_fixtures.py` → `fixtures/gguf/blocks.safetensors`).

use std::path::Path;
use wanrt_nn::dtype::bytes_to_f32;
use wanrt_nn::weights::RawTensor;
use wanrt_nn::{DType, Linear, LinearWeight, WeightStore};

fn fixtures() -> WeightStore {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gguf/blocks.safetensors");
    WeightStore::from_safetensors_files(&[path]).unwrap()
}

const TYPES: [(&str, DType); 12] = [
    ("F16", DType::F16),
    ("BF16", DType::BF16),
    ("Q4_0", DType::Q4_0),
    ("Q4_1", DType::Q4_1),
    ("Q5_0", DType::Q5_0),
    ("Q5_1", DType::Q5_1),
    ("Q8_0", DType::Q8_0),
    ("Q2_K", DType::Q2K),
    ("Q3_K", DType::Q3K),
    ("Q4_K", DType::Q4K),
    ("Q5_K", DType::Q5K),
    ("Q6_K", DType::Q6K),
];

#[test]
fn every_type_decodes_bit_exactly_as_ggml() {
    let ws = fixtures();
    for (name, dtype) in TYPES {
        let blocks = ws.raw(&format!("{name}.blocks")).unwrap();
        let want = ws.raw(&format!("{name}.values")).unwrap().to_f32().unwrap();
        assert_eq!(blocks.shape[1], dtype.size_in_bytes(), "{name}: bytes per block");
        let got = bytes_to_f32(&blocks.bytes(), dtype).unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        let differ = got.iter().zip(&want).filter(|(g, w)| g.to_bits() != w.to_bits()).count();
        let first = got.iter().zip(&want).position(|(g, w)| g.to_bits() != w.to_bits());
        assert_eq!(differ, 0, "{name}: {differ} of {} values differ (first at {first:?})", got.len());
        assert!(want.iter().all(|v| v.is_finite()), "{name}: the fixture holds numbers only");
    }
}

/// A layer over GGUF rows computes with exactly the decoded weight: its rows, `to_f32` and its
/// products agree with the f32 layer made from the dequantized values.
#[test]
fn layers_over_gguf_rows_use_the_decoded_weight() {
    let ws = fixtures();
    let be = wanrt_nn::backend::cpu();
    for (name, dtype) in TYPES.into_iter().filter(|t| t.1.is_block_quantized()) {
        let blocks = ws.raw(&format!("{name}.blocks")).unwrap();
        let values = ws.raw(&format!("{name}.values")).unwrap().to_f32().unwrap();
        // Two blocks per row.
        let (k, n) = (2 * dtype.block_size(), blocks.shape[0] / 2);
        let raw = RawTensor::from_bytes(dtype, vec![n, k], blocks.bytes().to_vec()).unwrap();
        let mut q = Linear::new(name, vec![(name.into(), n)], k, LinearWeight::Ggml(vec![raw]), None).unwrap();
        assert_eq!(q.to_f32().unwrap().data(), &values[..], "{name}: to_f32");
        let mut row = Vec::new();
        q.push_row(n - 1, &mut row).unwrap();
        assert_eq!(row, &values[(n - 1) * k..], "{name}: last row");
        let w = wanrt_nn::HostTensor::new([n, k], values).unwrap();
        let mut f = Linear::from_f32(name, &w, None).unwrap();
        q.prepare(&*be).unwrap();
        f.prepare(&*be).unwrap();
        assert_eq!(q.format(), dtype.name());
        let x =
            wanrt_nn::HostTensor::new([3, k], (0..3 * k).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect()).unwrap();
        let x = be.upload(&x).unwrap();
        let (yq, yf) =
            (be.to_host(&q.forward(&*be, &x).unwrap()).unwrap(), be.to_host(&f.forward(&*be, &x).unwrap()).unwrap());
        let scale = yf.data().iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
        let max = yq.data().iter().zip(yf.data()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max <= 1e-5 * scale, "{name}: products differ by {max} (scale {scale})");
    }
}

/// Under `gguf_int8`, a Q8_0 layer (two stacked parts, as a fused projection holds them) runs on
/// the block-scaled int8 kernels: the product is `gemm_q8_0`'s on the concatenated blocks, bit for
/// bit, and within the 8-bit activations' error of the decoded product. Other types, and a Q8_0
/// weight with a −128 code (which ggml never writes), keep the exact decoding path.
#[test]
fn gguf_int8_runs_q8_0_layers_on_the_int8_kernels() {
    use wanrt_nn::backend::{CpuBackend, CpuOptions};
    let ws = fixtures();
    let be = CpuBackend::new(CpuOptions { gguf_int8: true, ..Default::default() });
    let exact = wanrt_nn::backend::cpu();
    let layer = |dtype: DType, blocks: &[u8], n: usize, k: usize| {
        let rb = dtype.storage_bytes(k).unwrap();
        let half = n / 2;
        let part =
            |a: usize, b: usize| RawTensor::from_bytes(dtype, vec![b - a, k], blocks[a * rb..b * rb].to_vec()).unwrap();
        let parts = vec![part(0, half), part(half, n)];
        Linear::new("l", vec![("a".into(), half), ("b".into(), n - half)], k, LinearWeight::Ggml(parts), None).unwrap()
    };
    // The fixture's random codes include −128: made −127 here, as ggml's quantizer writes them.
    let mut blocks = ws.raw("Q8_0.blocks").unwrap().bytes().to_vec();
    blocks.chunks_exact_mut(34).for_each(|b| b[2..].iter_mut().filter(|q| **q == 0x80).for_each(|q| *q = 0x81));
    let (k, n) = (64, blocks.len() / 68);
    let x: Vec<f32> = (0..5 * k).map(|i| ((i * 7919) % 23) as f32 * 0.25 - 2.5).collect();
    let xt = wanrt_nn::HostTensor::new([5, k], x.clone()).unwrap();
    let run = |dtype: DType, blocks: &[u8], backend: &dyn wanrt_nn::Backend| {
        let mut l = layer(dtype, blocks, n, k);
        l.prepare(backend).unwrap();
        let y = backend.to_host(&l.forward(backend, &backend.upload(&xt).unwrap()).unwrap()).unwrap();
        (l.format(), y.data().to_vec())
    };
    let (format, got) = run(DType::Q8_0, &blocks, &be);
    assert_eq!(format, "q8_0-int8");
    let rb = 68;
    let packed = wanrt_nn::quant::PackedQ8_0::from_blocks(|j| &blocks[j * rb..(j + 1) * rb], n, k).unwrap();
    let mut want = vec![0.0; 5 * n];
    wanrt_nn::quant::gemm_q8_0(&x, 5, k, &packed, None, &mut want);
    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "layer and kernel differ");
    let (_, decoded) = run(DType::Q8_0, &blocks, &*exact);
    assert_ne!(got, decoded, "the int8 path rounds the activations");
    let scale = decoded.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max = got.iter().zip(&decoded).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max <= 0.02 * scale, "int8 product differs by {max} (scale {scale})");

    // A −128 code: decoded exactly instead.
    let mut bad = blocks.clone();
    bad[2] = 0x80;
    let (format, got) = run(DType::Q8_0, &bad, &be);
    assert_eq!(format, "q8_0");
    assert_eq!(got, run(DType::Q8_0, &bad, &*exact).1);
    // Another type: decoded as before.
    let q4 = ws.raw("Q4_0.blocks").unwrap().bytes().to_vec();
    let n4 = q4.len() / 36;
    let mut l = layer(DType::Q4_0, &q4, n4, k);
    l.prepare(&be).unwrap();
    assert_eq!(l.format(), "q4_0");
}
