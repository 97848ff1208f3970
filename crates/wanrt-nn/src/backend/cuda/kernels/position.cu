// Position encodings: rotary embedding on interleaved pairs (in place) and diffusers' sinusoidal
// timestep features. The RoPE tables themselves are computed once per grid on the host in f64
// (as the reference does) and uploaded; T5's relative-position bias is a gather of its table by
// bucket indices computed on the host.

// x: [B, L, H, D] in place; cos/sin: f32 [L, D/2]. One thread per pair.
extern "C" __global__ void rope_interleaved(void* x, int dt, const float* cos_t, const float* sin_t, i64 l, i64 h,
                                            i64 d, i64 n) {
    FOR_EACH(i, n) {  // n = B·L·H·D/2 pairs
        i64 half = d / 2, pair = i % half, pos = (i / (half * h)) % l;
        i64 at = 2 * i;  // pairs are contiguous: element index of the pair's first value
        float x1 = ld(x, dt, at), x2 = ld(x, dt, at + 1);
        float c = cos_t[pos * half + pair], s = sin_t[pos * half + pair];
        st(x, dt, at, x1 * c - x2 * s);
        st(x, dt, at + 1, x1 * s + x2 * c);
    }
}

// out: [B, dim]; freq_i = exp(−ln(10000)·i / (half − shift)); [sin, cos] (or [cos, sin] flipped),
// zero padding for odd dims. Timesteps by value (B ≤ 16 per launch).
struct Steps {
    float t[16];
};
extern "C" __global__ void timestep_embedding(Steps steps, void* out, int dto, i64 dim, int flip, float shift,
                                              i64 n) {
    FOR_EACH(i, n) {
        i64 b = i / dim, j = i % dim, half = dim / 2;
        float v = 0.0f;
        if (j < 2 * half) {
            i64 f = j % half;
            float freq = expf(-9.210340371976184f * (float)f / ((float)half - shift));
            float a = steps.t[b] * freq;
            int first = j < half;
            v = (first != flip) ? sinf(a) : cosf(a);
        }
        st(out, dto, i, v);
    }
}

// bias[h, q, k] = table[bucket[q·L + k], h]; table f32 [buckets, H].
extern "C" __global__ void relative_position_bias(const float* table, const u32* buckets, void* out, int dto, i64 heads,
                                                  i64 ll, i64 n) {
    FOR_EACH(i, n) {
        i64 h = i / ll, qk = i % ll;
        st(out, dto, i, table[(i64)buckets[qk] * heads + h]);
    }
}
