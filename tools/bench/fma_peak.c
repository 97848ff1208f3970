/* The core's f32 FMA peak: 12 independent 256-bit FMA chains on one thread (bench/results/gemm-kernels-zen3.log).
   gcc -O2 -mavx2 -mfma -o fma_peak tools/bench/fma_peak.c && ./fma_peak */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
int main(){
  __m256 a[12]; for(int i=0;i<12;i++) a[i]=_mm256_set1_ps(i*0.001f);
  __m256 x=_mm256_set1_ps(0.9999f), y=_mm256_set1_ps(0.00001f);
  long iters=400000000;
  struct timespec t0,t1; clock_gettime(CLOCK_MONOTONIC,&t0);
  for(long i=0;i<iters;i++){
    #pragma GCC unroll 12
    for(int j=0;j<12;j++) a[j]=_mm256_fmadd_ps(a[j],x,y);
  }
  clock_gettime(CLOCK_MONOTONIC,&t1);
  double s=(t1.tv_sec-t0.tv_sec)+(t1.tv_nsec-t0.tv_nsec)*1e-9;
  float acc=0; for(int j=0;j<12;j++){float t[8]; _mm256_storeu_ps(t,a[j]); acc+=t[0];}
  printf("%.1f GFLOP/s single core (%.3f s) %f\n", iters*12.0*16/s/1e9, s, acc);
}
