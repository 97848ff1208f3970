// Shared by every kernel family of the CUDA backend: element loads/stores by a dtype code, and the
// reductions the row kernels use. Prepended to each family's source by the Rust side (no #include:
// NVRTC then needs no header search path, on any toolkit version).
//
// bf16 and f16 are handled as raw 16-bit patterns converted with integer ops / PTX `cvt`, not
// through <cuda_bf16.h>: that header's location differs between NVRTC versions (13.5 bundles it,
// 13.0 needs the runtime wheel's include dir), and these kernels only need the conversions.
//
// Dtype codes (must match `DTypeCode` in cuda/launch.rs): 0 f32, 1 bf16, 2 f16, 3 u32.

typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

#define DT_F32 0
#define DT_BF16 1
#define DT_F16 2
#define DT_U32 3

// −∞ without <math_constants.h> / <cmath> (no headers, see above).
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float bf16_to_f32(u16 b) { return __uint_as_float(((u32)b) << 16); }

// Round to nearest even, NaN kept quiet (the same rule as half::bf16::from_f32 on the CPU side).
__device__ __forceinline__ u16 f32_to_bf16(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}

#ifndef WANRT_HOST_EMULATION
__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f32_to_f16(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#else
// The host emulation of tests/cuda_emulation.rs: the same conversions through the C++ compiler's
// IEEE half type (round to nearest even, as PTX's cvt.rn).
__device__ __forceinline__ float f16_to_f32(u16 h) {
    _Float16 v;
    __builtin_memcpy(&v, &h, 2);
    return (float)v;
}

__device__ __forceinline__ u16 f32_to_f16(float f) {
    _Float16 v = (_Float16)f;
    u16 h;
    __builtin_memcpy(&h, &v, 2);
    return h;
}
#endif

// A load/store by dtype code. The code is the same for every thread of a launch, so the switch is
// a uniform branch: these memory-bound kernels take one entry point per op instead of one per
// combination of input dtypes (latents f32, activations bf16, weights f32 meet in one op).
__device__ __forceinline__ float ld(const void* p, int dt, i64 i) {
    switch (dt) {
        case DT_BF16: return bf16_to_f32(((const u16*)p)[i]);
        case DT_F16: return f16_to_f32(((const u16*)p)[i]);
        case DT_U32: return (float)((const u32*)p)[i];
        default: return ((const float*)p)[i];
    }
}

__device__ __forceinline__ void st(void* p, int dt, i64 i, float v) {
    switch (dt) {
        case DT_BF16: ((u16*)p)[i] = f32_to_bf16(v); break;
        case DT_F16: ((u16*)p)[i] = f32_to_f16(v); break;
        default: ((float*)p)[i] = v; break;
    }
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum (or, with kMax, max) over a block of `blockDim.x` threads (a multiple of 32, at most 1024);
// every thread gets the result. `scratch` holds 32 floats of shared memory.
template <bool kMax>
__device__ __forceinline__ float block_reduce(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = kMax ? warp_max(v) : warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : (kMax ? NEG_INF : 0.0f);
    return kMax ? warp_max(v) : warp_sum(v);
}

__device__ __forceinline__ float block_sum(float v, float* scratch) { return block_reduce<false>(v, scratch); }
__device__ __forceinline__ float block_max(float v, float* scratch) { return block_reduce<true>(v, scratch); }

// A warp's online-softmax state for R query rows: running max, sum and E accumulated head dims
// per lane, each row starting empty.
template <int R, int E>
struct SoftmaxRows {
    float m[R], l[R], acc[R][E];
    __device__ __forceinline__ SoftmaxRows() {
#pragma unroll
        for (int r = 0; r < R; ++r) {
            m[r] = NEG_INF;
            l[r] = 0.0f;
#pragma unroll
            for (int e = 0; e < E; ++e) acc[r][e] = 0.0f;
        }
    }
};

// One key tile of a warp's online softmax (FlashAttention) for one query row: lane j holds the
// score `s` of the tile's key j (−∞ when masked); the row's running max `m`, sum `l` and the
// lane's E accumulated head dims (lanes ≥ D own none when D < 32) take in the tile's values
// vs[32][D], each p_j broadcast by shuffle.
template <int D, int E>
__device__ __forceinline__ void online_softmax_tile(float s, float& m, float& l, float (&acc)[E],
                                                    const float (*vs)[D], int lane) {
    float m_new = fmaxf(m, warp_max(s));
    // Every key so far masked: nothing to add (avoids exp(−∞ − (−∞)) = NaN).
    float p = m_new == NEG_INF ? 0.0f : expf(s - m_new);
    float alpha = m_new == NEG_INF ? 1.0f : expf(m - m_new);
    l = l * alpha + warp_sum(p);
    m = m_new;
#pragma unroll
    for (int e = 0; e < E; ++e) acc[e] *= alpha;
#pragma unroll 4
    for (int j = 0; j < 32; ++j) {
        float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
        for (int e = 0; e < E; ++e)
            if (D >= 32 || lane < D) acc[e] += pj * vs[j][(lane + 32 * e) % D];
    }
}

// A finished row: out[base + lane + 32e] = acc[e] / l. A row with no valid key divides 0 by 0
// (NaN), as the reference's softmax over all −∞.
template <int D, int E>
__device__ __forceinline__ void store_softmax_row(void* out, int dt, i64 base, const float (&acc)[E], float l,
                                                  int lane) {
    float inv = 1.0f / l;
#pragma unroll
    for (int e = 0; e < E; ++e)
        if (D >= 32 || lane < D) st(out, dt, base + lane + 32 * e, acc[e] * inv);
}

// Pointwise nonlinearities, the same formulas as ops::activation (f32 arithmetic). `act`:
// 0 gelu-tanh, 1 gelu-erf, 2 quick-gelu, 3 silu, 4 relu (`Activation` order in backend/mod.rs).
__device__ __forceinline__ float activate(int act, float x) {
    switch (act) {
        case 0: return x / (1.0f + __expf(-2.0f * 0.7978845608f * (x + 0.044715f * x * x * x)));
        case 1: return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
        case 2: return x / (1.0f + __expf(-1.702f * x));
        case 3: return x / (1.0f + __expf(-x));
        default: return fmaxf(x, 0.0f);
    }
}

// Grid-stride loop over `n` elements (launch configurations come from `launch::elementwise`).
#define FOR_EACH(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

// Up to 8 dims of a broadcast/strided index, passed by value (a kernel argument struct; shapes of
// higher rank are rejected on the host).
#define MAX_DIMS 8
struct Dims {
    i64 size[MAX_DIMS];
    i64 stride_a[MAX_DIMS];
    i64 stride_b[MAX_DIMS];
    int rank;
};
