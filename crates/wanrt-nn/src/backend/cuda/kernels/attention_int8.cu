// 8-bit attention in the manner of SageAttention, as ops::attention_quant computes it on the CPU:
// K smoothed by its mean over tokens per (batch, head) (softmax is invariant to the q·mean it
// removes from every score of a row), Q and K rounded to int8 with one scale per (token, head),
// Q·Kᵀ as exact i32 sums of int8 products (`__dp4a`: four per instruction), then the online
// softmax and P·V of attention.cu in f32. The CPU rounds P and V to 14 and 10 bits for its
// integer P·V; here they stay f32, so the two differ by that rounding only.
//
// Same structure as attention.cu's simple kernel (a warp owns ROWS query rows; tiles of 32 keys
// through shared memory; lane j scores key j), with the codes packed four to an int.

#define WARPS 4
#define ROWS 4
#define TILE 32

// mean[b, h, :] = Σ_t k[b, t, h, :] / lk for k [B, Lk, H, D]. grid (H, B), threads over D.
extern "C" __global__ void key_mean(const void* k, int dt, float* mean, int lk, int heads, int d) {
    int h = blockIdx.x, b = blockIdx.y;
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        float s = 0.0f;
        for (int t = 0; t < lk; ++t) s += ld(k, dt, (((i64)b * lk + t) * heads + h) * d + e);
        mean[((i64)b * heads + h) * d + e] = s / (float)lk;
    }
}

// For each row (token, head) of x [B, L, H, D] (minus mean[b, h, :] when given): scale =
// absmax/127 and codes = rint(clamp(v·127/absmax, ±127)), as the W8A8 activations. One warp per
// row, rows grid-strided over the launch's warps.
extern "C" __global__ void quantize_heads(const void* x, int dt, const float* mean, signed char* codes, float* scales,
                                          i64 rows, int l, int heads, int d) {
    const int lane = threadIdx.x & 31;
    const i64 warps = (i64)gridDim.x * (blockDim.x >> 5);
    for (i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows; row += warps) {
        const i64 b = row / ((i64)l * heads), h = row % heads;
        const float* mu = mean ? mean + (b * heads + h) * d : 0;
        float amax = 0.0f;
        for (int e = lane; e < d; e += 32) amax = fmaxf(amax, fabsf(ld(x, dt, row * d + e) - (mu ? mu[e] : 0.0f)));
        amax = warp_max(amax);
        float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        if (lane == 0) scales[row] = amax > 0.0f ? amax / 127.0f : 0.0f;
        for (int e = lane; e < d; e += 32) {
            float v = ld(x, dt, row * d + e) - (mu ? mu[e] : 0.0f);
            codes[row * d + e] = (signed char)rintf(fminf(fmaxf(v * inv, -127.0f), 127.0f));
        }
    }
}

// q/k codes [B, L, H, D] int8 with scales [B, L, H]; v [B, Lk, H, D] and out (dtype code `dt`).
// grid: (ceil(Lq / (WARPS·ROWS)), H, B), block: WARPS·32 threads (launch::attention).
template <int D>
__device__ void attention_int8_tile(const int* qc, const float* qsc, const int* kc, const float* ksc, const void* v,
                                    void* out, int dt, float scale, int lq, int lk, int heads) {
    constexpr int E = (D + 31) / 32, W = D / 4;  // W: ints of four codes per row
    __shared__ int ks[TILE][W + 1];              // +1: lane j reads row j, conflict-free
    __shared__ float kscale[TILE];
    __shared__ float vs[TILE][D];
    __shared__ int qs[WARPS * ROWS][W];
    __shared__ float qscale[WARPS * ROWS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int h = blockIdx.y, b = blockIdx.z;
    const int row0 = blockIdx.x * WARPS * ROWS;

    for (int i = threadIdx.x; i < WARPS * ROWS * W; i += blockDim.x) {
        int r = i / W, w = i % W, row = row0 + r;
        qs[r][w] = row < lq ? qc[(((i64)b * lq + row) * heads + h) * W + w] : 0;
    }
    for (int r = threadIdx.x; r < WARPS * ROWS; r += blockDim.x) {
        int row = row0 + r;
        qscale[r] = row < lq ? qsc[((i64)b * lq + row) * heads + h] * scale : 0.0f;
    }
    SoftmaxRows<ROWS, E> rows;

    for (int k0 = 0; k0 < lk; k0 += TILE) {
        __syncthreads();
        for (int i = threadIdx.x; i < TILE * W; i += blockDim.x) {
            int j = i / W, w = i % W, key = k0 + j;
            ks[j][w] = key < lk ? kc[(((i64)b * lk + key) * heads + h) * W + w] : 0;
        }
        for (int i = threadIdx.x; i < TILE * D; i += blockDim.x) {
            int j = i / D, e = i % D, key = k0 + j;
            vs[j][e] = key < lk ? ld(v, dt, (((i64)b * lk + key) * heads + h) * D + e) : 0.0f;
        }
        for (int j = threadIdx.x; j < TILE; j += blockDim.x) {
            int key = k0 + j;
            kscale[j] = key < lk ? ksc[((i64)b * lk + key) * heads + h] : 0.0f;
        }
        __syncthreads();
        const int key = k0 + lane;
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
            const int qr = warp * ROWS + r;
            int dot = 0;
#pragma unroll
            for (int w = 0; w < W; ++w) dot = __dp4a(qs[qr][w], ks[lane][w], dot);
            float s = key < lk ? (float)dot * qscale[qr] * kscale[lane] : NEG_INF;
            online_softmax_tile<D, E>(s, rows.m[r], rows.l[r], rows.acc[r], vs, lane);
        }
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        int row = row0 + warp * ROWS + r;
        i64 at = (((i64)b * lq + row) * heads + h) * D;
        if (row < lq) store_softmax_row<D, E>(out, dt, at, rows.acc[r], rows.l[r], lane);
    }
}

// One entry point per head dim, as attention.cu (`, 1`: one resident block, no spills on sm_80).
#define ATTENTION_INT8_ENTRY(D)                                                                                \
    extern "C" __global__ void __launch_bounds__(WARPS * 32, 1)                                               \
        attention_int8_d##D(const int* qc, const float* qsc, const int* kc, const float* ksc, const void* v,  \
                            void* out, int dt, float scale, int lq, int lk, int heads) {                      \
        attention_int8_tile<D>(qc, qsc, kc, ksc, v, out, dt, scale, lq, lk, heads);                           \
    }
ATTENTION_INT8_ENTRY(16)
ATTENTION_INT8_ENTRY(32)
ATTENTION_INT8_ENTRY(64)
ATTENTION_INT8_ENTRY(128)
