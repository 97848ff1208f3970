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
