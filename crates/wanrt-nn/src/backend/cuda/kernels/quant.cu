// The W8A8 linear layers' own kernels around cuBLASLt's 8-bit GEMMs (int8 IMMA with i32
// accumulation, FP8 E4M3 with f32 accumulation): the activations' quantization before the
// product and the dequantization epilogue after it. The arithmetic is the CPU backend's
// (quant::int8, quant::fp8), operation for operation, so the codes and scales are its bits:
// - int8: scale = absmax/127, codes = rint(clamp(x·(127/absmax), ±127)) (half to even; −128
//   never written), SmoothQuant's 1/s folded in as x·inv_smooth before the absmax;
// - fp8: scale = absmax/448, codes = e4m3(x / scale), saturating at ±448, ties to even.
// One scale per token (row) from the row's absmax, one for the whole tensor from `row_absmax`
// + `tensor_absmax`, or a calibrated static scale.

#define FMT_INT8 0
#define FMT_E4M3 1

// f32 → E4M3FN code, as quant::fp8::f32_to_e4m3: own bit arithmetic rather than
// __nv_cvt_float_to_fp8, so the host emulation runs the very same code.
__device__ __forceinline__ unsigned char f32_to_e4m3(float x) {
    u32 sign = (__float_as_uint(x) >> 24) & 0x80u;
    if (x != x) return (unsigned char)(sign | 0x7Fu);
    float a = fminf(fabsf(x), 448.0f);
    // Subnormal grid m·2⁻⁹ (m = 8 rounds up into the smallest normal, code 0x08).
    if (a < 0.015625f) return (unsigned char)(sign | (u32)rintf(a * 512.0f));
    u32 b = __float_as_uint(a);
    u32 r = (b + 0x7ffffu + ((b >> 20) & 1u)) & 0xfff00000u;
    u32 e = (r >> 23) - 127u + 7u;
    return (unsigned char)(sign | (e << 3) | ((r >> 20) & 7u));
}

__device__ __forceinline__ float smoothed(const void* x, int dtx, i64 i, const float* inv_smooth, i64 col) {
    float v = ld(x, dtx, i);
    return inv_smooth ? v * inv_smooth[col] : v;
}

// Largest |x·inv_smooth| of each row: `amax[row]`. One block per row.
extern "C" __global__ void row_absmax(const void* x, int dtx, const float* inv_smooth, float* amax, i64 k) {
    __shared__ float scratch[32];
    i64 row = blockIdx.x;
    float m = 0.0f;
    for (i64 i = threadIdx.x; i < k; i += blockDim.x) m = fmaxf(m, fabsf(smoothed(x, dtx, row * k + i, inv_smooth, i)));
    m = block_max(m, scratch);
    if (threadIdx.x == 0) amax[row] = m;
}

// out[0] = max(v[0..n]) for non-negative v (`out` zeroed first): per-block maxima combined with
// an integer atomic max, which orders non-negative floats as their bit patterns.
extern "C" __global__ void tensor_absmax(const float* v, float* out, i64 n) {
    __shared__ float scratch[32];
    float m = 0.0f;
    FOR_EACH(i, n) m = fmaxf(m, v[i]);
    m = block_max(m, scratch);
    if (threadIdx.x == 0) atomicMax((u32*)out, __float_as_uint(m));
}

// codes[row, 0..k] (rows `kp` bytes apart; the GEMM's padding past k stays as allocated, zero)
// and scales[row] of x[m, k] (one block per row) in format `fmt`. The scale comes from
// `static_scale` when it is positive, else from `*tensor_amax` when given (per tensor), else from
// the row's own absmax (per token).
extern "C" __global__ void quantize_rows(const void* x, int dtx, const float* inv_smooth, int fmt,
                                         const float* tensor_amax, float static_scale, void* codes, float* scales,
                                         i64 k, i64 kp) {
    __shared__ float scratch[32];
    i64 row = blockIdx.x;
    float qmax = fmt == FMT_INT8 ? 127.0f : 448.0f;
    float scale, inv;
    if (static_scale > 0.0f) {
        scale = static_scale;
        inv = 1.0f / static_scale;
    } else {
        float amax;
        if (tensor_amax) {
            amax = *tensor_amax;
        } else {
            float m = 0.0f;
            for (i64 i = threadIdx.x; i < k; i += blockDim.x)
                m = fmaxf(m, fabsf(smoothed(x, dtx, row * k + i, inv_smooth, i)));
            amax = block_max(m, scratch);
        }
        scale = amax > 0.0f ? amax / qmax : 0.0f;
        inv = amax > 0.0f ? qmax / amax : 0.0f;
    }
    if (threadIdx.x == 0) scales[row] = scale;
    for (i64 i = threadIdx.x; i < k; i += blockDim.x) {
        float v = smoothed(x, dtx, row * k + i, inv_smooth, i);
        if (fmt == FMT_INT8) {
            ((signed char*)codes)[row * kp + i] = (signed char)rintf(fminf(fmaxf(v * inv, -127.0f), 127.0f));
        } else {
            ((unsigned char*)codes)[row * kp + i] = scale > 0.0f ? f32_to_e4m3(v / scale) : 0;
        }
    }
}

// y[r, c] = acc[r, c]·sx[r]·sw[c] (+ bias[c]), then activation `act` (−1: none), for y [m, n] and
// the GEMM's accumulator `acc` (rows `acc_rs` ≥ n values apart: the padded product; i32 when
// `acc_int`, else f32). Rounded multiplies and add (never contracted into an FMA): the CPU's
// `v·sx·sw + b` bit for bit.
extern "C" __global__ void dequantize_acc(const void* acc, int acc_int, i64 acc_rs, const float* sx, const float* sw,
                                          const float* bias, int act, void* y, int dty, i64 n, i64 total) {
    FOR_EACH(i, total) {
        i64 r = i / n, c = i % n, a = r * acc_rs + c;
        float v = acc_int ? (float)((const int*)acc)[a] : ((const float*)acc)[a];
        float t = __fmul_rn(__fmul_rn(v, sx[r]), sw[c]);
        if (bias) t = __fadd_rn(t, bias[c]);
        if (act >= 0) t = activate(act, t);
        st(y, dty, i, t);
    }
}
