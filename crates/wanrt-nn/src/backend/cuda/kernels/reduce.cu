// Reductions to one scalar: the step cache's relative L1 distance and the pipeline's finiteness
// check. Per-block f32 partial sums, combined in f64 with atomics (the CPU reference sums in f64).

extern "C" __global__ void relative_l1(const void* a, int dta, const void* b, int dtb, double* sums, i64 n) {
    __shared__ float scratch[32];
    float num = 0.0f, den = 0.0f;
    FOR_EACH(i, n) {
        float x = ld(a, dta, i), y = ld(b, dtb, i);
        num += fabsf(x - y);
        den += fabsf(y);
    }
    num = block_sum(num, scratch);
    den = block_sum(den, scratch);
    if (threadIdx.x == 0) {
        atomicAdd(&sums[0], (double)num);
        atomicAdd(&sums[1], (double)den);
    }
}

// flag[0] becomes 1 if any value is NaN or ±∞.
extern "C" __global__ void all_finite(const void* x, int dt, u32* flag, i64 n) {
    int bad = 0;
    FOR_EACH(i, n) bad |= !isfinite(ld(x, dt, i));
    if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(flag, 1u);
}
