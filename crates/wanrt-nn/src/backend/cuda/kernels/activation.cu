// Pointwise nonlinearities (`activate` in common.cuh: the W8A8 epilogue applies them too).

extern "C" __global__ void activation(const void* x, int dtx, void* out, int dto, int act, i64 n) {
    FOR_EACH(i, n) st(out, dto, i, activate(act, ld(x, dtx, i)));
}
