//! GEMMs on cuBLASLt's `result`/`sys` layer: `y[M, N] = x[M, K] · w[N, K]ᵀ (+ bias) (GELU)` with
//! bf16 (or f32) operands and f32 accumulation, and the W8A8 layers' 8-bit products: int8 codes
//! with exact i32 accumulation (IMMA) and FP8 E4M3 codes with f32 accumulation, whose scales,
//! bias and activation the backend's `dequantize_acc` kernel applies afterwards. Descriptors, layouts and the algorithm the
//! heuristic picks are made once per shape and kept ([`GemmKey`] → plan): cudarc's safe `Matmul`
//! re-runs the heuristic on every call, and a CUDA graph capture needs the plans to exist first.
//! One fixed workspace serves every plan (the backend runs one stream).
//!
//! Row-major operands are read as column-major transposes: cuBLASLt computes
//! `yᵀ[N, M] = op(w)[N, K] · xᵀ[K, M]` with `w` transposed (`TRANSA = T`), so no copy is needed.

use crate::dtype::DType;
use crate::error::{Error, Result};
use cudarc::cublaslt::{result as lt, sys};
use std::collections::HashMap;
use std::sync::Mutex;

/// What the GEMM adds after the product (fused by cuBLASLt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Epilogue {
    None,
    Bias,
    /// GELU with the tanh approximation (cuBLASLt's GELU is that one).
    Gelu,
    GeluBias,
}

impl Epilogue {
    pub fn new(bias: bool, gelu: bool) -> Epilogue {
        match (bias, gelu) {
            (false, false) => Epilogue::None,
            (true, false) => Epilogue::Bias,
            (false, true) => Epilogue::Gelu,
            (true, true) => Epilogue::GeluBias,
        }
    }
    fn code(self) -> sys::cublasLtEpilogue_t {
        match self {
            Epilogue::None => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT,
            Epilogue::Bias => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
            Epilogue::Gelu => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU,
            Epilogue::GeluBias => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU_BIAS,
        }
    }
}

/// One GEMM shape: the key of the plan cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GemmKey {
    /// Rows of `x` and `y` (tokens).
    pub m: usize,
    /// Output features (rows of `w`).
    pub n: usize,
    /// Input features.
    pub k: usize,
    /// Element type of `x`, `w`, `y` and the bias (f32, bf16 or f16); or of the 8-bit codes `x`
    /// and `w` (i8, f8e4m3), whose product `y` is i32 (int8) or f32 (fp8), with no epilogue.
    pub dtype: DType,
    pub epilogue: Epilogue,
}

/// A column-major matrix layout: `(rows, cols, leading dimension)`.
pub type Layout = (u64, u64, i64);

impl GemmKey {
    /// Layouts of cuBLASLt's `A` (= w, K×N, transposed in the op), `B` (= x, K×M) and `D`
    /// (= y, N×M) for row-major `x[M, K]`, `w[N, K]`, `y[M, N]`.
    pub fn layouts(&self) -> [Layout; 3] {
        let (m, n, k) = (self.m as u64, self.n as u64, self.k as u64);
        [(k, n, k as i64), (k, m, k as i64), (n, m, n as i64)]
    }

    /// Whether cuBLASLt can take the shape: no empty dimension; 8-bit operands without an
    /// epilogue and with the alignment cuBLASLt's IMMA / FP8 kernels need (row lengths of 16-byte
    /// multiples: every Wan width is one).
    pub fn check(&self) -> Result<()> {
        let types = OperandTypes::of(self.dtype)?;
        if self.m == 0 || self.n == 0 || self.k == 0 {
            return Err(Error::Msg(format!("cuda gemm: empty shape {self:?}")));
        }
        if types.eight_bit() {
            if self.epilogue != Epilogue::None {
                return Err(Error::Msg(format!("cuda gemm: {} products take no epilogue ({self:?})", self.dtype)));
            }
            if !self.k.is_multiple_of(16) || !self.n.is_multiple_of(16) {
                return Err(Error::Msg(format!(
                    "cuda gemm: {} products need input and output features that are multiples of 16, got k = {} \
                     and n = {}",
                    self.dtype, self.k, self.n
                )));
            }
        }
        Ok(())
    }
}

/// cuBLASLt's types for one operand dtype: of `A`/`B`, of `D`, of the accumulation and of
/// alpha/beta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperandTypes {
    pub ab: sys::cudaDataType,
    pub d: sys::cudaDataType,
    pub compute: sys::cublasComputeType_t,
    pub scale: sys::cudaDataType,
}

impl OperandTypes {
    pub fn of(dtype: DType) -> Result<OperandTypes> {
        use sys::cublasComputeType_t::{CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32I};
        use sys::cudaDataType::*;
        let float = |t| OperandTypes { ab: t, d: t, compute: CUBLAS_COMPUTE_32F, scale: CUDA_R_32F };
        Ok(match dtype {
            DType::F32 => float(CUDA_R_32F),
            DType::BF16 => float(CUDA_R_16BF),
            DType::F16 => float(CUDA_R_16F),
            // IMMA: exact i32 sums, alpha/beta in i32.
            DType::I8 => OperandTypes { ab: CUDA_R_8I, d: CUDA_R_32I, compute: CUBLAS_COMPUTE_32I, scale: CUDA_R_32I },
            // FP8 tensor cores, f32 output: the scales are applied by the backend's epilogue.
            DType::F8E4M3 => {
                OperandTypes { ab: CUDA_R_8F_E4M3, d: CUDA_R_32F, compute: CUBLAS_COMPUTE_32F, scale: CUDA_R_32F }
            }
            other => return Err(Error::Msg(format!("cuda gemm: no {other} operands"))),
        })
    }

    fn eight_bit(&self) -> bool {
        matches!(self.ab, sys::cudaDataType::CUDA_R_8I | sys::cudaDataType::CUDA_R_8F_E4M3)
    }
}

fn lt_err(what: &'static str, key: &GemmKey) -> impl Fn(lt::CublasError) -> Error {
    let key = *key;
    move |e| Error::Msg(format!("cuBLASLt {what} for {key:?}: {e:?}"))
}

/// Descriptors and the chosen algorithm of one shape.
struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    d: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: each handle was created by this plan and is destroyed once.
        unsafe {
            let _ = lt::destroy_matrix_layout(self.a);
            let _ = lt::destroy_matrix_layout(self.b);
            let _ = lt::destroy_matrix_layout(self.d);
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

/// Workspace every plan may use (cuBLASLt's recommendation for Hopper is 32 MiB).
pub const WORKSPACE_BYTES: usize = 32 << 20;

/// The cuBLASLt handle, the plans made so far and the workspace.
pub struct Gemm {
    handle: sys::cublasLtHandle_t,
    plans: Mutex<HashMap<GemmKey, Plan>>,
    workspace: u64,
}

// SAFETY: the handle and descriptors are used under the plans' lock only (one call at a time).
unsafe impl Send for Gemm {}
unsafe impl Sync for Gemm {}

impl std::fmt::Debug for Gemm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plans = self.plans.lock().map(|p| p.len()).unwrap_or(0);
        write!(f, "Gemm({plans} plans)")
    }
}

impl Gemm {
    /// A handle with a workspace at device address `workspace` (`WORKSPACE_BYTES` long, owned by
    /// the caller for the handle's lifetime).
    pub fn new(workspace: u64) -> Result<Gemm> {
        let handle = lt::create_handle().map_err(|e| Error::Msg(format!("cuBLASLt: cannot create a handle: {e:?}")))?;
        Ok(Gemm { handle, plans: Mutex::default(), workspace })
    }

    /// Shapes planned so far.
    pub fn planned(&self) -> Vec<GemmKey> {
        self.plans.lock().map(|p| p.keys().copied().collect()).unwrap_or_default()
    }

    fn plan(&self, key: &GemmKey) -> Result<Plan> {
        key.check()?;
        let types = OperandTypes::of(key.dtype)?;
        let [la, lb, ld] = key.layouts();
        let desc = lt::create_matmul_desc(types.compute, types.scale).map_err(lt_err("descriptor", key))?;
        let layout = |ty, (r, c, l): Layout| lt::create_matrix_layout(ty, r, c, l).map_err(lt_err("layout", key));
        // The plan owns what exists so far: an error below drops (destroys) it.
        let mut plan = Plan {
            desc,
            a: layout(types.ab, la)?,
            b: std::ptr::null_mut(),
            d: std::ptr::null_mut(),
            // SAFETY: a plain C struct of integers; overwritten by the heuristic's choice below
            // before any use.
            algo: unsafe { std::mem::zeroed() },
        };
        plan.b = layout(types.ab, lb)?;
        plan.d = layout(types.d, ld)?;
        let (trans_a, trans_b) = (1i32, 0i32); // CUBLAS_OP_T, CUBLAS_OP_N
        let epilogue = key.epilogue.code();
        // SAFETY: attributes are written from live values of the types cuBLASLt documents.
        unsafe {
            let set = |attr, ptr: *const std::ffi::c_void, size| {
                lt::set_matmul_desc_attribute(plan.desc, attr, ptr, size).map_err(lt_err("attribute", key))
            };
            use sys::cublasLtMatmulDescAttributes_t as A;
            set(A::CUBLASLT_MATMUL_DESC_TRANSA, (&trans_a as *const i32).cast(), 4)?;
            set(A::CUBLASLT_MATMUL_DESC_TRANSB, (&trans_b as *const i32).cast(), 4)?;
            set(A::CUBLASLT_MATMUL_DESC_EPILOGUE, (&epilogue as *const sys::cublasLtEpilogue_t).cast(), 4)?;
            let pref = lt::create_matmul_pref().map_err(lt_err("preference", key))?;
            let ws = WORKSPACE_BYTES;
            let heuristic = lt::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&ws as *const usize).cast(),
                std::mem::size_of::<usize>(),
            )
            .and_then(|()| lt::get_matmul_algo_heuristic(self.handle, plan.desc, plan.a, plan.b, plan.d, plan.d, pref));
            let _ = lt::destroy_matmul_pref(pref);
            plan.algo = heuristic.map_err(lt_err("heuristic (no algorithm)", key))?.algo;
        }
        Ok(plan)
    }

    /// `y = x · wᵀ (+ bias) (GELU)` on `stream`, device addresses of row-major operands of
    /// `key.dtype` (`bias`: `[N]` of the same dtype, 0 when the epilogue has none); for 8-bit
    /// operands `y` holds the i32 (int8) or f32 (fp8) sums.
    ///
    /// # Safety
    /// `x`, `w`, `y` (and `bias` with a bias epilogue) are live device allocations of at least
    /// `m·k`, `n·k`, `m·n` (and `n`) elements of their types ([`OperandTypes::of`]), usable on
    /// `stream`.
    pub unsafe fn run(&self, key: GemmKey, x: u64, w: u64, bias: u64, y: u64, stream: sys::cudaStream_t) -> Result<()> {
        let mut plans = self.plans.lock().map_err(|_| Error::Msg("cuda gemm: plan cache poisoned".into()))?;
        if let std::collections::hash_map::Entry::Vacant(e) = plans.entry(key) {
            e.insert(self.plan(&key)?);
        }
        let plan = &plans[&key];
        // alpha = 1, beta = 0 in the plan's scale type (i32 for IMMA, f32 otherwise).
        let (alpha, beta): ([u8; 4], [u8; 4]) = match OperandTypes::of(key.dtype)?.scale {
            sys::cudaDataType::CUDA_R_32I => (1i32.to_ne_bytes(), 0i32.to_ne_bytes()),
            _ => (1f32.to_ne_bytes(), 0f32.to_ne_bytes()),
        };
        // SAFETY: the plan's descriptors are live; the pointers are device allocations of the
        // sizes the key describes (checked by the caller); the workspace is WORKSPACE_BYTES.
        unsafe {
            if matches!(key.epilogue, Epilogue::Bias | Epilogue::GeluBias) {
                lt::set_matmul_desc_attribute(
                    plan.desc,
                    sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                    (&bias as *const u64).cast(),
                    8,
                )
                .map_err(lt_err("bias pointer", &key))?;
            }
            lt::matmul(
                self.handle,
                plan.desc,
                alpha.as_ptr().cast(),
                beta.as_ptr().cast(),
                w as *const _,
                plan.a,
                x as *const _,
                plan.b,
                y as *const _,
                plan.d,
                y as *mut _,
                plan.d,
                &plan.algo,
                self.workspace as *mut _,
                WORKSPACE_BYTES,
                stream,
            )
            .map_err(lt_err("matmul", &key))
        }
    }
}

impl Drop for Gemm {
    fn drop(&mut self) {
        if let Ok(mut p) = self.plans.lock() {
            p.clear();
        }
        // SAFETY: created in `new`, destroyed once, after its plans.
        unsafe {
            let _ = lt::destroy_handle(self.handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_major_operands_as_column_major_transposes() {
        // The 1.3B FFN's first GEMM at 32,760 tokens: x [M, 1536] · w[8960, 1536]ᵀ.
        let key = GemmKey { m: 32_760, n: 8960, k: 1536, dtype: DType::BF16, epilogue: Epilogue::GeluBias };
        let [a, b, d] = key.layouts();
        assert_eq!(a, (1536, 8960, 1536)); // w: K×N col-major = [N, K] row-major, op T → N×K
        assert_eq!(b, (1536, 32_760, 1536)); // x: K×M col-major = [M, K] row-major
        assert_eq!(d, (8960, 32_760, 8960)); // y: N×M col-major = [M, N] row-major
        key.check().unwrap();
    }

    #[test]
    fn plans_are_per_shape_and_epilogue() {
        use std::collections::HashSet;
        let k = |m, epilogue| GemmKey { m, n: 96, k: 96, dtype: DType::BF16, epilogue };
        let keys: HashSet<GemmKey> =
            [k(150, Epilogue::Bias), k(150, Epilogue::Bias), k(151, Epilogue::Bias), k(150, Epilogue::GeluBias)]
                .into_iter()
                .collect();
        assert_eq!(keys.len(), 3);
        assert_eq!(Epilogue::new(true, true), Epilogue::GeluBias);
        assert_eq!(Epilogue::new(false, false), Epilogue::None);
        assert!(GemmKey { m: 0, ..k(1, Epilogue::None) }.check().is_err());
        assert!(GemmKey { dtype: DType::U8, ..k(1, Epilogue::None) }.check().is_err());
    }

    #[test]
    fn eight_bit_products_take_their_own_types_and_no_epilogue() {
        use sys::cudaDataType::*;
        let key = |dtype, n, k, epilogue| GemmKey { m: 150, n, k, dtype, epilogue };
        let int8 = OperandTypes::of(DType::I8).unwrap();
        assert_eq!((int8.ab, int8.d, int8.scale), (CUDA_R_8I, CUDA_R_32I, CUDA_R_32I));
        assert_eq!(int8.compute, sys::cublasComputeType_t::CUBLAS_COMPUTE_32I);
        let fp8 = OperandTypes::of(DType::F8E4M3).unwrap();
        assert_eq!((fp8.ab, fp8.d, fp8.scale), (CUDA_R_8F_E4M3, CUDA_R_32F, CUDA_R_32F));
        assert_eq!(OperandTypes::of(DType::BF16).unwrap().d, CUDA_R_16BF);
        for dtype in [DType::I8, DType::F8E4M3] {
            key(dtype, 8960, 1536, Epilogue::None).check().unwrap();
            let bias = key(dtype, 96, 96, Epilogue::Bias).check().unwrap_err().to_string();
            assert!(bias.contains("no epilogue"), "{bias}");
            let odd = key(dtype, 130, 96, Epilogue::None).check().unwrap_err().to_string();
            assert!(odd.contains("multiples of 16") && odd.contains("n = 130"), "{odd}");
            assert!(key(dtype, 96, 100, Epilogue::None).check().is_err());
        }
        // Float operands keep any shape.
        key(DType::BF16, 130, 100, Epilogue::GeluBias).check().unwrap();
    }
}
