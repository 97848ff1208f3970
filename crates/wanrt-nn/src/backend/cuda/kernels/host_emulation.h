// Host emulation of the CUDA built-ins the kernels use, so their sources compile as C++ and run
// on the CPU (tests/cuda_emulation.rs). Grid-stride kernels run each (block, thread) in turn.
// Kernels whose threads cooperate run one block at a time with one fiber (ucontext) per CUDA
// thread on one OS thread: at every synchronization point (__syncthreads, and each warp shuffle,
// which writes its value, yields, reads its partner's, yields) a fiber yields to the next, so all
// threads of the block reach the point before any goes on. This treats a warp shuffle as a
// block-wide step: right for these kernels, where every warp runs the same shuffles in the same
// order (no warp-divergent shuffles). Blocks never overlap, so `__shared__` arrays can be
// function statics. Exact and slow-ish: a check of the kernels' logic, not of a GPU's math.
#include <ucontext.h>
#include <atomic>
#include <vector>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#define WANRT_HOST_EMULATION 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __restrict__

struct uint3_ { unsigned x, y, z; };
static thread_local uint3_ blockIdx, threadIdx, blockDim, gridDim;

// The calling OS thread becomes thread `thread` of block (bx, by, bz) of a launch (grid-stride
// kernels, run thread after thread).
extern "C" void wanrt_emulation_set(unsigned bx, unsigned by, unsigned bz, unsigned thread, unsigned block_dim,
                                    unsigned gx, unsigned gy, unsigned gz) {
    blockIdx = {bx, by, bz};
    threadIdx = {thread, 0, 0};
    blockDim = {block_dim, 1, 1};
    gridDim = {gx, gy, gz};
}

static inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
#define __expf(x) std::exp((float)(x))  // glibc declares its own __expf
static inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
using std::isfinite;

// One block's fibers and the scheduler that resumes them in turn.
struct Fibers {
    ucontext_t scheduler;
    std::vector<ucontext_t> fiber;
    std::vector<std::vector<char>> stack;
    std::vector<bool> done;
    unsigned current = 0;
    void (*body)(const void*, unsigned) = nullptr;
    const void* ctx = nullptr;
    float exchange[1024];
    int flags[1024];
};
static thread_local Fibers* fibers = nullptr;

static void fiber_main() {
    Fibers* f = fibers;
    unsigned t = f->current;
    f->body(f->ctx, t);
    f->done[t] = true;
}

// A synchronization point: back to the scheduler, which runs every other fiber to this point.
static inline void yield_to_block() {
    Fibers* f = fibers;
    swapcontext(&f->fiber[f->current], &f->scheduler);
}

// Runs block (bx, by, bz) of a `threads`-thread launch: `body(ctx, t)` is CUDA thread t.
extern "C" void wanrt_emulation_run_block(unsigned bx, unsigned by, unsigned bz, unsigned gx, unsigned gy, unsigned gz,
                                          unsigned threads, void (*body)(const void*, unsigned), const void* ctx) {
    Fibers f;
    f.fiber.resize(threads);
    f.stack.assign(threads, std::vector<char>(256 * 1024));
    f.done.assign(threads, false);
    f.body = body;
    f.ctx = ctx;
    fibers = &f;
    blockIdx = {bx, by, bz};
    blockDim = {threads, 1, 1};
    gridDim = {gx, gy, gz};
    for (unsigned t = 0; t < threads; ++t) {
        getcontext(&f.fiber[t]);
        f.fiber[t].uc_stack.ss_sp = f.stack[t].data();
        f.fiber[t].uc_stack.ss_size = f.stack[t].size();
        f.fiber[t].uc_link = &f.scheduler;
        makecontext(&f.fiber[t], fiber_main, 0);
    }
    for (bool any = true; any;) {
        any = false;
        for (unsigned t = 0; t < threads; ++t) {
            if (f.done[t]) continue;
            f.current = t;
            threadIdx = {t, 0, 0};
            swapcontext(&f.scheduler, &f.fiber[t]);
            any = true;
        }
    }
    fibers = nullptr;
}

static inline void __syncthreads() { yield_to_block(); }

static inline float shuffle_from(float v, unsigned src_lane) {
    unsigned t = threadIdx.x;
    fibers->exchange[t] = v;
    yield_to_block();
    float r = fibers->exchange[(t & ~31u) + (src_lane & 31u)];
    yield_to_block();  // nobody overwrites a slot before every lane read it
    return r;
}
static inline float __shfl_xor_sync(unsigned, float v, int o) { return shuffle_from(v, (threadIdx.x & 31) ^ o); }
static inline float __shfl_sync(unsigned, float v, int src) { return shuffle_from(v, src); }

static inline int __syncthreads_or(int p) {
    fibers->flags[threadIdx.x] = p != 0;
    yield_to_block();
    int any = 0;
    for (unsigned t = 0; t < blockDim.x; ++t) any |= fibers->flags[t];
    yield_to_block();
    return any;
}

static inline double atomicAdd(double* p, double v) { return std::atomic_ref<double>(*p).fetch_add(v); }
static inline unsigned atomicOr(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_or(v); }
static inline unsigned atomicMax(unsigned* p, unsigned v) {
    std::atomic_ref<unsigned> a(*p);
    unsigned old = a.load();
    while (old < v && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}
// Rounded f32 operations the kernels keep apart from FMA contraction (the host compiler in ISO
// C++ mode does not contract either).
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
// Four signed byte products of a and b added to c.
static inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; ++i) c += (int)(signed char)(a >> (8 * i)) * (int)(signed char)(b >> (8 * i));
    return c;
}
static inline int min(int a, int b) { return a < b ? a : b; }
