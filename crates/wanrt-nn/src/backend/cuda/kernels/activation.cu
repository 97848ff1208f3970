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

extern "C" __global__ void activation(const void* x, int dtx, void* out, int dto, int act, i64 n) {
    FOR_EACH(i, n) st(out, dto, i, activate(act, ld(x, dtx, i)));
}
