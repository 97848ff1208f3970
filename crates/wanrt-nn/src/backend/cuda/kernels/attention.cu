// softmax(q·kᵀ·scale + bias)·v — flash attention with an online softmax and f32 accumulation.
//
// This is the correct, simple tiled version (CUDA cores, no tensor cores): a warp owns ROWS query
// rows; keys come in tiles of 32 through shared memory, lane j scoring key j of the tile, so the
// tile's max and sum are one warp reduction each and P·V broadcasts p_j by shuffle to the lanes
// that own the head dims (D/32 each). The tensor-core version (mma.sync / wgmma) replaces it;
// this one stays as the reference the fast one is validated against on the device.
//
// Head dims 16, 32, 64, 128 (D < 32: lanes ≥ D idle in P·V).
// q: [B, Lq, H, D], k/v: [B, Lk, H, D], out: [B, Lq, H, D] (any float dtype, by code);
// bias: [H, Lq, Lk] or null; key_len: valid keys per batch item (B ≤ 16, by value).
// grid: (ceil(Lq / (WARPS·ROWS)), H, B), block: WARPS·32 threads (launch::attention).

#define WARPS 4
#define ROWS 4
#define TILE 32

struct KeyLengths {
    int n[16];
};

template <int D>
__device__ void attention_tile(const void* q, const void* k, const void* v, void* out, int dt, const void* bias,
                               int dtb, KeyLengths key_len, float scale, int lq, int lk, int heads) {
    constexpr int E = (D + 31) / 32;  // head dims per lane (lanes ≥ D own none when D < 32)
    __shared__ float ks[TILE][D + 1];  // +1: lane j reads row j, conflict-free
    __shared__ float vs[TILE][D];
    __shared__ float qs[WARPS * ROWS][D];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int h = blockIdx.y, b = blockIdx.z;
    const int row0 = blockIdx.x * WARPS * ROWS;
    const int valid_keys = min(lk, key_len.n[b]);
    const i64 stride = (i64)heads * D;  // between tokens

    for (int i = threadIdx.x; i < WARPS * ROWS * D; i += blockDim.x) {
        int r = i / D, e = i % D, row = row0 + r;
        qs[r][e] = row < lq ? ld(q, dt, ((i64)b * lq + row) * stride + (i64)h * D + e) : 0.0f;
    }
    SoftmaxRows<ROWS, E> rows;

    for (int k0 = 0; k0 < lk; k0 += TILE) {
        __syncthreads();
        for (int i = threadIdx.x; i < TILE * D; i += blockDim.x) {
            int j = i / D, e = i % D, key = k0 + j;
            i64 at = ((i64)b * lk + key) * stride + (i64)h * D + e;
            ks[j][e] = key < lk ? ld(k, dt, at) : 0.0f;
            vs[j][e] = key < lk ? ld(v, dt, at) : 0.0f;
        }
        __syncthreads();
        const int key = k0 + lane;
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
            const int qr = warp * ROWS + r, row = row0 + qr;
            float s = 0.0f;
#pragma unroll 8
            for (int e = 0; e < D; ++e) s += qs[qr][e] * ks[lane][e];
            s *= scale;
            if (bias && row < lq && key < lk) s += ld(bias, dtb, ((i64)h * lq + row) * lk + key);
            if (key >= valid_keys) s = NEG_INF;
            online_softmax_tile<D, E>(s, rows.m[r], rows.l[r], rows.acc[r], vs, lane);
        }
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        int row = row0 + warp * ROWS + r;
        i64 at = ((i64)b * lq + row) * stride + (i64)h * D;
        if (row < lq) store_softmax_row<D, E>(out, dt, at, rows.acc[r], rows.l[r], lane);
    }
}

// One entry point per head dim: Wan's 128 (1.3B, 14B), T5-XXL's 64, the tiny test models' 32 / 16.
// `, 1` (one resident block is enough): without it ptxas spilled attention_d32 on sm_80
// (tests/cuda_kernels.rs caught it).
#define ATTENTION_ENTRY(D)                                                                                   \
    extern "C" __global__ void __launch_bounds__(WARPS * 32, 1)                                             \
        attention_d##D(const void* q, const void* k, const void* v, void* out, int dt, const void* bias,    \
                       int dtb, KeyLengths key_len, float scale, int lq, int lk, int heads) {               \
        attention_tile<D>(q, k, v, out, dt, bias, dtb, key_len, scale, lq, lk, heads);                      \
    }
ATTENTION_ENTRY(16)
ATTENTION_ENTRY(32)
ATTENTION_ENTRY(64)
ATTENTION_ENTRY(128)
