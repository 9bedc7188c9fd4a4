/* Native CPU kernels of the codec decoder (see native/__init__.py): SnakeBeta in one pass, the
 * input / output transforms of the Winograd k7 convolutions (codec/winograd.py) and the
 * few-row float32 linear (native/f32.py). */
#include "common.h"

/* ------------------------------------------------------------------ SnakeBeta (codec decoder)
 * y = x + inv_beta[c] * sin(x * alpha[c])^2 over channels-last rows (rows, C), one pass
 * (codec/layers.py `SnakeBeta`: alpha = exp(log alpha), inv_beta = 1 / (exp(log beta) + 1e-9),
 * both given). sin^2 has period pi: v = k pi/2 + r, |r| <= pi/4 (Cody-Waite reduction in three
 * parts, Cephes' constants doubled: k * part is exact for |v| < 8192), then sin^2 v = sin^2 r
 * (k even) or 1 - sin^2 r (k odd), sin^2 r = z (1 - z/3 + 2z^2/45 - z^3/315 + 2z^4/14175
 * - 2z^5/467775), z = r^2 (the series; truncation < 4e-9 at |r| = pi/4). Within ~2e-7 absolute
 * of the exact sin^2; lanes with |v| > 8192 use libm's sinf. The AVX2 path does the same
 * operations in 8 lanes (the same floats); the portable one calls sinf. */
#if Q_ISA == Q_AVX2
/* lanes < r of 8 */
static inline __m256i lanes(int r) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }

static inline __m256 sin2_ps(__m256 v) {
    const __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
    const int big = _mm256_movemask_ps(_mm256_cmp_ps(ax, _mm256_set1_ps(8192.f), _CMP_GT_OQ));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(ax, _mm256_set1_ps(0.636619772367581343f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(1.5703125f), ax);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(4.837512969970703125e-4f), r);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(7.54978995489188216e-8f), r);
    const __m256 z = _mm256_mul_ps(r, r);
    __m256 p = _mm256_set1_ps(-4.27563e-6f);
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.41093474e-4f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-3.17460317e-3f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(4.44444444e-2f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-3.33333333e-1f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.0f));
    const __m256 s2 = _mm256_mul_ps(p, z);
    const __m256i one = _mm256_set1_epi32(1);
    const __m256 odd = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(_mm256_cvtps_epi32(k), one), one));
    __m256 res = _mm256_blendv_ps(s2, _mm256_sub_ps(_mm256_set1_ps(1.0f), s2), odd);
    if (big) {
        float buf[8], in[8];
        _mm256_storeu_ps(buf, res);
        _mm256_storeu_ps(in, v);
        for (int i = 0; i < 8; i++)
            if (big >> i & 1) {
                const float sv = sinf(in[i]);
                buf[i] = sv * sv;
            }
        res = _mm256_loadu_ps(buf);
    }
    return res;
}
#elif Q_ISA == Q_AVX512
static inline __m512 sin2_ps(__m512 v) {
    const __m512 ax = _mm512_abs_ps(v);
    const __mmask16 big = _mm512_cmp_ps_mask(ax, _mm512_set1_ps(8192.f), _CMP_GT_OQ);
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(ax, _mm512_set1_ps(0.636619772367581343f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.5703125f), ax);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(4.837512969970703125e-4f), r);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(7.54978995489188216e-8f), r);
    const __m512 z = _mm512_mul_ps(r, r);
    __m512 p = _mm512_set1_ps(-4.27563e-6f); /* -2 / 467775 */
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(1.41093474e-4f));  /* 2 / 14175 */
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-3.17460317e-3f)); /* -1 / 315 */
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(4.44444444e-2f));  /* 2 / 45 */
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-3.33333333e-1f)); /* -1 / 3 */
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(1.0f));
    const __m512 s2 = _mm512_mul_ps(p, z);
    const __mmask16 odd = _mm512_test_epi32_mask(_mm512_cvtps_epi32(k), _mm512_set1_epi32(1));
    __m512 res = _mm512_mask_sub_ps(s2, odd, _mm512_set1_ps(1.0f), s2);
    if (big) {
        float buf[16], in[16];
        _mm512_storeu_ps(buf, res);
        _mm512_storeu_ps(in, v);
        for (int i = 0; i < 16; i++)
            if (big >> i & 1) {
                const float sv = sinf(in[i]);
                buf[i] = sv * sv;
            }
        res = _mm512_loadu_ps(buf);
    }
    return res;
}
#endif

void Q_FN(qwen3tts_snake)(const float *x, float *y, const float *alpha, const float *inv_beta, int64_t rows, int C, int nt) {
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * C;
        float *yr = y + r * C;
        int c = 0;
#if Q_ISA == Q_AVX2
        for (; c + 16 <= C; c += 16) /* two halves: the scalar tail of the AVX-512 loop */
            for (int h = c; h < c + 16; h += 8) {
                const __m256 v = _mm256_loadu_ps(xr + h);
                const __m256 s2 = sin2_ps(_mm256_mul_ps(v, _mm256_loadu_ps(alpha + h)));
                _mm256_storeu_ps(yr + h, _mm256_add_ps(v, _mm256_mul_ps(_mm256_loadu_ps(inv_beta + h), s2)));
            }
#elif Q_ISA == Q_AVX512
        for (; c + 16 <= C; c += 16) {
            const __m512 v = _mm512_loadu_ps(xr + c);
            const __m512 s2 = sin2_ps(_mm512_mul_ps(v, _mm512_loadu_ps(alpha + c)));
            _mm512_storeu_ps(yr + c, _mm512_add_ps(v, _mm512_mul_ps(_mm512_loadu_ps(inv_beta + c), s2)));
        }
#endif
        for (; c < C; c++) {
            const float s = sinf(xr[c] * alpha[c]);
            yr[c] = xr[c] + inv_beta[c] * (s * s);
        }
    }
}

/* the same over NCW rows: x (B * C, T), channel c = row % C */
void Q_FN(qwen3tts_snake_ncw)(const float *x, float *y, const float *alpha, const float *inv_beta, int64_t rows, int C, int64_t T, int nt) {
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < rows; r++) {
        const float a = alpha[r % C], ib = inv_beta[r % C];
        const float *xr = x + r * T;
        float *yr = y + r * T;
        int64_t t = 0;
#if Q_ISA == Q_AVX2
        const __m256 av = _mm256_set1_ps(a), ibv = _mm256_set1_ps(ib);
        for (; t + 16 <= T; t += 16)
            for (int h = 0; h < 16; h += 8) {
                const __m256 v = _mm256_loadu_ps(xr + t + h);
                const __m256 s2 = sin2_ps(_mm256_mul_ps(v, av));
                _mm256_storeu_ps(yr + t + h, _mm256_add_ps(v, _mm256_mul_ps(ibv, s2)));
            }
#elif Q_ISA == Q_AVX512
        const __m512 av = _mm512_set1_ps(a), ibv = _mm512_set1_ps(ib);
        for (; t + 16 <= T; t += 16) {
            const __m512 v = _mm512_loadu_ps(xr + t);
            const __m512 s2 = sin2_ps(_mm512_mul_ps(v, av));
            _mm512_storeu_ps(yr + t, _mm512_add_ps(v, _mm512_mul_ps(ibv, s2)));
        }
#endif
        for (; t < T; t++) {
            const float s = sinf(xr[t] * a);
            yr[t] = xr[t] + ib * (s * s);
        }
    }
}

/* ------------------------------------------------------------------ Winograd F(m, r) transforms */
/* out = a * src (first term) or out += a * src, C channels */
static inline void axpy_or_set(float *out, float a, const float *src, int C, int first) {
    if (first)
        for (int c = 0; c < C; c++) out[c] = a * src[c];
    else
        for (int c = 0; c < C; c++) out[c] += a * src[c];
}

/*
 * A causal k-tap convolution with dilation d over channels-last input x (B, L, C), L = T + (r-1) d,
 * is, per phase ph < d, a plain correlation over the rows ph, ph + d, ...; its outputs are cut
 * into q tiles of m per phase (row R = (b q + t) d + ph, tile t covers outputs (t m + p) d + ph).
 *   in:  V[i, R, :] = sum_k BT[i, k] x[b, off + (t m + k) d + ph, :]     i, k < n = m + r - 1
 *   (GEMMs, by the caller: M[i] = V[i] @ U[i], U[i] = (G W)[i] of shape (C, Cout))
 *   out: y[b, (t m + p) d + ph, :] = sum_i AT[p, i] M[i, R, :] + bias   (rows < T only)
 * V[i, R, :] starts at element i * si + R * sr of V; M[i, R, :] at element R * sr of M[i] (the
 * n products may be separate tensors).
 * The input is the concatenation in time of h (Lh rows per batch entry, ldh apart: a streaming
 * layer's history, may be empty) and x (Lx rows, ldx apart), zero beyond; `off` (a row of that
 * concatenation) and the output pointer place a piece of a longer signal. Plain IEEE single
 * precision (no FMA), terms in index order, zero coefficients skipped; with AVX-512 one tile row
 * is transformed in registers, 16 channels at a time, with the same operations. */
/* per transform row: the nonzero coefficients of each output, in index order */
typedef struct {
    int cnt[32], idx[32][32];
    float a[32][32];
} coef_lists;

static void nonzero_lists(const float *A, int rows, int n, coef_lists *L) {
    for (int i = 0; i < rows; i++) {
        L->cnt[i] = 0;
        for (int k = 0; k < n; k++)
            if (A[i * n + k] != 0.f) {
                L->idx[i][L->cnt[i]] = k;
                L->a[i][L->cnt[i]++] = A[i * n + k];
            }
    }
}

#if Q_ISA == Q_AVX2
/* wino_in_row / wino_out_row below in 8 lanes: the same operations per channel */
static inline __attribute__((always_inline)) void wino_in_row(const float *const *xk, int n, int C, float *out0, int64_t si,
                                                              const float *BT) {
    for (int c = 0; c < C; c += 8) {
        const __m256i mk = lanes(C - c);
        __m256 xv[32];
        for (int k = 0; k < n; k++) xv[k] = xk[k] ? _mm256_maskload_ps(xk[k] + c, mk) : _mm256_setzero_ps();
        for (int i = 0; i < n; i++) {
            __m256 acc = _mm256_mul_ps(_mm256_set1_ps(BT[i * n]), xv[0]);
            for (int k = 1; k < n; k++) acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(BT[i * n + k]), xv[k]));
            _mm256_maskstore_ps(out0 + i * si + c, mk, acc);
        }
    }
}

static inline __attribute__((always_inline)) void wino_out_row(const float *const *Mr, int n, int m, int C, float *dst0, int64_t ds,
                                                               int pmax, const float *bias, const float *AT) {
    for (int c = 0; c < C; c += 8) {
        const __m256i mk = lanes(C - c);
        __m256 mv[32];
        for (int i = 0; i < n; i++) mv[i] = _mm256_maskload_ps(Mr[i] + c, mk);
        const __m256 bv = bias ? _mm256_maskload_ps(bias + c, mk) : _mm256_setzero_ps();
        for (int p = 0; p < m; p++) {
            if (p >= pmax) break;
            __m256 acc = _mm256_mul_ps(_mm256_set1_ps(AT[p * n]), mv[0]);
            for (int i = 1; i < n; i++) acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(AT[p * n + i]), mv[i]));
            if (bias) acc = _mm256_add_ps(acc, bv);
            _mm256_maskstore_ps(dst0 + p * ds + c, mk, acc);
        }
    }
}
#endif

#if Q_ISA == Q_AVX512
/* one tile row of the input transform in registers, 16 channels at a time, over all n x n
 * coefficients (constant n: unrolled, each product one multiply with a broadcast operand). The
 * same values as the plain loop below: a zero coefficient or a missing (zero) input row adds an
 * exact zero, so the sums agree with the sparse ones in order and rounding. */
static inline __attribute__((always_inline)) void wino_in_row(const float *const *xk, int n, int C, float *out0, int64_t si,
                                                              const float *BT) {
    for (int c = 0; c < C; c += 16) {
        const __mmask16 mk = C - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (C - c)) - 1);
        __m512 xv[32];
        for (int k = 0; k < n; k++) xv[k] = xk[k] ? _mm512_maskz_loadu_ps(mk, xk[k] + c) : _mm512_setzero_ps();
        for (int i = 0; i < n; i++) {
            __m512 acc = _mm512_mul_ps(_mm512_set1_ps(BT[i * n]), xv[0]);
            for (int k = 1; k < n; k++) acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_set1_ps(BT[i * n + k]), xv[k]));
            _mm512_mask_storeu_ps(out0 + i * si + c, mk, acc);
        }
    }
}
#endif

void Q_FN(qwen3tts_wino_in)(const float *h, int64_t Lh, int64_t ldh, const float *x, int64_t Lx, int64_t ldx, int64_t off, int B,
                      int C, float *V, int64_t si, int64_t sr, const float *BT, int m, int n, int d, int64_t q, int nt) {
    const int64_t R = (int64_t)B * q * d;
    coef_lists L;
    nonzero_lists(BT, n, n, &L);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t row = 0; row < R; row++) {
        const int64_t b = row / (q * d), t = (row / d) % q, ph = row % d;
        const float *xk[32];
        for (int k = 0; k < n; k++) {
            const int64_t i = off + (t * m + k) * d + ph;
            xk[k] = i < Lh ? h + (b * ldh + i) * C : i < Lh + Lx ? x + (b * ldx + i - Lh) * C : NULL;
        }
#if Q_ISA == Q_AVX512 || Q_ISA == Q_AVX2
        if (n == 10) { /* F(4, 7) */
            wino_in_row(xk, 10, C, V + row * sr, si, BT);
            continue;
        }
#endif
        for (int i = 0; i < n; i++) {
            float *out = V + i * si + row * sr;
            int first = 1;
            for (int j = 0; j < L.cnt[i]; j++) {
                const int k = L.idx[i][j];
                if (xk[k] == NULL) continue;
                axpy_or_set(out, L.a[i][j], xk[k], C, first);
                first = 0;
            }
            if (first) memset(out, 0, sizeof(float) * C);
        }
    }
}

#if Q_ISA == Q_AVX512
static inline __attribute__((always_inline)) void wino_out_row(const float *const *Mr, int n, int m, int C, float *dst0, int64_t ds,
                                                               int pmax, const float *bias, const float *AT) {
    for (int c = 0; c < C; c += 16) {
        const __mmask16 mk = C - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (C - c)) - 1);
        __m512 mv[32];
        for (int i = 0; i < n; i++) mv[i] = _mm512_maskz_loadu_ps(mk, Mr[i] + c);
        const __m512 bv = bias ? _mm512_maskz_loadu_ps(mk, bias + c) : _mm512_setzero_ps();
        for (int p = 0; p < m; p++) {
            if (p >= pmax) break;
            __m512 acc = _mm512_mul_ps(_mm512_set1_ps(AT[p * n]), mv[0]);
            for (int i = 1; i < n; i++) acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_set1_ps(AT[p * n + i]), mv[i]));
            if (bias) acc = _mm512_add_ps(acc, bv);
            _mm512_mask_storeu_ps(dst0 + p * ds + c, mk, acc);
        }
    }
}
#endif

void Q_FN(qwen3tts_wino_out)(const float *const *M, int64_t sr, int B, int64_t T, int64_t ldb, int C, float *y, const float *AT,
                       const float *bias, int m, int n, int d, int64_t q, int nt) {
    const int64_t R = (int64_t)B * q * d;
    coef_lists L;
    nonzero_lists(AT, m, n, &L);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t row = 0; row < R; row++) {
        const int64_t b = row / (q * d), t = (row / d) % q, ph = row % d;
        const int64_t o0 = t * m * d + ph; /* output of p: o0 + p d */
        const int pmax = o0 >= T ? 0 : (int)((T - 1 - o0) / d + 1); /* outputs of this tile below T */
#if Q_ISA == Q_AVX512 || Q_ISA == Q_AVX2
        if (n == 10 && m == 4) { /* F(4, 7) */
            const float *Mr[10];
            for (int i = 0; i < 10; i++) Mr[i] = M[i] + row * sr;
            wino_out_row(Mr, 10, 4, C, y + (b * ldb + o0) * C, (int64_t)d * C, pmax, bias, AT);
            continue;
        }
#endif
        for (int p = 0; p < m && p < pmax; p++) {
            float *dst = y + (b * ldb + o0 + (int64_t)p * d) * C;
            int first = 1;
            for (int j = 0; j < L.cnt[p]; j++) {
                axpy_or_set(dst, L.a[p][j], M[L.idx[p][j]] + row * sr, C, first);
                first = 0;
            }
            if (first) memset(dst, 0, sizeof(float) * C);
            if (bias)
                for (int c = 0; c < C; c++) dst[c] += bias[c];
        }
    }
}

/* ------------------------------------------------------------------ Winograd F(4, 7), fused
 * The whole convolution of qwen3tts_wino_in / _out (same arguments) with the channel mixes in
 * between, in chunks of TR tile rows per thread: the chunk's transformed input V (n, TR, C),
 * its products M[i] = V[i] @ U[i] (U: (n, C, Cout), row-major) and the output transform, all
 * in the thread's L2; the unfused passes stream V and M (2.5x the activations each) through
 * memory, which bounds them at <= 192 channels. The products: a register-blocked kernel, 8
 * rows x 32 output channels of FMA accumulators per block (sums over k in order, one FMA
 * each; AVX2: 6 rows x 16 channels, the same sums). AVX-512 and AVX2 (elsewhere it returns -2;
 * the caller checks qwen3tts_wino_fused_available). */
#if Q_ISA == Q_AVX2
static inline __attribute__((always_inline)) void mix_block(const float *A, int64_t lda, int rb, const float *Bm, int K, int N, int c0,
                                                            float *Cm, int64_t ldc) {
    const __m256i m0 = lanes(N - c0), m1 = lanes(N - c0 - 8);
    __m256 acc[6][2];
    for (int r = 0; r < 6; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int k = 0; k < K; k++) {
        const __m256 b0 = _mm256_maskload_ps(Bm + (int64_t)k * N + c0, m0);
        const __m256 b1 = _mm256_maskload_ps(Bm + (int64_t)k * N + c0 + 8, m1);
        for (int r = 0; r < rb; r++) {
            const __m256 a = _mm256_broadcast_ss(A + r * lda + k);
            acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < rb; r++) {
        _mm256_maskstore_ps(Cm + r * ldc + c0, m0, acc[r][0]);
        _mm256_maskstore_ps(Cm + r * ldc + c0 + 8, m1, acc[r][1]);
    }
}

static void mix_rows(const float *A, int R, int K, const float *Bm, int N, float *Cm) {
    for (int r0 = 0; r0 < R; r0 += 6) {
        const int rb = R - r0 < 6 ? R - r0 : 6;
        for (int c0 = 0; c0 < N; c0 += 16) {
            if (rb == 6)
                mix_block(A + (int64_t)r0 * K, K, 6, Bm, K, N, c0, Cm + (int64_t)r0 * N, N); /* constant rows: registers */
            else
                mix_block(A + (int64_t)r0 * K, K, rb, Bm, K, N, c0, Cm + (int64_t)r0 * N, N);
        }
    }
}
#elif Q_ISA == Q_AVX512
static inline __attribute__((always_inline)) void mix_block(const float *A, int64_t lda, int rb, const float *Bm, int K, int N, int c0,
                                                            float *Cm, int64_t ldc) {
    const __mmask16 m0 = N - c0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (N - c0)) - 1);
    const __mmask16 m1 = N - c0 >= 32 ? (__mmask16)0xFFFF : N - c0 <= 16 ? (__mmask16)0 : (__mmask16)((1u << (N - c0 - 16)) - 1);
    __m512 acc[8][2];
    for (int r = 0; r < 8; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int k = 0; k < K; k++) {
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, Bm + (int64_t)k * N + c0);
        const __m512 b1 = _mm512_maskz_loadu_ps(m1, Bm + (int64_t)k * N + c0 + 16);
        for (int r = 0; r < rb; r++) {
            const __m512 a = _mm512_set1_ps(A[r * lda + k]);
            acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < rb; r++) {
        _mm512_mask_storeu_ps(Cm + r * ldc + c0, m0, acc[r][0]);
        _mm512_mask_storeu_ps(Cm + r * ldc + c0 + 16, m1, acc[r][1]);
    }
}

static void mix_rows(const float *A, int R, int K, const float *Bm, int N, float *Cm) {
    for (int r0 = 0; r0 < R; r0 += 8) {
        const int rb = R - r0 < 8 ? R - r0 : 8;
        for (int c0 = 0; c0 < N; c0 += 32) {
            if (rb == 8)
                mix_block(A + (int64_t)r0 * K, K, 8, Bm, K, N, c0, Cm + (int64_t)r0 * N, N); /* constant rows: registers */
            else
                mix_block(A + (int64_t)r0 * K, K, rb, Bm, K, N, c0, Cm + (int64_t)r0 * N, N);
        }
    }
}
#endif

int Q_FN(qwen3tts_wino_fused)(const float *h, int64_t Lh, int64_t ldh, const float *x, int64_t Lx, int64_t ldx, int B, int C, int Cout,
                        const float *U, const float *BT, const float *AT, const float *bias, int64_t q, int64_t T, int64_t ldb,
                        float *y, int TR, int d, int nt) {
#if Q_ISA == Q_AVX512 || Q_ISA == Q_AVX2
    enum { m = 4, n = 10 };
    const int64_t R = (int64_t)B * q * d;
    const int64_t chunks = (R + TR - 1) / TR;
    int fail = 0;
#pragma omp parallel num_threads(nt)
    {
        float *V = aligned_alloc(64, ((size_t)n * TR * C * sizeof(float) + 63) / 64 * 64);
        float *M = aligned_alloc(64, ((size_t)n * TR * Cout * sizeof(float) + 63) / 64 * 64);
        if (!V || !M) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(static)
        for (int64_t ch = 0; ch < chunks; ch++) {
            if (!V || !M) continue;
            const int64_t r0 = ch * TR;
            const int rows = (int)(R - r0 < TR ? R - r0 : TR);
            for (int rr = 0; rr < rows; rr++) { /* input transform: V[i, rr, :] */
                const int64_t row = r0 + rr, b = row / (q * d), t = (row / d) % q, ph = row % d;
                const float *xk[n];
                for (int k = 0; k < n; k++) {
                    const int64_t i = (t * m + k) * d + ph;
                    xk[k] = i < Lh ? h + (b * ldh + i) * C : i < Lh + Lx ? x + (b * ldx + i - Lh) * C : NULL;
                }
                wino_in_row(xk, n, C, V + (int64_t)rr * C, (int64_t)TR * C, BT);
            }
            for (int i = 0; i < n; i++) /* the channel mixes */
                mix_rows(V + (int64_t)i * TR * C, rows, C, U + (int64_t)i * C * Cout, Cout, M + (int64_t)i * TR * Cout);
            for (int rr = 0; rr < rows; rr++) { /* output transform */
                const int64_t row = r0 + rr, b = row / (q * d), t = (row / d) % q, ph = row % d;
                const int64_t o0 = t * m * d + ph;
                const int pmax = o0 >= T ? 0 : (int)((T - 1 - o0) / d + 1);
                const float *Mr[n];
                for (int i = 0; i < n; i++) Mr[i] = M + ((int64_t)i * TR + rr) * Cout;
                wino_out_row(Mr, n, m, Cout, y + (b * ldb + o0) * Cout, (int64_t)d * Cout, pmax, bias, AT);
            }
        }
        free(V);
        free(M);
    }
    return fail ? -1 : 0;
#else
    (void)h; (void)Lh; (void)ldh; (void)x; (void)Lx; (void)ldx; (void)B; (void)C; (void)Cout; (void)U; (void)BT; (void)AT;
    (void)bias; (void)q; (void)T; (void)ldb; (void)y; (void)TR; (void)d; (void)nt;
    return -2;
#endif
}

/* ------------------------------------------------------------------ float32 linear, few rows
 * y (M, N) = x (M, K) @ w (N, K)^T (+ bias), for the codec decoder's few-row products
 * (native/f32.py): 4 weight rows x mm <= 4 activation rows per pass in 16 lanes (FMA), each
 * weight row read from memory once (then from L1 for the next 4 activation rows), one
 * horizontal sum per output. Summation order: 16 lanes over k, then the lanes (AVX2: 8 lanes). */
#if Q_ISA == Q_AVX2
static inline __attribute__((always_inline)) void dot_f32_4n(const float *const *xr, int K, const float *const *wr, int mm,
                                                             const float *pf, int pass, int passes, float *out) {
    __m256 acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = _mm256_setzero_ps();
    size_t at = ((size_t)pass * K / passes) & ~(size_t)15;
    int tick = 0;
    for (int k = 0; k < K; k += 8) {
        const __m256i mk = lanes(K - k);
        if (pf && (k & 15) == 0) {
            for (int j = 0; j < 4; j++) _mm_prefetch((const char *)(pf + (size_t)j * K + at), _MM_HINT_T0);
            if (++tick == passes) tick = 0, at += 16;
        }
        __m256 wv[4];
        for (int j = 0; j < 4; j++) wv[j] = _mm256_maskload_ps(wr[j] + k, mk);
        for (int i = 0; i < mm; i++) {
            const __m256 xv = _mm256_maskload_ps(xr[i] + k, mk);
            for (int j = 0; j < 4; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < mm; i++)
        for (int j = 0; j < 4; j++) {
            const __m128 s4 = _mm_add_ps(_mm256_extractf128_ps(acc[i][j], 1), _mm256_castps256_ps128(acc[i][j]));
            const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            out[i * 4 + j] = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
        }
}
#elif Q_ISA == Q_AVX512
static inline __attribute__((always_inline)) void dot_f32_4n(const float *const *xr, int K, const float *const *wr, int mm,
                                                             const float *pf, int pass, int passes, float *out) {
    __m512 acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
    /* the next 4 weight rows (contiguous): pass p of P over these rows fetches their p-th P-th,
     * one cache line per row every P steps */
    size_t at = ((size_t)pass * K / passes) & ~(size_t)15;
    int tick = 0;
    for (int k = 0; k < K; k += 16) {
        const __mmask16 mk = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
        if (pf) {
            for (int j = 0; j < 4; j++) _mm_prefetch((const char *)(pf + (size_t)j * K + at), _MM_HINT_T0);
            if (++tick == passes) tick = 0, at += 16;
        }
        __m512 wv[4];
        for (int j = 0; j < 4; j++) wv[j] = _mm512_maskz_loadu_ps(mk, wr[j] + k);
        for (int i = 0; i < mm; i++) {
            const __m512 xv = _mm512_maskz_loadu_ps(mk, xr[i] + k);
            for (int j = 0; j < 4; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < mm; i++)
        for (int j = 0; j < 4; j++) out[i * 4 + j] = _mm512_reduce_add_ps(acc[i][j]);
}
#endif

void Q_FN(qwen3tts_linear_f32)(const float *x, int M, int K, const float *w, const float *bias, int N, float *y, int nt) {
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int n0 = 0; n0 < N; n0 += 4) {
        const float *wr[4];
        for (int j = 0; j < 4; j++) wr[j] = w + (size_t)(n0 + j < N ? n0 + j : N - 1) * K; /* edge: a repeated row */
        for (int m0 = 0; m0 < M; m0 += 4) {
            const int mm = M - m0 < 4 ? M - m0 : 4;
            const float *xr[4];
            for (int i = 0; i < 4; i++) xr[i] = x + (size_t)(m0 + (i < mm ? i : 0)) * K;
            float out[16];
#if Q_ISA == Q_AVX512 || Q_ISA == Q_AVX2
            const float *pf = n0 + 8 <= N ? w + (size_t)(n0 + 4) * K : NULL;
            const int pass = m0 / 4, passes = (M + 3) / 4;
            switch (mm) { /* constant row counts */
            case 1: dot_f32_4n(xr, K, wr, 1, pf, pass, passes, out); break;
            case 2: dot_f32_4n(xr, K, wr, 2, pf, pass, passes, out); break;
            case 3: dot_f32_4n(xr, K, wr, 3, pf, pass, passes, out); break;
            default: dot_f32_4n(xr, K, wr, 4, pf, pass, passes, out); break;
            }
#else
            for (int i = 0; i < mm; i++)
                for (int j = 0; j < 4; j++) {
                    float s = 0.f;
                    for (int k = 0; k < K; k++) s += xr[i][k] * wr[j][k];
                    out[i * 4 + j] = s;
                }
#endif
            for (int i = 0; i < mm; i++)
                for (int j = 0; j < 4 && n0 + j < N; j++)
                    y[(size_t)(m0 + i) * N + n0 + j] = out[i * 4 + j] + (bias ? bias[n0 + j] : 0.f);
        }
    }
}
