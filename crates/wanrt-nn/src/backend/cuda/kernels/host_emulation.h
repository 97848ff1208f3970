// Host emulation of the CUDA built-ins the grid-stride kernels use, so their sources compile as
// C++ and run on the CPU (tests/cuda_emulation.rs): each (block, thread) of a launch runs in turn.
// Kernels that need a warp or block to cooperate (shuffles, shared-memory reductions: the row
// norms, reductions, attention) compile against stubs that abort and are checked only on a GPU.
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
#define __launch_bounds__(n)
#define __restrict__

struct uint3_ { unsigned x, y, z; };
static thread_local uint3_ blockIdx, threadIdx, blockDim, gridDim;

extern "C" void wanrt_emulation_set(unsigned block, unsigned thread, unsigned block_dim, unsigned grid_dim) {
    blockIdx = {block, 0, 0};
    threadIdx = {thread, 0, 0};
    blockDim = {block_dim, 1, 1};
    gridDim = {grid_dim, 1, 1};
}

static inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
#define __expf(x) std::exp((float)(x))  // glibc declares its own __expf
static inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
using std::isfinite;

[[noreturn]] static void wanrt_needs_a_gpu(const char* what) {
    std::fprintf(stderr, "%s has no host emulation: this kernel is checked on a GPU only\n", what);
    std::abort();
}
static inline float __shfl_xor_sync(unsigned, float, int) { wanrt_needs_a_gpu("__shfl_xor_sync"); }
static inline float __shfl_sync(unsigned, float, int) { wanrt_needs_a_gpu("__shfl_sync"); }
static inline void __syncthreads() { wanrt_needs_a_gpu("__syncthreads"); }
static inline int __syncthreads_or(int) { wanrt_needs_a_gpu("__syncthreads_or"); }
static inline double atomicAdd(double*, double) { wanrt_needs_a_gpu("atomicAdd"); }
static inline unsigned atomicOr(unsigned*, unsigned) { wanrt_needs_a_gpu("atomicOr"); }
static inline int min(int a, int b) { return a < b ? a : b; }
