/* One float vector type per instruction set (VL lanes), so that the kernels that do the same
 * operations in every lane are written once for AVX-512 (16 lanes) and AVX2 (8 lanes) and give
 * the same floats on both. Q_VEC is defined where there is one (included by decode.c, codec.c). */
#ifndef QWEN3TTS_VEC_H
#define QWEN3TTS_VEC_H
#include "common.h"

#if Q_ISA == Q_AVX512
#define Q_VEC 1
#define VL 16
typedef __m512 vf;
typedef __mmask16 vmask; /* lanes in use */
#define vzero _mm512_setzero_ps
#define vset1 _mm512_set1_ps
#define vloadu _mm512_loadu_ps
#define vstoreu _mm512_storeu_ps
#define vadd _mm512_add_ps
#define vsub _mm512_sub_ps
#define vmul _mm512_mul_ps
#define vdiv _mm512_div_ps
#define vmin _mm512_min_ps
#define vmax _mm512_max_ps
#define vfmadd _mm512_fmadd_ps
#define vfnmadd _mm512_fnmadd_ps
#define vabs _mm512_abs_ps
static inline vf vround(vf x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline int vgt_bits(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
static inline vf vscale2n(vf y, vf n) { return _mm512_scalef_ps(y, n); } /* y * 2^n, n integral */
static inline vf vodd_flip(vf k, vf s) { /* 1 - s where the integral k is odd, else s */
    return _mm512_mask_sub_ps(s, _mm512_test_epi32_mask(_mm512_cvtps_epi32(k), _mm512_set1_epi32(1)), _mm512_set1_ps(1.0f), s);
}
static inline vmask vlanes(int r) { return r >= 16 ? (vmask)0xFFFF : r <= 0 ? (vmask)0 : (vmask)((1u << r) - 1); }
static inline vf vmaskload(const float *p, vmask m) { return _mm512_maskz_loadu_ps(m, p); }
static inline void vmaskstore(float *p, vmask m, vf v) { _mm512_mask_storeu_ps(p, m, v); }
/* the sum of 16 floats (acc[0]) in GCC's _mm512_reduce_add_ps order; the maximum of acc */
static inline float vsum16(const vf *acc) { return _mm512_reduce_add_ps(acc[0]); }
static inline float vhmax(vf a) { return _mm512_reduce_max_ps(a); }

#elif Q_ISA == Q_AVX2
#define Q_VEC 1
#define VL 8
typedef __m256 vf;
typedef __m256i vmask;
#define vzero _mm256_setzero_ps
#define vset1 _mm256_set1_ps
#define vloadu _mm256_loadu_ps
#define vstoreu _mm256_storeu_ps
#define vadd _mm256_add_ps
#define vsub _mm256_sub_ps
#define vmul _mm256_mul_ps
#define vdiv _mm256_div_ps
#define vmin _mm256_min_ps
#define vmax _mm256_max_ps
#define vfmadd _mm256_fmadd_ps
#define vfnmadd _mm256_fnmadd_ps
static inline vf vabs(vf x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }
static inline vf vround(vf x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline int vgt_bits(vf a, vf b) { return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GT_OQ)); }
/* scalef's y * 2^n as two exact powers of two (n = n1 + n2, |n1|, |n2| <= 64 for |n| <= 128):
 * one rounding, as scalef */
static inline vf vscale2n(vf y, vf n) {
    const __m256i ni = _mm256_cvtps_epi32(n), n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i b = _mm256_set1_epi32(127);
    const __m256 p1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, b), 23));
    const __m256 p2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, b), 23));
    return _mm256_mul_ps(_mm256_mul_ps(y, p1), p2);
}
static inline vf vodd_flip(vf k, vf s) {
    const __m256i one = _mm256_set1_epi32(1);
    const __m256 odd = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(_mm256_cvtps_epi32(k), one), one));
    return _mm256_blendv_ps(s, _mm256_sub_ps(_mm256_set1_ps(1.0f), s), odd);
}
static inline vmask vlanes(int r) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
static inline vf vmaskload(const float *p, vmask m) { return _mm256_maskload_ps(p, m); }
static inline void vmaskstore(float *p, vmask m, vf v) { _mm256_maskstore_ps(p, m, v); }
/* the sum of 16 floats (acc[0]: lanes 0-7, acc[1]: 8-15) in _mm512_reduce_add_ps's order */
static inline float vsum16(const vf *acc) {
    const __m256 t3 = _mm256_add_ps(acc[1], acc[0]);
    const __m128 t6 = _mm_add_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
    const __m128 t8 = _mm_add_ps(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm_cvtss_f32(t8) + _mm_cvtss_f32(_mm_shuffle_ps(t8, t8, 1));
}
static inline float vhmax(vf a) {
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(a, 1), _mm256_castps256_ps128(a));
    m4 = _mm_max_ps(m4, _mm_shuffle_ps(m4, m4, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm_cvtss_f32(_mm_max_ps(m4, _mm_shuffle_ps(m4, m4, 1)));
}
#endif

#ifdef Q_VEC
#define VN16 (16 / VL) /* vectors per 16 floats: sums kept in 16 lanes on every path */
/* the first r (> 0) lanes at p. AVX-512: masked (as cheap as plain); AVX2: a plain load /
 * store when all VL are in use, masked only for a tail (vmaskmovps stores are slow on some
 * CPUs, e.g. microcoded on AMD Zen) */
#define VMASK_FREE (VL == 16)
static inline vf vloadn(const float *p, int r) { return VMASK_FREE || r < VL ? vmaskload(p, vlanes(r)) : vloadu(p); }
static inline void vstoren(float *p, int r, vf v) {
    if (VMASK_FREE || r < VL)
        vmaskstore(p, vlanes(r), v);
    else
        vstoreu(p, v);
}
#endif
#endif
