//! The conformance battery on the CUDA backend (bf16 and f32) against the CPU reference.
//!
//! These tests need a GPU: they are `#[ignore]`d, so a machine without one reports them as
//! ignored (never as passed), and `tools/device/gpu_check.sh` runs them on a GPU machine with
//! `cargo test -p wanrt-nn --test conformance_cuda -- --ignored`.

use wanrt_nn::backend::cuda::CudaBackend;
use wanrt_nn::DType;

/// The backend on GPU 0 (each test opens its own; the compiled kernels come from the disk cache
/// after the first). A missing library or GPU fails the (ignored) test in one line.
fn cuda(dtype: DType) -> CudaBackend {
    if let Some(reason) = wanrt_nn::backend::cuda::missing_library() {
        panic!("{reason}");
    }
    CudaBackend::new(0, dtype).unwrap_or_else(|e| panic!("{e}"))
}

wanrt_nn::backend_conformance!(cuda_bf16, super::cuda(wanrt_nn::DType::BF16), #[ignore = "needs a GPU (tools/device/gpu_check.sh)"]);
wanrt_nn::backend_conformance!(cuda_f32, super::cuda(wanrt_nn::DType::F32), #[ignore = "needs a GPU (tools/device/gpu_check.sh)"]);

/// Says, in every run, whether the ignored CUDA battery could run here.
#[test]
fn cuda_battery_needs_a_gpu() {
    match wanrt_nn::backend::cuda::missing_library() {
        Some(reason) => println!("skipped: no GPU here, the CUDA conformance tests are ignored ({reason})"),
        None => println!("CUDA libraries present: run `cargo test -p wanrt-nn --test conformance_cuda -- --ignored`"),
    }
}

/// A captured step (CUDA graph over the planned arena) replays the eager computation on new
/// inputs bit for bit, its arena is no larger than what the step allocates, and a replay with
/// another shape is refused.
#[test]
#[ignore = "needs a GPU (tools/device/gpu_check.sh)"]
fn cuda_graph_replays_a_captured_step() {
    use wanrt_nn::backend::{Activation, Backend, BinaryOp};
    use wanrt_nn::{HostTensor, Linear, Tensor};
    let be = cuda(DType::BF16);
    let host = |seed: u32, shape: &[usize]| {
        let n: usize = shape.iter().product();
        HostTensor::new(
            shape.to_vec(),
            (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0).collect(),
        )
        .unwrap()
    };
    let mut layer = Linear::from_f32("l", &host(7, &[96, 64]), Some(vec![0.1; 96])).unwrap();
    layer.prepare(&be).unwrap();
    let mods = be.upload(&host(9, &[1, 1, 96])).unwrap();
    let step = |xs: &[Tensor]| -> wanrt_nn::Result<Tensor> {
        let h = be.binary(BinaryOp::Add, &xs[0], &xs[1])?;
        let h = be.linear_activation(&layer, &h, Activation::GeluTanh)?;
        let n = be.layer_norm_modulate(&h, 1e-6, &mods, &mods)?;
        be.activation(n, Activation::Silu)
    };
    let (a, b) = (be.upload(&host(1, &[1, 75, 64])).unwrap(), be.upload(&host(2, &[1, 75, 64])).unwrap());
    let captured = be.capture(&[&a, &b], &step).unwrap();
    let report = captured.report();
    println!("{report:?}");
    assert!(report.graph_nodes >= 4 && report.allocations >= 4, "{report:?}");
    assert!(
        report.peak_live_bytes <= report.arena_bytes
            && report.arena_bytes <= report.allocated_bytes + 256 * report.allocations
    );
    for seed in [3, 4] {
        let (c, d) =
            (be.upload(&host(seed, &[1, 75, 64])).unwrap(), be.upload(&host(seed + 10, &[1, 75, 64])).unwrap());
        let eager = be.to_host(&step(&[c.clone(), d.clone()]).unwrap()).unwrap();
        let replayed = be.to_host(&captured.replay(&[&c, &d]).unwrap()).unwrap();
        assert!(eager.data().iter().zip(replayed.data()).all(|(x, y)| x.to_bits() == y.to_bits()), "seed {seed}");
    }
    let wrong = be.upload(&host(5, &[1, 76, 64])).unwrap();
    assert!(captured.replay(&[&wrong, &wrong]).is_err());
}

/// Timings of the CUDA backend's main ops at the 1.3B model's shapes (832×480×81: 32,760 tokens,
/// dim 1536, 12 heads of 128, FFN 8960), bf16, written as JSON to `$WANRT_TIMINGS` (or printed).
/// First numbers for the simple kernels, not a claim: the tensor-core versions replace them.
#[test]
#[ignore = "needs a GPU (tools/device/gpu_check.sh)"]
fn cuda_timings_at_wan_1_3b_shapes() {
    use wanrt_nn::backend::{Activation, AttentionBias, AttentionPrecision, Backend};
    use wanrt_nn::{HostTensor, Linear};
    let be = cuda(DType::BF16);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = |shape: &[usize], scale: f32| {
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect();
        HostTensor::new(shape.to_vec(), data).unwrap()
    };
    let (l, c, heads, ffn) = (32_760usize, 1536usize, 12usize, 8960usize);
    let act = |h: &HostTensor| be.to_dtype(&be.upload(h).unwrap(), DType::BF16).unwrap();
    let x = act(&random(&[1, l, c], 1.0));
    // Seconds per call: one warm-up, then `reps` calls between two synchronizations.
    let time = |reps: usize, f: &dyn Fn()| {
        f();
        be.synchronize().unwrap();
        let t = std::time::Instant::now();
        for _ in 0..reps {
            f();
        }
        be.synchronize().unwrap();
        t.elapsed().as_secs_f64() / reps as f64
    };
    let mut rows = Vec::new();
    let mut record = |name: &str, seconds: f64, flops: f64| {
        let tflops = flops / seconds / 1e12;
        println!("{name:<40} {:>9.3} ms  {tflops:>7.1} TFLOP/s", seconds * 1e3);
        rows.push(serde_json::json!({ "op": name, "seconds": seconds, "tflops": tflops }));
    };

    let mut ffn_in = Linear::from_f32("ffn.0", &random(&[ffn, c], 0.02), Some(vec![0.01; ffn])).unwrap();
    ffn_in.prepare(&be).unwrap();
    let s = time(5, &|| drop(be.linear_activation(&ffn_in, &x, Activation::GeluTanh).unwrap()));
    record("linear 1536→8960 + bias + GELU (cuBLASLt)", s, 2.0 * (l * c * ffn) as f64);
    // The same layer as a W8A8 artifact stores it: quantize, 8-bit GEMM, dequantize + GELU.
    let w_ffn = random(&[ffn, c], 0.02);
    for (name, weight) in w8a8_weights(&w_ffn) {
        let mut layer = Linear::new("ffn.0", vec![("ffn.0".into(), ffn)], c, weight, Some(vec![0.01; ffn])).unwrap();
        layer.prepare(&be).unwrap();
        let s = time(5, &|| drop(be.linear_activation(&layer, &x, Activation::GeluTanh).unwrap()));
        record(&format!("linear 1536→8960 + bias + GELU ({name})"), s, 2.0 * (l * c * ffn) as f64);
    }
    let mut qkv = Linear::from_f32("qkv", &random(&[3 * c, c], 0.02), Some(vec![0.0; 3 * c])).unwrap();
    qkv.prepare(&be).unwrap();
    let s = time(5, &|| drop(be.linear(&qkv, &x).unwrap()));
    record("linear 1536→4608 + bias (cuBLASLt)", s, 2.0 * (l * c * 3 * c) as f64);

    let q = act(&random(&[1, l, heads, 128], 1.0));
    let k = act(&random(&[1, l, heads, 128], 1.0));
    let v = act(&random(&[1, l, heads, 128], 1.0));
    let scale = 1.0 / (128f32).sqrt();
    let s =
        time(1, &|| drop(be.attention(&q, &k, &v, scale, AttentionBias::default(), AttentionPrecision::Full).unwrap()));
    record("attention 32760², 12 heads × 128 (simple)", s, 4.0 * (l * l * heads * 128) as f64);
    let s =
        time(1, &|| drop(be.attention(&q, &k, &v, scale, AttentionBias::default(), AttentionPrecision::Int8).unwrap()));
    record("attention 32760², 12 heads × 128 (int8 Q·Kᵀ, simple)", s, 4.0 * (l * l * heads * 128) as f64);

    let mods = act(&random(&[1, 1, c], 0.1));
    let s = time(10, &|| drop(be.layer_norm_modulate(&x, 1e-6, &mods, &mods).unwrap()));
    record("layer_norm_modulate [32760, 1536]", s, 0.0);
    let w = be.weight_tensor(random(&[c], 1.0)).unwrap();
    let s = time(10, &|| drop(be.rms_norm(x.clone(), 1e-6, Some(&w)).unwrap()));
    record("rms_norm [32760, 1536]", s, 0.0);
    let s = time(10, &|| drop(be.binary(wanrt_nn::backend::BinaryOp::Add, &x, &x).unwrap()));
    record("binary add [32760, 1536]", s, 0.0);

    let report = serde_json::json!({
        "device": be.device_name(), "arch": be.arch(), "dtype": "bf16", "ops": rows,
        "gemm_plans": be.gemm_shapes().len(),
        "device_memory": be.device_memory().unwrap(),
    });
    match std::env::var("WANRT_TIMINGS") {
        Ok(path) => std::fs::write(path, serde_json::to_string_pretty(&report).unwrap()).unwrap(),
        Err(_) => println!("{report}"),
    }
}

/// `w` as the two W8A8 formats `wanrt optimize` writes (per-channel weight scales, per-token
/// activations): int8 (IMMA) and fp8 (E4M3 tensor cores).
fn w8a8_weights(w: &wanrt_nn::HostTensor) -> Vec<(&'static str, wanrt_nn::LinearWeight)> {
    use wanrt_nn::quant::{ActQuant, Fp8Matrix, QuantizedMatrix};
    use wanrt_nn::weights::RawTensor;
    let [n, k] = [w.shape()[0], w.shape()[1]];
    let q = QuantizedMatrix::quantize_per_row_symmetric(w.data(), n, k);
    let f = Fp8Matrix::quantize_per_channel(w.data(), n, k);
    vec![
        (
            "W8A8 int8",
            wanrt_nn::LinearWeight::Int8 {
                codes: vec![
                    RawTensor::from_bytes(DType::I8, vec![n, k], q.data.iter().map(|&c| c as u8).collect()).unwrap()
                ],
                scales: q.scales,
                act: Some(ActQuant::PerToken),
                smooth: None,
            },
        ),
        (
            "W8A8 fp8",
            wanrt_nn::LinearWeight::Fp8 {
                codes: vec![RawTensor::from_bytes(DType::F8E4M3, vec![n, k], f.data).unwrap()],
                scales: f.scales,
                act: Some(ActQuant::PerToken),
            },
        ),
    ]
}
