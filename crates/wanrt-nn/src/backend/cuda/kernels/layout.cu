// Layout copies by element size (2 or 4 bytes: dtype-agnostic, u32 ids included). narrow and cat
// are one "copy a [outer, len·inner] block into [outer, total·inner] at an offset" kernel; permute
// gathers through the input's strides; upsample is the 2× nearest-neighbour spatial copy.

// dst[o, dst_off + j] = src[o, src_off + j] for o < outer, j < len (in units of elements, rows of
// `src_row` / `dst_row` elements).
extern "C" __global__ void copy_block(const void* src, i64 src_row, i64 src_off, void* dst, i64 dst_row,
                                      i64 dst_off, i64 len, i64 outer, int elem) {
    i64 n = outer * len;
    FOR_EACH(i, n) {
        i64 o = i / len, j = i % len;
        i64 s = o * src_row + src_off + j, t = o * dst_row + dst_off + j;
        if (elem == 2)
            ((u16*)dst)[t] = ((const u16*)src)[s];
        else
            ((u32*)dst)[t] = ((const u32*)src)[s];
    }
}

// out (contiguous, dims d.size) at i ← x at Σ idx_k·d.stride_a[k] (x's strides permuted).
extern "C" __global__ void permute(const void* x, void* out, int elem, i64 n, Dims d) {
    FOR_EACH(i, n) {
        i64 rest = i, s = 0;
        for (int k = d.rank - 1; k >= 0; --k) {
            s += (rest % d.size[k]) * d.stride_a[k];
            rest /= d.size[k];
        }
        if (elem == 2)
            ((u16*)out)[i] = ((const u16*)x)[s];
        else
            ((u32*)out)[i] = ((const u32*)x)[s];
    }
}

// [NC, H, W] → [NC, 2H, 2W].
extern "C" __global__ void upsample_nearest2x(const void* x, void* out, int elem, i64 h, i64 w, i64 n) {
    FOR_EACH(i, n) {
        i64 ow = 2 * w, oh = 2 * h;
        i64 xw = (i % ow) / 2, xh = ((i / ow) % oh) / 2, nc = i / (ow * oh);
        i64 s = (nc * h + xh) * w + xw;
        if (elem == 2)
            ((u16*)out)[i] = ((const u16*)x)[s];
        else
            ((u32*)out)[i] = ((const u32*)x)[s];
    }
}

// Rows `ids` of a table [V, D] → out [n_ids, D]. Ids are checked against V on the host
// (they were uploaded from host memory, where the check is free).
extern "C" __global__ void embedding(const void* table, int dtt, const u32* ids, void* out, int dto, i64 d,
                                     i64 n) {
    FOR_EACH(i, n) st(out, dto, i, ld(table, dtt, (i64)ids[i / d] * d + i % d));
}

// im2col for conv3d as GEMM: x [C, T, H, W] (one batch item, history already concatenated) →
// cols [P, C·kt·kh·kw] with P = T'·H'·W' output positions, zero outside the padded input.
struct Conv {
    i64 c, t, h, w;           // input
    i64 kt, kh, kw;           // kernel
    i64 st, sh, sw;           // stride
    i64 pt, ph, pw;           // front padding (back padding is implied by the output size)
    i64 ot, oh, ow;           // output
};
extern "C" __global__ void im2col3d(const void* x, int dtx, void* cols, int dtc, Conv p, i64 pos0, i64 n) {
    // Rows pos0.. of the full [P, K] matrix: the host splits P so one chunk of columns stays small.
    FOR_EACH(i, n) {
        i64 k = p.c * p.kt * p.kh * p.kw;
        i64 col = i % k, pos = i / k + pos0;
        i64 kw_ = col % p.kw, kh_ = (col / p.kw) % p.kh, kt_ = (col / (p.kw * p.kh)) % p.kt;
        i64 ci = col / (p.kw * p.kh * p.kt);
        i64 ow_ = pos % p.ow, oh_ = (pos / p.ow) % p.oh, ot_ = pos / (p.ow * p.oh);
        i64 ti = ot_ * p.st + kt_ - p.pt, hi = oh_ * p.sh + kh_ - p.ph, wi = ow_ * p.sw + kw_ - p.pw;
        float v = 0.0f;
        if (ti >= 0 && ti < p.t && hi >= 0 && hi < p.h && wi >= 0 && wi < p.w)
            v = ld(x, dtx, ((ci * p.t + ti) * p.h + hi) * p.w + wi);
        st(cols, dtc, i, v);
    }
}

// A chunk's GEMM result [chunk, Cout] (+ bias) → positions pos0.. of out [Cout, P] (one batch item).
extern "C" __global__ void conv_out(const void* y, int dty, const float* bias, void* out, int dto, i64 p, i64 pos0,
                                    i64 chunk, i64 cout, i64 n) {
    FOR_EACH(i, n) {
        i64 pl = i % chunk, co = i / chunk;
        float v = ld(y, dty, pl * cout + co);
        if (bias) v += bias[co];
        st(out, dto, co * p + pos0 + pl, v);
    }
}
