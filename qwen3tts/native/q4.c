/* int4 weights x per-row int8 activations: the linear products of the w4a8 mode (native/q4.py).
 *
 * Weights: symmetric int4 w in [-7, 7] with one float32 scale per output row and group of G
 * consecutive inputs (G = 32 or 64), stored as u = w + 8 in [1, 15] (padding: 8, i.e. 0), two per
 * byte, in blocks of 16 output rows: for block b and the 8 inputs k8 * 8 .. k8 * 8 + 7, 64 bytes
 * at w + (b * Kp / 8 + k8) * 64, byte r * 4 + j (row r of the block, j < 4) holding input
 * k8 * 8 + j in its low nibble and input k8 * 8 + 4 + j in its high one. So one 32-bit lane holds
 * 4 consecutive inputs of one row: the u8 x s8 dot products of 4 bytes into 32 bits (vpdpbusd,
 * vpmaddubsw + vpmaddwd, NEON widening products) give each output row in its own lane, and an
 * unpacked 64-byte vector is 16 rows (AVX-512), half of it 8 (AVX2). Group scales: bfloat16 (the
 * high half of a float32: widened exactly by a shift), 16 per block and group, at
 * scale + (b * ng + g) * 16.
 *
 * Activations: per row int8 as in w8a8 (decode.c quant_row: x_k = round(x_k * 127 / s) with
 * s = max |x|). With d_g = sum_{k in g} u_nk x_mk - 8 sum_{k in g} x_mk (exact in int32):
 *
 *   y_mn = (sum_g gs_ng * float(d_g)) * (s_m / 127)  (+ bias_n)
 *
 * the group sum in group order, multiply then add (no FMA) on every path: every instruction set
 * gives the same floats. The int16 sums of AVX2 stay exact: 4 products of at most 15 * 127 per
 * 8 inputs, 32 inputs per int16 lane at most 4 * 4 * 1905 = 30480 < 2^15. */
#include "vec.h"

#define Q4_NB 16 /* weight rows per block */

static inline float q4_bf16(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline int32_t q4_load4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* f[r * 16 + i] = sum_g gs[g * 16 + i] * float(d_g) for the 16 rows of one block (packed weights
 * wb, scales gb) and mm <= 4 activation rows x (stride Kp) with xs8[r * ng + g] = 8 * group sums */
static inline __attribute__((always_inline)) void q4_block(const uint8_t *wb, const uint16_t *gb, int ng, int G, const int8_t *x, int Kp,
                                                           const int32_t *xs8, int mm, float *f) {
#if Q_ISA == Q_AVX512
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 acc[4];
    for (int r = 0; r < 4; r++) acc[r] = _mm512_setzero_ps();
    for (int g = 0; g < ng; g++) {
        __m512i a[4], c[4];
        for (int r = 0; r < 4; r++) a[r] = c[r] = _mm512_setzero_si512();
        for (int k = g * G; k < (g + 1) * G; k += 8) {
            const __m512i P = _mm512_loadu_si512((const void *)(wb + (size_t)k * 8));
            const __m512i lo = _mm512_and_si512(P, m4), hi = _mm512_and_si512(_mm512_srli_epi16(P, 4), m4);
            for (int r = 0; r < mm; r++) {
                a[r] = _mm512_dpbusd_epi32(a[r], lo, _mm512_set1_epi32(q4_load4(x + (size_t)r * Kp + k)));
                c[r] = _mm512_dpbusd_epi32(c[r], hi, _mm512_set1_epi32(q4_load4(x + (size_t)r * Kp + k + 4)));
            }
        }
        const __m512 s = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(gb + (size_t)g * Q4_NB))), 16));
        for (int r = 0; r < mm; r++) {
            const __m512i d = _mm512_sub_epi32(_mm512_add_epi32(a[r], c[r]), _mm512_set1_epi32(xs8[r * ng + g]));
            acc[r] = _mm512_add_ps(acc[r], _mm512_mul_ps(_mm512_cvtepi32_ps(d), s));
        }
    }
    for (int r = 0; r < mm; r++) _mm512_storeu_ps(f + r * Q4_NB, acc[r]);
#elif Q_ISA == Q_AVX2
/* each sum in a register after each step: without it the compiler regroups the int16 additions
 * into trees of products computed all at once, more than the 16 registers hold (stack spills) */
#define Q4_KEEP(v) __asm__("" : "+x"(v))
    /* one pass over each 64 bytes: its first 32 bytes hold rows 0-7 (h = 0), the other 32 rows
     * 8-15 (h = 1); int16 sums over 32 inputs, then int32 (vpmaddwd with ones) */
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256 acc[4][2];
    for (int r = 0; r < 4; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int g = 0; g < ng; g++) {
        __m256i a[4][2];
        for (int r = 0; r < 4; r++) a[r][0] = a[r][1] = _mm256_setzero_si256();
        for (int k0 = g * G; k0 < (g + 1) * G; k0 += 32) {
            __m256i s16[4][2];
            for (int r = 0; r < 4; r++) s16[r][0] = s16[r][1] = _mm256_setzero_si256();
            for (int k = k0; k < k0 + 32; k += 8) {
                const __m256i P0 = _mm256_loadu_si256((const __m256i *)(wb + (size_t)k * 8));
                const __m256i P1 = _mm256_loadu_si256((const __m256i *)(wb + (size_t)k * 8 + 32));
                const __m256i lo0 = _mm256_and_si256(P0, m4), hi0 = _mm256_and_si256(_mm256_srli_epi16(P0, 4), m4);
                const __m256i lo1 = _mm256_and_si256(P1, m4), hi1 = _mm256_and_si256(_mm256_srli_epi16(P1, 4), m4);
                for (int r = 0; r < mm; r++) {
                    const __m256i x0 = _mm256_set1_epi32(q4_load4(x + (size_t)r * Kp + k));
                    s16[r][0] = _mm256_add_epi16(s16[r][0], _mm256_maddubs_epi16(lo0, x0));
                    s16[r][1] = _mm256_add_epi16(s16[r][1], _mm256_maddubs_epi16(lo1, x0));
                    const __m256i x1 = _mm256_set1_epi32(q4_load4(x + (size_t)r * Kp + k + 4));
                    s16[r][0] = _mm256_add_epi16(s16[r][0], _mm256_maddubs_epi16(hi0, x1));
                    s16[r][1] = _mm256_add_epi16(s16[r][1], _mm256_maddubs_epi16(hi1, x1));
                    Q4_KEEP(s16[r][0]);
                    Q4_KEEP(s16[r][1]);
                }
            }
            for (int r = 0; r < mm; r++)
                for (int h = 0; h < 2; h++) a[r][h] = _mm256_add_epi32(a[r][h], _mm256_madd_epi16(s16[r][h], ones));
        }
        for (int h = 0; h < 2; h++) {
            const __m256 s = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(gb + (size_t)g * Q4_NB + h * 8))), 16));
            for (int r = 0; r < mm; r++) {
                const __m256i d = _mm256_sub_epi32(a[r][h], _mm256_set1_epi32(xs8[r * ng + g]));
                acc[r][h] = _mm256_add_ps(acc[r][h], _mm256_mul_ps(_mm256_cvtepi32_ps(d), s));
            }
        }
    }
    for (int r = 0; r < mm; r++)
        for (int h = 0; h < 2; h++) _mm256_storeu_ps(f + r * Q4_NB + h * 8, acc[r][h]);
#elif Q_ISA == Q_NEON
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    for (int r = 0; r < mm; r++) {
        const int8_t *xr = x + (size_t)r * Kp;
        float32x4_t acc[4];
        for (int v = 0; v < 4; v++) acc[v] = vdupq_n_f32(0.f);
        for (int g = 0; g < ng; g++) {
            int32x4_t a[4];
            for (int v = 0; v < 4; v++) a[v] = vdupq_n_s32(0);
            for (int k = g * G; k < (g + 1) * G; k += 8) {
                const int8x16_t x0 = vreinterpretq_s8_s32(vdupq_n_s32(q4_load4(xr + k)));
                const int8x16_t x1 = vreinterpretq_s8_s32(vdupq_n_s32(q4_load4(xr + k + 4)));
                for (int v = 0; v < 4; v++) { /* rows 4v .. 4v + 3 */
                    const uint8x16_t P = vld1q_u8(wb + (size_t)k * 8 + 16 * v);
                    const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(P, m4)), hi = vreinterpretq_s8_u8(vshrq_n_u8(P, 4));
                    int16x8_t pl = vmull_s8(vget_low_s8(lo), vget_low_s8(x0)); /* rows 4v, 4v + 1 */
                    pl = vmlal_s8(pl, vget_low_s8(hi), vget_low_s8(x1));
                    int16x8_t ph = vmull_s8(vget_high_s8(lo), vget_high_s8(x0)); /* rows 4v + 2, 4v + 3 */
                    ph = vmlal_s8(ph, vget_high_s8(hi), vget_high_s8(x1));
                    a[v] = vpadalq_s16(a[v], vpaddq_s16(pl, ph));
                }
            }
            for (int v = 0; v < 4; v++) {
                const int32x4_t d = vsubq_s32(a[v], vdupq_n_s32(xs8[r * ng + g]));
                acc[v] = vaddq_f32(acc[v], vmulq_f32(vcvtq_f32_s32(d), vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(gb + (size_t)g * Q4_NB + 4 * v), 16))));
            }
        }
        for (int v = 0; v < 4; v++) vst1q_f32(f + r * Q4_NB + 4 * v, acc[v]);
    }
#else
    for (int r = 0; r < mm; r++)
        for (int i = 0; i < Q4_NB; i++) {
            float acc = 0.f;
            for (int g = 0; g < ng; g++) {
                int32_t d = 0;
                for (int k = g * G; k < (g + 1) * G; k++) {
                    const uint8_t byte = wb[(size_t)(k >> 3) * 64 + i * 4 + (k & 3)];
                    d += (int32_t)((k & 4) ? byte >> 4 : byte & 15) * x[(size_t)r * Kp + k];
                }
                acc = acc + (float)(d - xs8[r * ng + g]) * q4_bf16(gb[(size_t)g * Q4_NB + i]);
            }
            f[r * Q4_NB + i] = acc;
        }
#endif
}

/* y[m, n] (=|+=) the product of activation row m (s8 x, scale sx, 8 * group sums xs8) and weight
 * row n; ldy: row stride of y */
static void q4_gemm(const Lin *L, const int8_t *x, const int32_t *xs8, const float *sx, int M, float *y, int ldy, int accumulate, int nt) {
    const int N = L->n, Kp = L->kp, G = L->group, ng = Kp / G, nblocks = (N + Q4_NB - 1) / Q4_NB;
    const uint8_t *W = (const uint8_t *)L->w;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int b = 0; b < nblocks; b++) {
        const uint8_t *wb = W + (size_t)b * (Q4_NB / 2) * Kp;
        const uint16_t *gb = (const uint16_t *)L->scale + (size_t)b * ng * Q4_NB;
        const int nr = N - b * Q4_NB < Q4_NB ? N - b * Q4_NB : Q4_NB;
        for (int m0 = 0; m0 < M; m0 += 4) {
            const int mm = M - m0 < 4 ? M - m0 : 4;
            const int8_t *x0 = x + (size_t)m0 * Kp;
            const int32_t *s0 = xs8 + (size_t)m0 * ng;
            float f[4 * Q4_NB];
            switch (mm) { /* constant row counts: no per-iteration row tests */
            case 1: q4_block(wb, gb, ng, G, x0, Kp, s0, 1, f); break;
            case 2: q4_block(wb, gb, ng, G, x0, Kp, s0, 2, f); break;
            case 3: q4_block(wb, gb, ng, G, x0, Kp, s0, 3, f); break;
            default: q4_block(wb, gb, ng, G, x0, Kp, s0, 4, f); break;
            }
            for (int r = 0; r < mm; r++) {
                float *dst = y + (size_t)(m0 + r) * ldy + (size_t)b * Q4_NB;
                for (int i = 0; i < nr; i++) {
                    float v = f[r * Q4_NB + i] * sx[m0 + r];
                    if (L->bias) v = v + L->bias[b * Q4_NB + i];
                    dst[i] = accumulate ? dst[i] + v : v;
                }
            }
        }
    }
}

/* 8 * the group sums of s8 rows x (M, Kp) into xs8 (M, Kp / G) */
static void q4_group_sums(const int8_t *x, int M, int Kp, int G, int32_t *xs8) {
    for (int m = 0; m < M; m++)
        for (int g = 0; g < Kp / G; g++) {
            int32_t s = 0;
            for (int k = g * G; k < (g + 1) * G; k++) s += x[(size_t)m * Kp + k];
            xs8[m * (Kp / G) + g] = 8 * s;
        }
}

/* q4_gemm on the biased activations of decode.c (q + 128, row stride Kp) */
static void q4_gemm_biased(const Lin *L, const uint8_t *q, const float *sx, int M, float *y, int ldy, int accumulate, int nt) {
    const size_t n = (size_t)M * L->kp;
    int8_t *x = (int8_t *)malloc(n);
    int32_t *xs8 = (int32_t *)malloc(sizeof(int32_t) * M * (L->kp / L->group));
    for (size_t i = 0; i < n; i++) x[i] = (int8_t)(q[i] ^ 0x80);
    q4_group_sums(x, M, L->kp, L->group, xs8);
    q4_gemm(L, x, xs8, sx, M, y, ldy, accumulate, nt);
    free(x);
    free(xs8);
}

/* y (M, N) = the int4 products of the int8 rows x (M, Kp) with their scales sx (s / 127) */
void Q_FN(qwen3tts_q4_gemm)(const Lin *L, const int8_t *x, const float *sx, int M, float *y, int nt) {
    int32_t *xs8 = (int32_t *)malloc(sizeof(int32_t) * M * (L->kp / L->group));
    q4_group_sums(x, M, L->kp, L->group, xs8);
    q4_gemm(L, x, xs8, sx, M, y, L->n, 0, nt);
    free(xs8);
}
