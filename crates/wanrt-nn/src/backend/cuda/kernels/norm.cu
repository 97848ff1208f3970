// Norms over the last dim (one block per row: rms_norm, layer_norm, layer_norm + modulation) and
// the VAE's channel RMS norm over dim 1 (one thread per position). Statistics in f32 with tree
// reductions (the CPU reference sums in f64; for rows of ≤ 5120 values the difference stays near
// f32 rounding). Two passes over the row: mean, then the centred variance, as PyTorch computes it.

// weight/bias: f32 [C] or null. One block of `blockDim.x` threads per row.
extern "C" __global__ void rms_norm(const void* x, int dtx, void* out, int dto, const float* weight, float eps,
                                    i64 c) {
    __shared__ float scratch[32];
    i64 row = blockIdx.x;
    float ss = 0.0f;
    for (i64 i = threadIdx.x; i < c; i += blockDim.x) {
        float v = ld(x, dtx, row * c + i);
        ss += v * v;
    }
    float inv = rsqrtf(block_sum(ss, scratch) / (float)c + eps);
    for (i64 i = threadIdx.x; i < c; i += blockDim.x) {
        float v = ld(x, dtx, row * c + i) * inv;
        st(out, dto, row * c + i, weight ? v * weight[i] : v);
    }
}

// layer_norm with optional affine weight/bias; with `scale`/`shift` ([B, C] in dtype dtm, rows of
// batch item row / l), the modulated form `norm(x)·(1 + scale) + shift` of Wan's blocks.
extern "C" __global__ void layer_norm(const void* x, int dtx, void* out, int dto, const float* weight,
                                      const float* bias, const void* scale, const void* shift, int dtm, i64 l,
                                      float eps, i64 c) {
    __shared__ float scratch[32];
    i64 row = blockIdx.x;
    float s = 0.0f;
    for (i64 i = threadIdx.x; i < c; i += blockDim.x) s += ld(x, dtx, row * c + i);
    float mean = block_sum(s, scratch) / (float)c;
    float var = 0.0f;
    for (i64 i = threadIdx.x; i < c; i += blockDim.x) {
        float d = ld(x, dtx, row * c + i) - mean;
        var += d * d;
    }
    float inv = rsqrtf(block_sum(var, scratch) / (float)c + eps);
    i64 b = row / l;
    for (i64 i = threadIdx.x; i < c; i += blockDim.x) {
        float y = (ld(x, dtx, row * c + i) - mean) * inv;
        if (weight) y *= weight[i];
        if (bias) y += bias[i];
        if (scale) y = y * (1.0f + ld(scale, dtm, b * c + i)) + ld(shift, dtm, b * c + i);
        st(out, dto, row * c + i, y);
    }
}

// x: [B, C, S] → x / max(‖x[b, :, s]‖, 1e-12) · √C · gamma[c], then SiLU when `silu`.
extern "C" __global__ void channel_rms_norm(const void* x, int dtx, void* out, int dto, const float* gamma, int silu,
                                            i64 c, i64 s, i64 n) {
    FOR_EACH(i, n) {  // n = B·S positions
        i64 b = i / s, p = i % s, base = b * c * s + p;
        float ss = 0.0f;
        for (i64 ch = 0; ch < c; ++ch) {
            float v = ld(x, dtx, base + ch * s);
            ss += v * v;
        }
        float inv = 1.0f / fmaxf(sqrtf(ss), 1e-12f), root_c = sqrtf((float)c);
        for (i64 ch = 0; ch < c; ++ch) {
            float y = ld(x, dtx, base + ch * s) * inv * root_c * gamma[ch];
            if (silu) y = y / (1.0f + expf(-y));
            st(out, dto, base + ch * s, y);
        }
    }
}
