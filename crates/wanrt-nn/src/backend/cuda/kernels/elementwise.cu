// Elementwise arithmetic: broadcast binary ops, host-scalar ops, dtype conversion, in-place adds,
// the schedulers' linear combination and CFG, the VAE's output clamp, padded-row masking and the
// gated residual. f32 arithmetic on every element, whatever the storage dtype.

__device__ __forceinline__ float apply_op(int op, float a, float b) {
    switch (op) {  // BinaryOp: 0 add, 1 sub, 2 mul, 3 div
        case 1: return a - b;
        case 2: return a * b;
        case 3: return a / b;
        default: return a + b;
    }
}

// out[i] = a[ia] op b[ib], with ia/ib from broadcast strides (0 on broadcast dims).
extern "C" __global__ void binary_broadcast(const void* a, int dta, const void* b, int dtb, void* out, int dto,
                                            int op, i64 n, Dims d) {
    FOR_EACH(i, n) {
        i64 rest = i, ia = 0, ib = 0;
        for (int k = d.rank - 1; k >= 0; --k) {
            i64 idx = rest % d.size[k];
            rest /= d.size[k];
            ia += idx * d.stride_a[k];
            ib += idx * d.stride_b[k];
        }
        st(out, dto, i, apply_op(op, ld(a, dta, ia), ld(b, dtb, ib)));
    }
}

// Same shapes: the common case, without index arithmetic.
extern "C" __global__ void binary_same(const void* a, int dta, const void* b, int dtb, void* out, int dto, int op,
                                       i64 n) {
    FOR_EACH(i, n) st(out, dto, i, apply_op(op, ld(a, dta, i), ld(b, dtb, i)));
}

extern "C" __global__ void scalar_op(const void* x, void* out, int dt, int op, float s, i64 n) {
    FOR_EACH(i, n) st(out, dt, i, apply_op(op, ld(x, dt, i), s));
}

extern "C" __global__ void convert(const void* x, int dtx, void* out, int dto, i64 n) {
    FOR_EACH(i, n) st(out, dto, i, ld(x, dtx, i));
}

// x += y (x in place).
extern "C" __global__ void add_assign(void* x, int dtx, const void* y, int dty, i64 n) {
    FOR_EACH(i, n) st(x, dtx, i, ld(x, dtx, i) + ld(y, dty, i));
}

// out (f32) = Σ c_k·t_k, accumulated left to right like the CPU reference; up to 8 terms per
// launch (the host chains launches for more, reading `out` back as the first term).
struct Terms {
    const void* ptr[8];
    int dt[8];
    float coef[8];
    int count;
};
extern "C" __global__ void lincomb(Terms t, float* out, i64 n) {
    FOR_EACH(i, n) {
        float acc = t.coef[0] * ld(t.ptr[0], t.dt[0], i);
        for (int k = 1; k < t.count; ++k) acc += t.coef[k] * ld(t.ptr[k], t.dt[k], i);
        out[i] = acc;
    }
}

// pair: [2, half] = [cond; uncond] → out[i] = u + g·(c − u).
extern "C" __global__ void cfg_combine(const void* pair, int dtp, void* out, int dto, float g, i64 half) {
    FOR_EACH(i, half) {
        float c = ld(pair, dtp, i), u = ld(pair, dtp, i + half);
        st(out, dto, i, u + g * (c - u));
    }
}

extern "C" __global__ void affine_clamp(void* x, int dt, float mul, float add, float lo, float hi, i64 n) {
    FOR_EACH(i, n) st(x, dt, i, fminf(fmaxf(ld(x, dt, i) * mul + add, lo), hi));
}

// x: [B, L, row]; rows at positions >= lengths[b] become 0. `lengths` by value: B <= 16.
struct Lengths {
    int n[16];
};
extern "C" __global__ void mask_rows(void* x, int dt, Lengths lengths, i64 l, i64 row, i64 n) {
    FOR_EACH(i, n) {
        i64 pos = (i / row) % l, b = i / (row * l);
        if (pos >= lengths.n[b]) st(x, dt, i, 0.0f);
    }
}

// x += y·gate for x, y: [B, L, C], gate: [B, 1, C].
extern "C" __global__ void add_gated(void* x, int dtx, const void* y, int dty, const void* gate, int dtg, i64 l,
                                     i64 c, i64 n) {
    FOR_EACH(i, n) {
        i64 ch = i % c, b = i / (l * c);
        st(x, dtx, i, ld(x, dtx, i) + ld(y, dty, i) * ld(gate, dtg, b * c + ch));
    }
}
