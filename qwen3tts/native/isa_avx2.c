/* The kernels for avx2 (see common.h): this translation unit is compiled for "avx2,fma,f16c,bmi,bmi2"; its code
 * runs only where the CPU has them (dispatch.c). */
#define Q_ISA Q_AVX2
#define Q_SFX avx2
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,bmi,bmi2"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,f16c,bmi,bmi2")
#endif
#include "q4.c"
#include "decode.c"
#include "codec.c"
#include "rows.c"
#if defined(__clang__)
#pragma clang attribute pop
#endif
