//! The CUDA kernels' numerics on the CPU, without a GPU: the grid-stride kernel families
//! (elementwise, activation, layout, position, and the VAE's channel norm) are compiled from their
//! CUDA C sources as host C++ (`kernels/host_emulation.h` stands in for CUDA's built-ins), every
//! (block, thread) of a small launch is run in turn, and the results are compared with the CPU
//! backend's ops on the same inputs — with the host-side launch logic (`cuda::launch`: broadcast
//! strides, copy plans, conv arguments) that the backend passes them.
//!
//! Kernels whose threads cooperate (the row norms, reductions, flash attention) run block by block
//! with one OS thread per CUDA thread: barriers for `__syncthreads`, exchange slots for the warp
//! shuffles (`host_emulation.h`).
//!
//! What this cannot check, and the GPU battery (`tests/conformance_cuda.rs`) does: the device's
//! own math (`__expf`, `erff`, `sinf` on the GPU differ in the last bits from the host's libm, so
//! bf16 rounding of real device results is checked only on a GPU), memory-model and timing
//! issues a sequential emulation cannot show, and cuBLASLt. Without a C++ compiler it prints
//! "skipped".

use std::ffi::c_void;
use wanrt_nn::backend::cuda::{kernels, launch};
use wanrt_nn::backend::{Activation, Backend, BinaryOp, CpuBackend, CpuOptions};
use wanrt_nn::HostTensor;

type P = *const c_void;
type M = *mut c_void;

struct Emulated {
    lib: libloading::Library,
    _dir: tempfile::TempDir,
}

impl Emulated {
    /// The family compiled as a host shared library (None: no C++ compiler here).
    fn build(family: &str) -> Option<Emulated> {
        let family = kernels::FAMILIES.iter().find(|f| f.name == family).expect("family");
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join(format!("{}.cpp", family.name));
        let lib = dir.path().join(format!("lib{}.so", family.name));
        std::fs::write(&src, format!("{}\n{}", kernels::HOST_EMULATION, family.translation_unit())).unwrap();
        let out = std::process::Command::new("c++")
            .args(["-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", "-Wno-unknown-pragmas", "-o"])
            .arg(&lib)
            .arg(&src)
            .output();
        match out {
            Err(_) => {
                println!("skipped: no C++ compiler (c++) to emulate {}.cu", family.name);
                None
            }
            Ok(o) => {
                assert!(o.status.success(), "{}.cu as host C++:\n{}", family.name, String::from_utf8_lossy(&o.stderr));
                // SAFETY: a library this test just compiled; its initializers do nothing.
                let lib = unsafe { libloading::Library::new(&lib) }.unwrap();
                Some(Emulated { lib, _dir: dir })
            }
        }
    }

    /// Runs `call` as every thread of a launch of 3 blocks × 5 threads (the kernels are
    /// grid-stride loops: any grid covers every element, and this one splits it unevenly).
    fn run(&self, mut call: impl FnMut()) {
        let set = self.setter();
        for b in 0..3 {
            for t in 0..5 {
                unsafe { set(b, 0, 0, t, 5, 3, 1, 1) };
                call();
            }
        }
    }

    fn setter(&self) -> unsafe extern "C" fn(u32, u32, u32, u32, u32, u32, u32, u32) {
        // SAFETY: the setter defined in host_emulation.h, with its signature.
        *unsafe {
            self.lib.get::<unsafe extern "C" fn(u32, u32, u32, u32, u32, u32, u32, u32)>(b"wanrt_emulation_set\0")
        }
        .unwrap()
    }

    /// Runs `call` as a launch whose threads cooperate: block after block, each block's CUDA
    /// threads as fibers on this OS thread, switching at every synchronization point
    /// (host_emulation.h).
    fn run_blocks(&self, l: launch::Launch, call: impl Fn()) {
        type Body = unsafe extern "C" fn(*const c_void, u32);
        type RunBlock = unsafe extern "C" fn(u32, u32, u32, u32, u32, u32, u32, Body, *const c_void);
        unsafe extern "C" fn trampoline(ctx: *const c_void, _thread: u32) {
            // SAFETY: `ctx` is the `&dyn Fn()` below, alive for the whole run_block call.
            let f = unsafe { &*(ctx as *const &dyn Fn()) };
            f();
        }
        // SAFETY: defined in host_emulation.h with this signature.
        let run = *unsafe { self.lib.get::<RunBlock>(b"wanrt_emulation_run_block\0") }.unwrap();
        let call: &dyn Fn() = &call;
        let ctx = &call as *const &dyn Fn() as *const c_void;
        let (gx, gy, gz) = l.grid;
        for bz in 0..gz {
            for by in 0..gy {
                for bx in 0..gx {
                    unsafe { run(bx, by, bz, gx, gy, gz, l.block.0, trampoline, ctx) };
                }
            }
        }
    }
}

macro_rules! kernel {
    ($emu:expr, $name:literal, fn($($t:ty),*)) => {
        // SAFETY: the signature is the kernel's parameter list in the .cu file.
        *unsafe { $emu.lib.get::<unsafe extern "C" fn($($t),*)>(concat!($name, "\0").as_bytes()) }.unwrap()
    };
}

fn cpu() -> CpuBackend {
    CpuBackend::new(CpuOptions::default())
}

fn random(shape: &[usize], scale: f32, seed: u64) -> HostTensor {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    HostTensor::new(shape.to_vec(), data).unwrap()
}

/// `max|got − want| / max|want|` must stay under `tol` (f32 arithmetic in another order, or
/// libm's exp/erf instead of the CPU backend's polynomial approximations).
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let max_w = want.iter().fold(0f64, |m, &w| m.max((w as f64).abs())).max(1e-30);
    let max_d = got.iter().zip(want).fold(0f64, |m, (&g, &w)| m.max(((g - w) as f64).abs()));
    assert!(max_d / max_w <= tol, "{what}: max rel {:.3e} > {tol:.1e}", max_d / max_w);
    println!("{what:<48} max rel {:.2e}", max_d / max_w);
}

fn host(be: &CpuBackend, t: &wanrt_nn::Tensor) -> Vec<f32> {
    be.to_host(t).unwrap().into_data()
}

#[test]
fn elementwise_kernels_match_the_cpu_backend() {
    let Some(emu) = Emulated::build("elementwise") else { return };
    let be = cpu();
    let bin: unsafe extern "C" fn(P, i32, P, i32, M, i32, i32, i64, launch::Dims) =
        kernel!(emu, "binary_broadcast", fn(P, i32, P, i32, M, i32, i32, i64, launch::Dims));
    for (sa, sb) in [(&[1usize, 6, 9][..], &[2usize, 1, 9][..]), (&[1, 16, 3, 4, 5], &[16, 1, 1, 1])] {
        let (a, mut b) = (random(sa, 2.0, 1), random(sb, 2.0, 2));
        b.data_mut().iter_mut().for_each(|v| *v += 3.0);
        let (shape, dims) = launch::broadcast_dims(sa, sb).unwrap();
        for (code, op) in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div].into_iter().enumerate() {
            let mut out = vec![0f32; shape.iter().product()];
            let n = out.len() as i64;
            emu.run(|| unsafe {
                bin(
                    a.data().as_ptr().cast(),
                    0,
                    b.data().as_ptr().cast(),
                    0,
                    out.as_mut_ptr().cast(),
                    0,
                    code as i32,
                    n,
                    dims,
                )
            });
            let want = be.binary(op, &be.upload(&a).unwrap(), &be.upload(&b).unwrap()).unwrap();
            assert_close(&format!("binary {op:?} {sa:?} {sb:?}"), &out, &host(&be, &want), 0.0);
        }
    }

    // Equal shapes: binary_same, and add_assign in place.
    let same: unsafe extern "C" fn(P, i32, P, i32, M, i32, i32, i64) =
        kernel!(emu, "binary_same", fn(P, i32, P, i32, M, i32, i32, i64));
    let (a, b) = (random(&[2, 5, 7], 2.0, 4), random(&[2, 5, 7], 2.0, 5));
    let mut out = vec![0f32; a.numel()];
    let n = out.len() as i64;
    emu.run(|| unsafe {
        same(a.data().as_ptr().cast(), 0, b.data().as_ptr().cast(), 0, out.as_mut_ptr().cast(), 0, 2, n)
    });
    let (at, bt) = (be.upload(&a).unwrap(), be.upload(&b).unwrap());
    assert_close("binary_same Mul", &out, &host(&be, &be.binary(BinaryOp::Mul, &at, &bt).unwrap()), 0.0);
    let add: unsafe extern "C" fn(M, i32, P, i32, i64) = kernel!(emu, "add_assign", fn(M, i32, P, i32, i64));
    let mut got = a.data().to_vec();
    emu.run(|| unsafe { add(got.as_mut_ptr().cast(), 0, b.data().as_ptr().cast(), 0, n) });
    let mut want = at.clone();
    be.add_assign(&mut want, &bt).unwrap();
    assert_close("add_assign", &got, &host(&be, &want), 0.0);

    // f32 → bf16 / f16 → f32: the kernels' rounding is half's (round to nearest even, NaN kept).
    let convert: unsafe extern "C" fn(P, i32, M, i32, i64) = kernel!(emu, "convert", fn(P, i32, M, i32, i64));
    let mut values = random(&[4096], 70_000.0, 3).into_data();
    values.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, 1e-40]);
    for (code, name) in [(1, "bf16"), (2, "f16")] {
        let mut bits = vec![0u16; values.len()];
        let n = values.len() as i64;
        emu.run(|| unsafe { convert(values.as_ptr().cast(), 0, bits.as_mut_ptr().cast(), code, n) });
        for (&v, &b) in values.iter().zip(&bits) {
            let want = if code == 1 { half::bf16::from_f32(v).to_bits() } else { half::f16::from_f32(v).to_bits() };
            let nan = v.is_nan() && (b & 0x7fff) > if code == 1 { 0x7f80 } else { 0x7c00 };
            assert!(b == want || nan, "{name}({v:e}): {b:#06x}, half gives {want:#06x}");
        }
        let mut back = vec![0f32; values.len()];
        emu.run(|| unsafe { convert(bits.as_ptr().cast(), code, back.as_mut_ptr().cast(), 0, n) });
        for ((&b, &r), &v) in bits.iter().zip(&back).zip(&values) {
            let want = if code == 1 { half::bf16::from_bits(b).to_f32() } else { half::f16::from_bits(b).to_f32() };
            assert!(r == want || (r.is_nan() && want.is_nan()), "{name} {v:e} back: {r} vs {want}");
        }
    }

    // lincomb (f32 out, a bf16 term among f32 ones) and CFG.
    let lincomb: unsafe extern "C" fn(launch::Terms, *mut f32, i64) =
        kernel!(emu, "lincomb", fn(launch::Terms, *mut f32, i64));
    let hs: Vec<HostTensor> = (0..3).map(|i| random(&[1, 16, 3, 5, 7], 2.0, 10 + i)).collect();
    let bf: Vec<u16> = hs[1].data().iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect();
    let rounded =
        HostTensor::new(hs[1].shape().to_vec(), bf.iter().map(|&b| half::bf16::from_bits(b).to_f32()).collect())
            .unwrap();
    let coefs = [0.9f32, -0.37, 1.3];
    let mut t = launch::Terms { ptr: [0; 8], dt: [0; 8], coef: [0.0; 8], count: 3 };
    t.ptr[..3].copy_from_slice(&[hs[0].data().as_ptr() as u64, bf.as_ptr() as u64, hs[2].data().as_ptr() as u64]);
    t.dt[..3].copy_from_slice(&[0, 1, 0]);
    t.coef[..3].copy_from_slice(&coefs);
    let mut out = vec![0f32; hs[0].numel()];
    let n = out.len() as i64;
    emu.run(|| unsafe { lincomb(t, out.as_mut_ptr(), n) });
    let ts = [be.upload(&hs[0]).unwrap(), be.upload(&rounded).unwrap(), be.upload(&hs[2]).unwrap()];
    let want = be.lincomb(&[(coefs[0], &ts[0]), (coefs[1], &ts[1]), (coefs[2], &ts[2])]).unwrap();
    assert_close("lincomb 3 terms (one bf16)", &out, &host(&be, &want), 0.0);

    let cfg: unsafe extern "C" fn(P, i32, M, i32, f32, i64) = kernel!(emu, "cfg_combine", fn(P, i32, M, i32, f32, i64));
    let pair = random(&[2, 16, 3, 5, 7], 2.0, 20);
    let mut out = vec![0f32; pair.numel() / 2];
    let half_n = out.len() as i64;
    emu.run(|| unsafe { cfg(pair.data().as_ptr().cast(), 0, out.as_mut_ptr().cast(), 0, 5.0, half_n) });
    assert_close("cfg_combine", &out, &host(&be, &be.cfg_combine(&be.upload(&pair).unwrap(), 5.0).unwrap()), 0.0);

    // In-place ops: mask_rows, add_gated, affine_clamp, add_assign, scalar_op.
    let mask: unsafe extern "C" fn(M, i32, launch::BatchInts, i64, i64, i64) =
        kernel!(emu, "mask_rows", fn(M, i32, launch::BatchInts, i64, i64, i64));
    let x = random(&[2, 13, 33], 1.0, 30);
    let mut got = x.data().to_vec();
    let lens = launch::BatchInts::new("mask_rows", &[5, 13]).unwrap();
    emu.run(|| unsafe { mask(got.as_mut_ptr().cast(), 0, lens, 13, 33, got.len() as i64) });
    let mut want = be.upload(&x).unwrap();
    be.mask_rows(&mut want, &[5, 13]).unwrap();
    assert_close("mask_rows [5, 13]", &got, &host(&be, &want), 0.0);

    let gated: unsafe extern "C" fn(M, i32, P, i32, P, i32, i64, i64, i64) =
        kernel!(emu, "add_gated", fn(M, i32, P, i32, P, i32, i64, i64, i64));
    let (x, y, g) = (random(&[2, 75, 96], 2.0, 31), random(&[2, 75, 96], 2.0, 32), random(&[2, 1, 96], 1.0, 33));
    let mut got = x.data().to_vec();
    let n = got.len() as i64;
    emu.run(|| unsafe {
        gated(got.as_mut_ptr().cast(), 0, y.data().as_ptr().cast(), 0, g.data().as_ptr().cast(), 0, 75, 96, n)
    });
    let mut want = be.upload(&x).unwrap();
    be.add_gated(&mut want, &be.upload(&y).unwrap(), &be.upload(&g).unwrap()).unwrap();
    assert_close("add_gated", &got, &host(&be, &want), 0.0);

    let clamp: unsafe extern "C" fn(M, i32, f32, f32, f32, f32, i64) =
        kernel!(emu, "affine_clamp", fn(M, i32, f32, f32, f32, f32, i64));
    let x = random(&[1, 3, 5, 9, 11], 1.5, 34);
    let mut got = x.data().to_vec();
    emu.run(|| unsafe { clamp(got.as_mut_ptr().cast(), 0, 0.5, 0.5, 0.0, 1.0, got.len() as i64) });
    let mut want = be.upload(&x).unwrap();
    be.affine_clamp(&mut want, 0.5, 0.5, 0.0, 1.0).unwrap();
    assert_close("affine_clamp", &got, &host(&be, &want), 0.0);

    let scalar: unsafe extern "C" fn(P, M, i32, i32, f32, i64) =
        kernel!(emu, "scalar_op", fn(P, M, i32, i32, f32, i64));
    let mut got = vec![0f32; x.numel()];
    emu.run(|| unsafe { scalar(x.data().as_ptr().cast(), got.as_mut_ptr().cast(), 0, 3, -1.7, got.len() as i64) });
    let want = be.scalar(BinaryOp::Div, &be.upload(&x).unwrap(), -1.7).unwrap();
    assert_close("scalar Div", &got, &host(&be, &want), 0.0);
}

#[test]
fn activation_kernel_matches_the_cpu_backend() {
    let Some(emu) = Emulated::build("activation") else { return };
    let be = cpu();
    let act: unsafe extern "C" fn(P, i32, M, i32, i32, i64) = kernel!(emu, "activation", fn(P, i32, M, i32, i32, i64));
    let x = random(&[2, 75, 97], 6.0, 40);
    for (code, a) in Activation::ALL.into_iter().enumerate() {
        let mut got = vec![0f32; x.numel()];
        emu.run(|| unsafe {
            act(x.data().as_ptr().cast(), 0, got.as_mut_ptr().cast(), 0, code as i32, got.len() as i64)
        });
        let want = be.activation(be.upload(&x).unwrap(), a).unwrap();
        // The CPU backend's exp/erf are polynomial approximations; libm here (and the GPU's).
        assert_close(&format!("activation {a:?}"), &got, &host(&be, &want), 1e-6);
        // measured ≤ 1.6e-7
    }
}

#[test]
fn layout_kernels_match_the_cpu_backend() {
    let Some(emu) = Emulated::build("layout") else { return };
    let be = cpu();
    let x = random(&[2, 5, 3, 7], 2.0, 50);
    let xt = be.upload(&x).unwrap();

    let permute: unsafe extern "C" fn(P, M, i32, i64, launch::Dims) =
        kernel!(emu, "permute", fn(P, M, i32, i64, launch::Dims));
    let (shape, dims) = launch::permute_dims(x.shape(), &[0, 3, 1, 2]).unwrap();
    let mut got = vec![0f32; x.numel()];
    emu.run(|| unsafe { permute(x.data().as_ptr().cast(), got.as_mut_ptr().cast(), 4, got.len() as i64, dims) });
    assert_eq!(shape, [2, 7, 5, 3]);
    assert_close("permute [0,3,1,2]", &got, &host(&be, &be.permute(&xt, &[0, 3, 1, 2]).unwrap()), 0.0);

    // narrow then cat, as the backend plans them, on bf16 bits (2-byte elements).
    let copy: unsafe extern "C" fn(P, i64, i64, M, i64, i64, i64, i64, i32) =
        kernel!(emu, "copy_block", fn(P, i64, i64, M, i64, i64, i64, i64, i32));
    let bits: Vec<u16> = x.data().iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect();
    let run_copy = |c: &launch::BlockCopy, src: &[u16], dst: &mut [u16]| {
        let [sr, so, dr, doff, len, outer] =
            [c.src_row, c.src_off, c.dst_row, c.dst_off, c.len, c.outer].map(|v| v as i64);
        emu.run(|| unsafe { copy(src.as_ptr().cast(), sr, so, dst.as_mut_ptr().cast(), dr, doff, len, outer, 2) });
    };
    let (nshape, c) = launch::narrow_plan(x.shape(), 1, 1, 3).unwrap();
    let mut narrowed = vec![0u16; nshape.iter().product()];
    run_copy(&c, &bits, &mut narrowed);
    let shapes: [&[usize]; 2] = [&nshape, x.shape()];
    let (cshape, copies) = launch::cat_plan(&shapes, 1).unwrap();
    let mut cat = vec![0u16; cshape.iter().product()];
    run_copy(&copies[0], &narrowed, &mut cat);
    run_copy(&copies[1], &bits, &mut cat);
    let as_f32 = |b: &[u16]| b.iter().map(|&b| half::bf16::from_bits(b).to_f32()).collect::<Vec<_>>();
    let rounded = be.upload(&HostTensor::new(x.shape().to_vec(), as_f32(&bits)).unwrap()).unwrap();
    let want = be.cat(&[&be.narrow(&rounded, 1, 1, 3).unwrap(), &rounded], 1).unwrap();
    assert_close("narrow + cat (bf16 bits)", &as_f32(&cat), &host(&be, &want), 0.0);

    let up: unsafe extern "C" fn(P, M, i32, i64, i64, i64) =
        kernel!(emu, "upsample_nearest2x", fn(P, M, i32, i64, i64, i64));
    let img = random(&[3, 16, 5, 7], 1.0, 51);
    let mut got = vec![0f32; img.numel() * 4];
    emu.run(|| unsafe { up(img.data().as_ptr().cast(), got.as_mut_ptr().cast(), 4, 5, 7, got.len() as i64) });
    assert_close(
        "upsample nearest 2x",
        &got,
        &host(&be, &be.upsample_nearest2x(&be.upload(&img).unwrap()).unwrap()),
        0.0,
    );

    let emb: unsafe extern "C" fn(P, i32, *const u32, M, i32, i64, i64) =
        kernel!(emu, "embedding", fn(P, i32, *const u32, M, i32, i64, i64));
    let table = random(&[37, 64], 1.0, 52);
    let ids: Vec<u32> = (0..26).map(|i| (i * 7 % 37) as u32).collect();
    let mut got = vec![0f32; 26 * 64];
    emu.run(|| unsafe {
        emb(table.data().as_ptr().cast(), 0, ids.as_ptr(), got.as_mut_ptr().cast(), 0, 64, got.len() as i64)
    });
    let mut e = wanrt_nn::Embedding::from_f32("t", &table).unwrap();
    e.prepare(&be).unwrap();
    let want = be.embedding(&e, &be.upload_ids(&[2, 13], &ids).unwrap()).unwrap();
    assert_close("embedding", &got, &host(&be, &want), 0.0);

    // conv3d as the backend runs it: im2col in chunks, a GEMM (here a host loop), conv_out.
    let im2col: unsafe extern "C" fn(P, i32, M, i32, launch::ConvArgs, i64, i64) =
        kernel!(emu, "im2col3d", fn(P, i32, M, i32, launch::ConvArgs, i64, i64));
    let conv_out: unsafe extern "C" fn(P, i32, *const f32, M, i32, i64, i64, i64, i64, i64) =
        kernel!(emu, "conv_out", fn(P, i32, *const f32, M, i32, i64, i64, i64, i64, i64));
    use wanrt_nn::ops::PaddingFull;
    type Stride = (usize, usize, usize);
    let cases: [([usize; 5], Stride, PaddingFull); 3] = [
        ([24, 16, 3, 3, 3], (1, 1, 1), PaddingFull { t: (2, 0), h: (1, 1), w: (1, 1) }),
        ([16, 16, 1, 3, 3], (1, 2, 2), PaddingFull { t: (0, 0), h: (0, 1), w: (0, 1) }),
        ([8, 16, 1, 1, 1], (1, 1, 1), PaddingFull::default()),
    ];
    for (wshape, stride, pad) in cases {
        let k = wshape[1] * wshape[2] * wshape[3] * wshape[4];
        let w = random(&wshape, 1.0 / (k as f32).sqrt(), 53);
        let bias = random(&[wshape[0]], 0.1, 54).into_data();
        let x = random(&[1, 16, 3, 10, 12], 1.0, 55);
        let a = launch::conv_args([16, 3, 10, 12], [wshape[2], wshape[3], wshape[4]], stride, [pad.t, pad.h, pad.w])
            .unwrap();
        let (p, cout) = (a.positions(), wshape[0]);
        let mut out = vec![0f32; cout * p];
        let chunk = 37; // uneven chunks of positions, as the backend splits large convs
        for p0 in (0..p).step_by(chunk) {
            let rows = chunk.min(p - p0);
            let mut cols = vec![0f32; rows * k];
            emu.run(|| unsafe {
                im2col(x.data().as_ptr().cast(), 0, cols.as_mut_ptr().cast(), 0, a, p0 as i64, (rows * k) as i64)
            });
            let mut y = vec![0f32; rows * cout];
            for r in 0..rows {
                for co in 0..cout {
                    y[r * cout + co] = (0..k).map(|i| cols[r * k + i] * w.data()[co * k + i]).sum();
                }
            }
            let (pi, rows_i, cout_i) = (p as i64, rows as i64, cout as i64);
            emu.run(|| unsafe {
                conv_out(
                    y.as_ptr().cast(),
                    0,
                    bias.as_ptr(),
                    out.as_mut_ptr().cast(),
                    0,
                    pi,
                    p0 as i64,
                    rows_i,
                    cout_i,
                    rows_i * cout_i,
                )
            });
        }
        let mut conv =
            wanrt_nn::Conv3d::new("c", wanrt_nn::weights::RawTensor::from_f32(&w), Some(bias), stride).unwrap();
        conv.prepare(&be).unwrap();
        let want = be.conv3d(&conv, &be.upload(&x).unwrap(), None, pad).unwrap();
        // Sums in another order (measured ≤ 7.4e-7).
        assert_close(&format!("conv3d {wshape:?} stride {stride:?}"), &out, &host(&be, &want), 4e-6);
    }
}

#[test]
fn position_and_channel_norm_kernels_match_the_cpu_backend() {
    let Some(pos) = Emulated::build("position") else { return };
    let be = cpu();
    let rope: unsafe extern "C" fn(M, i32, *const f32, *const f32, i64, i64, i64, i64) =
        kernel!(pos, "rope_interleaved", fn(M, i32, *const f32, *const f32, i64, i64, i64, i64));
    let (ct, st) = be.rope_tables([3, 5, 5], [44, 42, 42], 10000.0).unwrap();
    let (cos, sin) = (host(&be, &ct), host(&be, &st));
    let x = random(&[2, 75, 3, 128], 2.0, 60);
    let mut got = x.data().to_vec();
    let n = (got.len() / 2) as i64;
    pos.run(|| unsafe { rope(got.as_mut_ptr().cast(), 0, cos.as_ptr(), sin.as_ptr(), 75, 3, 128, n) });
    let mut want = be.upload(&x).unwrap();
    be.rope_interleaved(&mut want, &ct, &st).unwrap();
    assert_close("rope interleaved, head dim 128", &got, &host(&be, &want), 0.0);

    let temb: unsafe extern "C" fn(launch::BatchFloats, M, i32, i64, i32, f32, i64) =
        kernel!(pos, "timestep_embedding", fn(launch::BatchFloats, M, i32, i64, i32, f32, i64));
    let ts = [999.0f32, 500.5, 3.0];
    let mut steps = launch::BatchFloats { t: [0.0; launch::MAX_BATCH_ARGS] };
    steps.t[..3].copy_from_slice(&ts);
    for (dim, flip, shift) in [(256usize, true, 0.0f32), (33, false, 1.0)] {
        let mut got = vec![0f32; 3 * dim];
        pos.run(|| unsafe {
            temb(steps, got.as_mut_ptr().cast(), 0, dim as i64, flip as i32, shift, got.len() as i64)
        });
        let want = be.timestep_embedding(&ts, dim, flip, shift).unwrap();
        // Identical on the host (libm both sides); a GPU's sinf/cosf differ in the last bits.
        assert_close(&format!("timestep embedding dim {dim}"), &got, &host(&be, &want), 1e-6);
    }

    let Some(norm) = Emulated::build("norm") else { return };
    let crms: unsafe extern "C" fn(P, i32, M, i32, *const f32, i32, i64, i64, i64) =
        kernel!(norm, "channel_rms_norm", fn(P, i32, M, i32, *const f32, i32, i64, i64, i64));
    let x = random(&[1, 24, 3, 10, 12], 2.0, 61);
    let gamma = random(&[24], 1.0, 62);
    for silu in [false, true] {
        let mut got = vec![0f32; x.numel()];
        let s = 3 * 10 * 12;
        norm.run(|| unsafe {
            crms(x.data().as_ptr().cast(), 0, got.as_mut_ptr().cast(), 0, gamma.data().as_ptr(), silu as i32, 24, s, s)
        });
        let want =
            be.channel_rms_norm(&be.upload(&x).unwrap(), &be.weight_tensor(gamma.clone()).unwrap(), silu).unwrap();
        assert_close(&format!("channel_rms_norm silu {silu}"), &got, &host(&be, &want), 1e-6);
        // ≤ 2.1e-7
    }
}

/// Addresses as integers (the kernels write through them; Rust sees no borrow held across).
fn addr<T>(p: *const T) -> usize {
    p as usize
}

#[test]
fn cooperative_norm_and_reduction_kernels_match_the_cpu_backend() {
    let Some(emu) = Emulated::build("norm") else { return };
    let be = cpu();
    let (rows, c) = (2 * 75, 96);
    let x = random(&[2, 75, c], 3.0, 70);
    let w = random(&[c], 1.0, 71);
    let b = random(&[c], 0.5, 72);
    let (scale, shift) = (random(&[2, 1, c], 0.5, 73), random(&[2, 1, c], 0.5, 74));
    // The backend's own launch configurations (as for every kernel below).
    let l = launch::per_row(rows).unwrap();

    let rms: unsafe extern "C" fn(P, i32, M, i32, *const f32, f32, i64) =
        kernel!(emu, "rms_norm", fn(P, i32, M, i32, *const f32, f32, i64));
    let mut got = vec![0f32; x.numel()];
    let (px, pg, pw) = (addr(x.data().as_ptr()), addr(got.as_mut_ptr()), addr(w.data().as_ptr()));
    emu.run_blocks(l, || unsafe { rms(px as P, 0, pg as M, 0, pw as *const f32, 1e-6, c as i64) });
    let want = be.rms_norm(be.upload(&x).unwrap(), 1e-6, Some(&be.weight_tensor(w.clone()).unwrap())).unwrap();
    assert_close("rms_norm", &got, &host(&be, &want), 1e-6);

    let ln: unsafe extern "C" fn(P, i32, M, i32, *const f32, *const f32, P, P, i32, i64, f32, i64) =
        kernel!(emu, "layer_norm", fn(P, i32, M, i32, *const f32, *const f32, P, P, i32, i64, f32, i64));
    let pb = addr(b.data().as_ptr());
    emu.run_blocks(l, || unsafe {
        ln(
            px as P,
            0,
            pg as M,
            0,
            pw as *const f32,
            pb as *const f32,
            std::ptr::null(),
            std::ptr::null(),
            0,
            1,
            1e-6,
            c as i64,
        )
    });
    let want = be
        .layer_norm(
            be.upload(&x).unwrap(),
            1e-6,
            Some(&be.weight_tensor(w.clone()).unwrap()),
            Some(&be.weight_tensor(b).unwrap()),
        )
        .unwrap();
    assert_close("layer_norm affine", &got, &host(&be, &want), 1e-6);
    let (ps, ph) = (addr(scale.data().as_ptr()), addr(shift.data().as_ptr()));
    emu.run_blocks(l, || unsafe {
        ln(px as P, 0, pg as M, 0, std::ptr::null(), std::ptr::null(), ps as P, ph as P, 0, 75, 1e-6, c as i64)
    });
    let want = be
        .layer_norm_modulate(&be.upload(&x).unwrap(), 1e-6, &be.upload(&scale).unwrap(), &be.upload(&shift).unwrap())
        .unwrap();
    assert_close("layer_norm_modulate (CFG batch 2)", &got, &host(&be, &want), 1e-6);

    let Some(red) = Emulated::build("reduce") else { return };
    let rel: unsafe extern "C" fn(P, i32, P, i32, *mut f64, i64) =
        kernel!(red, "relative_l1", fn(P, i32, P, i32, *mut f64, i64));
    let (a, bb) = (random(&[1, 75, 96], 1.0, 75), random(&[1, 75, 96], 1.0, 76));
    let mut sums = [0f64; 2];
    let (pa, pbb, psum) = (addr(a.data().as_ptr()), addr(bb.data().as_ptr()), addr(sums.as_mut_ptr()));
    let n = a.numel() as i64;
    let l = launch::reduction(a.numel());
    red.run_blocks(l, || unsafe { rel(pa as P, 0, pbb as P, 0, psum as *mut f64, n) });
    let want = be.relative_l1(&be.upload(&a).unwrap(), &be.upload(&bb).unwrap()).unwrap();
    let got = sums[0] / sums[1];
    assert!((got - want).abs() <= 1e-6 * want, "relative_l1 {got} vs {want}");

    let fin: unsafe extern "C" fn(P, i32, *mut u32, i64) = kernel!(red, "all_finite", fn(P, i32, *mut u32, i64));
    let mut bad = a.data().to_vec();
    for (i, v) in [(None, 0u32), (Some(f32::NAN), 1), (Some(f32::NEG_INFINITY), 1)] {
        if let Some(v) = i {
            bad[5000] = v;
        }
        let mut flag = 0u32;
        let (pbad, pflag) = (addr(bad.as_ptr()), addr(&mut flag as *mut u32));
        red.run_blocks(l, || unsafe { fin(pbad as P, 0, pflag as *mut u32, n) });
        assert_eq!(flag, v, "all_finite with {i:?}");
    }
}

#[test]
fn flash_attention_kernel_matches_the_cpu_backend() {
    use wanrt_nn::backend::{AttentionBias, AttentionPrecision};
    let Some(emu) = Emulated::build("attention") else { return };
    let be = cpu();
    type Attention = unsafe extern "C" fn(P, P, P, M, i32, P, i32, launch::BatchInts, f32, i32, i32, i32);
    // The battery's cases: head dims 128/64/32/16, cross attention to 13 keys, T5's bias + padding.
    for (case, [b, lq, lk, h, d], biased) in [
        ("self, head dim 128, CFG batch 2", [2, 75, 75, 3, 128], false),
        ("self, head dim 64", [2, 40, 40, 2, 64], false),
        ("cross to 13 text tokens, head dim 32", [2, 37, 13, 2, 32], false),
        ("T5: position bias + padded keys, head dim 16", [2, 13, 13, 4, 16], true),
    ] {
        let entry = format!("attention_d{d}\0");
        // SAFETY: the kernel's parameter list in attention.cu.
        let f: Attention = *unsafe { emu.lib.get::<Attention>(entry.as_bytes()) }.unwrap();
        let (q, k, v) =
            (random(&[b, lq, h, d], 2.0, 80), random(&[b, lk, h, d], 2.0, 81), random(&[b, lk, h, d], 1.0, 82));
        let bias = random(&[h, lq, lk], 1.0, 83);
        let lengths: Vec<usize> = if biased { (0..b).map(|i| lk - i * (lk / 3)).collect() } else { vec![lk; b] };
        let lens = launch::BatchInts::new("attention", &lengths).unwrap();
        let scale = 1.0 / (d as f32).sqrt();
        let mut got = vec![0f32; q.numel()];
        let pbias = if biased { addr(bias.data().as_ptr()) } else { 0 };
        let (pq, pk, pv, po) =
            (addr(q.data().as_ptr()), addr(k.data().as_ptr()), addr(v.data().as_ptr()), addr(got.as_mut_ptr()));
        emu.run_blocks(launch::attention(b, lq, h).unwrap(), || unsafe {
            f(pq as P, pk as P, pv as P, po as M, 0, pbias as P, 0, lens, scale, lq as i32, lk as i32, h as i32)
        });
        let (qt, kt, vt) = (be.upload(&q).unwrap(), be.upload(&k).unwrap(), be.upload(&v).unwrap());
        let bt = be.upload(&bias).unwrap();
        let ab = if biased {
            AttentionBias { per_head: Some(&bt), key_lengths: Some(&lengths) }
        } else {
            AttentionBias::default()
        };
        let want = be.attention(&qt, &kt, &vt, scale, ab, AttentionPrecision::Full).unwrap();
        // Online softmax (rescaled partial sums) against the reference's two-pass softmax.
        assert_close(&format!("attention {case}"), &got, &host(&be, &want), 2e-6);
    }
}

/// The W8A8 layer's kernels (quant.cu) around a stand-in for cuBLASLt's 8-bit GEMM (exact i32
/// sums for int8, f64 sums rounded to f32 for FP8) give the CPU backend's W8A8 layers: int8 bit
/// for bit (per token with SmoothQuant factors, per tensor, a saturating static scale; a zero row
/// included), FP8 up to summation order with the CPU's E4M3 codes. The launches, padding and
/// scale arguments are the backend's (`cuda::w8a8`).
#[test]
fn w8a8_kernels_match_the_cpu_backend() {
    use wanrt_nn::backend::cuda::w8a8::{padded, padded_codes, ActScaling, Codes};
    use wanrt_nn::quant::{fp8, ActQuant, Fp8Matrix, QuantizedMatrix};
    use wanrt_nn::weights::RawTensor;
    use wanrt_nn::{DType, Linear, LinearWeight};
    let Some(emu) = Emulated::build("quant") else { return };
    let be = cpu();
    let (m, n, k) = (150, 130, 96);
    let (kp, np) = (padded(k), padded(n));
    let mut x = random(&[2, 75, k], 2.0, 80);
    x.data_mut()[5 * k..6 * k].fill(0.0);
    let w = random(&[n, k], 0.2, 81);
    let bias = random(&[n], 0.1, 82).into_data();
    let smooth: Vec<f32> = random(&[k], 0.5, 83).data().iter().map(|v| 1.0 + v.abs()).collect();

    let row_absmax: unsafe extern "C" fn(P, i32, *const f32, *mut f32, i64) =
        kernel!(emu, "row_absmax", fn(P, i32, *const f32, *mut f32, i64));
    let tensor_absmax: unsafe extern "C" fn(*const f32, *mut f32, i64) =
        kernel!(emu, "tensor_absmax", fn(*const f32, *mut f32, i64));
    let quantize: unsafe extern "C" fn(P, i32, *const f32, i32, *const f32, f32, M, *mut f32, i64, i64) =
        kernel!(emu, "quantize_rows", fn(P, i32, *const f32, i32, *const f32, f32, M, *mut f32, i64, i64));
    let dequantize: unsafe extern "C" fn(P, i32, i64, *const f32, *const f32, *const f32, i32, M, i32, i64, i64) =
        kernel!(emu, "dequantize_acc", fn(P, i32, i64, *const f32, *const f32, *const f32, i32, M, i32, i64, i64));

    // The backend's forward pass, kernel by kernel: (output, activation codes, activation scales).
    let emulated = |format: Codes,
                    weight: &[u8],
                    weight_scales: &[f32],
                    act: ActQuant,
                    inv_smooth: Option<&[f32]>,
                    activation: Option<Activation>| {
        let scaling = ActScaling::new(act).unwrap();
        let wp = padded_codes(&[weight], n, k).unwrap();
        let rows = launch::per_row(m).unwrap();
        let px = addr(x.data().as_ptr());
        let ps = inv_smooth.map_or(0, |s| addr(s.as_ptr()));
        let mut amax = 0f32;
        if scaling.per_tensor {
            let mut row_max = vec![0f32; m];
            let pr = addr(row_max.as_mut_ptr());
            emu.run_blocks(rows, || unsafe { row_absmax(px as P, 0, ps as *const f32, pr as *mut f32, k as i64) });
            let pa = addr(&mut amax as *mut f32);
            emu.run_blocks(launch::reduction(m), || unsafe {
                tensor_absmax(pr as *const f32, pa as *mut f32, m as i64)
            });
            assert_eq!(amax, row_max.iter().fold(0f32, |a, &b| a.max(b)));
        }
        let pamax = if scaling.per_tensor { addr(&amax as *const f32) } else { 0 };
        let (mut codes, mut scales) = (vec![0u8; m * kp], vec![0f32; m]);
        let (pc, psc) = (addr(codes.as_mut_ptr()), addr(scales.as_mut_ptr()));
        let fmt = format.kernel_code();
        emu.run_blocks(rows, || unsafe {
            quantize(
                px as P,
                0,
                ps as *const f32,
                fmt,
                pamax as *const f32,
                scaling.static_scale,
                pc as M,
                psc as *mut f32,
                k as i64,
                kp as i64,
            )
        });
        // cuBLASLt's part: the padded product of the codes.
        let dot = |i: usize, j: usize| -> (i32, f64) {
            let (a, b) = (&codes[i * kp..(i + 1) * kp], &wp[j * kp..(j + 1) * kp]);
            let int = a.iter().zip(b).map(|(&p, &q)| p as i8 as i32 * q as i8 as i32).sum();
            let float = a.iter().zip(b).map(|(&p, &q)| fp8::e4m3_to_f32(p) as f64 * fp8::e4m3_to_f32(q) as f64).sum();
            (int, float)
        };
        let acc: Vec<u32> = (0..m * np)
            .map(|ij| {
                let (int, float) = dot(ij / np, ij % np);
                if format.integer_sums() {
                    int as u32
                } else {
                    (float as f32).to_bits()
                }
            })
            .collect();
        let mut y = vec![0f32; m * n];
        let (pacc, pw, pb, py) =
            (addr(acc.as_ptr()), addr(weight_scales.as_ptr()), addr(bias.as_ptr()), addr(y.as_mut_ptr()));
        let act_code = activation.map_or(-1, launch::activation_code);
        emu.run(|| unsafe {
            dequantize(
                pacc as P,
                format.integer_sums() as i32,
                np as i64,
                psc as *const f32,
                pw as *const f32,
                pb as *const f32,
                act_code,
                py as M,
                0,
                n as i64,
                (m * n) as i64,
            )
        });
        (y, codes, scales)
    };
    let on_cpu = |weight: LinearWeight, activation: Option<Activation>| {
        let mut layer = Linear::new("q", vec![("q".into(), n)], k, weight, Some(bias.clone())).unwrap();
        layer.prepare(&be).unwrap();
        let xt = be.upload(&x).unwrap();
        let y = match activation {
            None => be.linear(&layer, &xt).unwrap(),
            Some(a) => be.linear_activation(&layer, &xt, a).unwrap(),
        };
        host(&be, &y)
    };

    let q = QuantizedMatrix::quantize_per_row_symmetric(w.data(), n, k);
    let int8_codes: Vec<u8> = q.data.iter().map(|&c| c as u8).collect();
    let inv_smooth: Vec<f32> = smooth.iter().map(|s| 1.0 / s).collect();
    let int8 = |act, smooth: Option<Vec<f32>>| LinearWeight::Int8 {
        codes: vec![RawTensor::from_bytes(DType::I8, vec![n, k], int8_codes.clone()).unwrap()],
        scales: q.scales.clone(),
        act: Some(act),
        smooth,
    };
    for (what, act, smoothed) in [
        ("int8 per token, smoothed", ActQuant::PerToken, true),
        ("int8 per tensor", ActQuant::PerTensor, false),
        ("int8 static scale (saturating)", ActQuant::Static(0.01), false),
    ] {
        let inv = smoothed.then_some(&inv_smooth[..]);
        let (got, _, scales) = emulated(Codes::Int8, &int8_codes, &q.scales, act, inv, None);
        assert_eq!(
            scales[5],
            if matches!(act, ActQuant::Static(_)) {
                0.01
            } else if smoothed {
                0.0
            } else {
                scales[0]
            }
        );
        let want = on_cpu(int8(act, smoothed.then(|| smooth.clone())), None);
        let differ = got.iter().zip(&want).filter(|(g, w)| g.to_bits() != w.to_bits()).count();
        assert_eq!(differ, 0, "{what}: {differ} of {} outputs differ from the CPU backend's bits", got.len());
        println!("{what:<48} bit-identical");
    }
    let (got, _, _) =
        emulated(Codes::Int8, &int8_codes, &q.scales, ActQuant::PerToken, None, Some(Activation::GeluTanh));
    let want = on_cpu(int8(ActQuant::PerToken, None), Some(Activation::GeluTanh));
    assert_close("int8 per token + gelu-tanh epilogue", &got, &want, 1e-6);

    let f = Fp8Matrix::quantize_per_channel(w.data(), n, k);
    let (got, codes, scales) = emulated(Codes::Fp8, &f.data, &f.scales, ActQuant::PerToken, None, None);
    for r in 0..m {
        let row = &x.data()[r * k..(r + 1) * k];
        let s = row.iter().fold(0f32, |a, &v| a.max(v.abs())) / fp8::E4M3_MAX;
        assert_eq!(scales[r].to_bits(), s.to_bits(), "fp8 scale of row {r}");
        for (c, &v) in codes[r * kp..r * kp + k].iter().zip(row) {
            assert_eq!(*c, if s > 0.0 { fp8::f32_to_e4m3(v / s) } else { 0 }, "fp8 code of row {r}");
        }
    }
    let fp8_layer = LinearWeight::Fp8 {
        codes: vec![RawTensor::from_bytes(DType::F8E4M3, vec![n, k], f.data.clone()).unwrap()],
        scales: f.scales.clone(),
        act: Some(ActQuant::PerToken),
    };
    assert_close("fp8 per token (f32 sums in another order)", &got, &on_cpu(fp8_layer, None), 1e-6);
}

/// The 8-bit attention kernels (attention_int8.cu: key mean, per-(token, head) int8 codes,
/// flash attention with `__dp4a` Q·Kᵀ) on keys with outlier channels (the case K smoothing is
/// for): their error against the CPU backend's f32 attention is the CPU's own 8-bit attention's
/// (same int8 Q·Kᵀ; only its 14/10-bit P·V rounding differs), and the codes are the CPU
/// quantizer's.
#[test]
fn int8_attention_kernels_match_the_cpu_backend() {
    use wanrt_nn::backend::{AttentionBias, AttentionPrecision};
    let Some(emu) = Emulated::build("attention_int8") else { return };
    let be = cpu();
    let mean: unsafe extern "C" fn(P, i32, *mut f32, i32, i32, i32) =
        kernel!(emu, "key_mean", fn(P, i32, *mut f32, i32, i32, i32));
    let quantize: unsafe extern "C" fn(P, i32, *const f32, *mut i8, *mut f32, i64, i32, i32, i32) =
        kernel!(emu, "quantize_heads", fn(P, i32, *const f32, *mut i8, *mut f32, i64, i32, i32, i32));
    type Attention = unsafe extern "C" fn(P, *const f32, P, *const f32, P, M, i32, f32, i32, i32, i32);
    let rel_l2 = |a: &[f32], b: &[f32]| {
        let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        (num / b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>()).sqrt()
    };
    for [b, lq, lk, h, d] in [[2, 75, 75, 3, 128], [1, 40, 13, 2, 64], [2, 21, 21, 2, 32], [1, 9, 9, 4, 16]] {
        let (q, v) = (random(&[b, lq, h, d], 2.0, 90), random(&[b, lk, h, d], 1.0, 92));
        let mut k = random(&[b, lk, h, d], 2.0, 91);
        // Channel offsets in K, as Wan's keys have: what smoothing removes.
        k.data_mut().iter_mut().enumerate().for_each(|(i, x)| *x += if i % d < 3 { 8.0 } else { 0.0 });
        let scale = 1.0 / (d as f32).sqrt();
        let (pq, pk, pv) = (addr(q.data().as_ptr()), addr(k.data().as_ptr()), addr(v.data().as_ptr()));
        let mut mu = vec![0f32; b * h * d];
        let pmu = addr(mu.as_mut_ptr());
        emu.run_blocks(launch::per_head(b, h).unwrap(), || unsafe {
            mean(pk as P, 0, pmu as *mut f32, lk as i32, h as i32, d as i32)
        });
        let quantized = |x: usize, len: usize, mean: usize| {
            let rows = b * len * h;
            let (mut codes, mut scales) = (vec![0i8; rows * d], vec![0f32; rows]);
            let (pc, ps) = (addr(codes.as_mut_ptr()), addr(scales.as_mut_ptr()));
            emu.run_blocks(launch::warp_per_row(rows), || unsafe {
                quantize(
                    x as P,
                    0,
                    mean as *const f32,
                    pc as *mut i8,
                    ps as *mut f32,
                    rows as i64,
                    len as i32,
                    h as i32,
                    d as i32,
                )
            });
            (codes, scales)
        };
        let (qc, qs) = quantized(pq, lq, 0);
        let (kc, ks) = quantized(pk, lk, pmu);
        // The codes are the CPU's int8 quantizer's: rint(v · 127/absmax) per row.
        let want = wanrt_nn::quant::QuantizedMatrix::quantize_per_row_symmetric(q.data(), b * lq * h, d);
        assert_eq!(qc, want.data, "q codes");
        assert_eq!(qs, want.scales, "q scales");
        let entry = format!("attention_int8_d{d}\0");
        // SAFETY: the kernel's parameter list in attention_int8.cu.
        let f: Attention = *unsafe { emu.lib.get::<Attention>(entry.as_bytes()) }.unwrap();
        let attend = |kc: &[i8], ks: &[f32]| {
            let mut out = vec![0f32; q.numel()];
            let (pqc, pqs, pkc, pks, po) =
                (addr(qc.as_ptr()), addr(qs.as_ptr()), addr(kc.as_ptr()), addr(ks.as_ptr()), addr(out.as_mut_ptr()));
            emu.run_blocks(launch::attention(b, lq, h).unwrap(), || unsafe {
                f(
                    pqc as P,
                    pqs as *const f32,
                    pkc as P,
                    pks as *const f32,
                    pv as P,
                    po as M,
                    0,
                    scale,
                    lq as i32,
                    lk as i32,
                    h as i32,
                )
            });
            out
        };
        let got = attend(&kc, &ks);
        // The same kernels with K quantized as is (no mean subtracted): what the smoothing buys.
        let (kc_raw, ks_raw) = quantized(pk, lk, 0);
        let unsmoothed = attend(&kc_raw, &ks_raw);
        let (qt, kt, vt) = (be.upload(&q).unwrap(), be.upload(&k).unwrap(), be.upload(&v).unwrap());
        let full =
            host(&be, &be.attention(&qt, &kt, &vt, scale, AttentionBias::default(), AttentionPrecision::Full).unwrap());
        let cpu8 =
            host(&be, &be.attention(&qt, &kt, &vt, scale, AttentionBias::default(), AttentionPrecision::Int8).unwrap());
        let (ours, theirs, between) = (rel_l2(&got, &full), rel_l2(&cpu8, &full), rel_l2(&got, &cpu8));
        let raw = rel_l2(&unsmoothed, &full);
        println!(
            "int8 attention {:?}: vs f32 {ours:.4} (CPU int8 {theirs:.4}; unsmoothed K {raw:.4}), vs CPU int8 {between:.4}",
            [b, lq, lk, h, d]
        );
        assert!(raw > 1.5 * ours, "smoothing K does not help: {raw} unsmoothed vs {ours}");
        assert!(ours > 1e-5, "no quantization error at all?");
        assert!(ours <= 1.1 * theirs + 1e-3 && ours < 0.05, "8-bit attention error {ours} vs the CPU's {theirs}");
        assert!(between <= 0.5 * theirs + 1e-3, "GPU and CPU 8-bit attention differ by {between}");
    }
}
