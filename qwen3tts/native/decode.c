/* Native CPU decode for the Qwen3 decoder stack in w8a8 mode (see native/__init__.py).
 *
 * One call runs every layer of a stack (talker: 28, code predictor: 5) for M tokens:
 * RMSNorm -> per-row int8 quantization -> fused q/k/v GEMV -> q/k RMSNorm per head -> RoPE ->
 * K/V written into the caller's static caches -> causal GQA attention -> o GEMV (+ residual) ->
 * RMSNorm -> gate/up GEMV -> SiLU * up -> down GEMV (+ residual); then the final RMSNorm.
 * It mirrors model/layers.py (`DecoderLayer`, `Transformer`) with quant.py's w8a8 numerics:
 *
 *   s_m = max_k |x_mk| (at least 1e-30), q_mk = clamp(round_half_even(x_mk * (127 / s_m)), +-127)
 *   y_mn = float(sum_k q_mk w_nk) * (s_m / 127) * wscale_n  (+ bias_n)
 *
 * with the sum exact in int32. Every row is computed on its own (its own scale, its own
 * attention), so a batch of rows equals each row alone, bit for bit. Float arithmetic is plain
 * IEEE single precision (built with -ffp-contract=off: no FMA contraction).
 *
 * Per instruction set (Q_ISA, see common.h): AVX-512 sums u8 (q + 128) x s8 with VNNI and
 * subtracts 128 * wsum; AVX2 sums |q| x (w, or ~w where q < 0) with vpmaddubsw (every pair is
 * at most 2 * 127 * 128 < 2^15: no int16 saturation) and vpmaddwd, then adds back the row's sum
 * of |q| over q < 0 (w8_avx2.c); NEON with widening s8 products. The int32 sums, hence the
 * products, are the same on every path; AVX2 also does the float reductions (norms, softmax) in
 * the 16-lane order of AVX-512, so the two agree bit for bit; the portable path sums floats in
 * index order.
 *
 * Rows: row r is at position pos[r % npos] and owns the caches kp/vp[l * M + r] (layer l) of
 * shape (n_kv_heads, smax[r], head_dim). K/V of all rows are written before attention, so rows
 * of one sequence at consecutive positions (a 2-token prefill) attend causally to each other.
 */
#include "vec.h"

#define Q_BIASED (Q_ISA == Q_AVX512 || Q_ISA == Q_PORTABLE) /* its int32 sums are of (q + 128) x w */
#define KALIGN 64 /* K is padded to this (zero weights, activation 0) */
/* int8 weight layout (native/stack.py pack_rows): the output rows in groups of W8_NR (the last
 * one padded with zero rows), each group's rows interleaved by 64-byte chunks: input chunk c of
 * row j of group g at w + g * W8_NR * Kp + (c * W8_NR + j) * 64. A group is one contiguous
 * stream, and so is a thread's share of the groups: the hardware prefetcher follows it, where
 * W8_NR separate rows at stride Kp share each 4 KB page and defeat it. */
#define W8_NR 4
#define W8_CH 64                 /* bytes per row per chunk */
#define W8_STEP (W8_NR * W8_CH) /* bytes of a group per 64 inputs */

/* Reductions in 16 lanes (sums in a fixed lane order, then the lanes in a fixed tree): the
 * compiler keeps IEEE order in scalar loops, which makes them latency-bound. */
static inline float dot_f32(const float *a, const float *b, int n) {
    int i = 0;
    float s = 0.f;
#ifdef Q_VEC
    vf acc[VN16];
    for (int j = 0; j < VN16; j++) acc[j] = vzero();
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < VN16; j++) acc[j] = vadd(acc[j], vmul(vloadu(a + i + j * VL), vloadu(b + i + j * VL)));
    s = vsum16(acc);
#endif
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline float amax_f32(const float *x, int n) {
    int i = 0;
    float a = 0.f;
#ifdef Q_VEC
    vf acc = vzero();
    for (; i + VL <= n; i += VL) acc = vmax(acc, vabs(vloadu(x + i)));
    a = vhmax(acc);
#endif
    for (; i < n; i++) {
        const float v = fabsf(x[i]);
        a = v > a ? v : a;
    }
    return a;
}

#ifdef Q_VEC
/* Cephes expf in VL lanes: e^x = 2^n e^r, n = round(x / ln 2), r = x - n ln 2 (two-part ln 2),
 * degree-5 polynomial; within ~2 ulp. Inputs are clamped to [-88.38, 88.38]. */
static inline vf exp_ps(vf x) {
    x = vmin(vmax(x, vset1(-88.3762626647949f)), vset1(88.3762626647949f));
    const vf n = vround(vmul(x, vset1(1.44269504088896341f)));
    vf r = vsub(x, vmul(n, vset1(0.693359375f)));
    r = vsub(r, vmul(n, vset1(-2.12194440e-4f)));
    const vf z = vmul(r, r);
    vf y = vset1(1.9875691500e-4f);
    y = vadd(vmul(y, r), vset1(1.3981999507e-3f));
    y = vadd(vmul(y, r), vset1(8.3334519073e-3f));
    y = vadd(vmul(y, r), vset1(4.1665795894e-2f));
    y = vadd(vmul(y, r), vset1(1.6666665459e-1f));
    y = vadd(vmul(y, r), vset1(5.0000001201e-1f));
    y = vadd(vadd(vmul(y, z), r), vset1(1.0f));
    return vscale2n(y, n); /* y * 2^n */
}
#endif

/* sc[t] = e^(sc[t] - mx) for t < n (16 at a time in vector lanes, then the tail); returns their sum */
static float exp_shift_sum(float *sc, int64_t n, float mx) {
    float sum = 0.f;
    int64_t t0 = 0;
#ifdef Q_VEC
    const vf mv = vset1(mx);
    vf acc[VN16];
    for (int j = 0; j < VN16; j++) acc[j] = vzero();
    for (; t0 + 16 <= n; t0 += 16)
        for (int j = 0; j < VN16; j++) {
            const vf e = exp_ps(vsub(vloadu(sc + t0 + j * VL), mv));
            vstoreu(sc + t0 + j * VL, e);
            acc[j] = vadd(acc[j], e);
        }
    sum = vsum16(acc);
#endif
    for (int64_t t = t0; t < n; t++) {
        sc[t] = expf(sc[t] - mx);
        sum += sc[t];
    }
    return sum;
}

/* one row x (K) -> q (Kp) u8 = q + 128 (padding: 128, i.e. 0), *sx = s / 127 */
static void quant_row(const float *xr, int K, int Kp, uint8_t *qr, float *sx) {
    float a = amax_f32(xr, K);
    if (!(a >= 1e-30f)) a = 1e-30f;
    const float inv = 127.0f / a;
    for (int k = 0; k < K; k++) {
        float v = nearbyintf(xr[k] * inv);
        v = v > 127.f ? 127.f : (v < -127.f ? -127.f : v);
        qr[k] = (uint8_t)((int)v + 128);
    }
    for (int k = K; k < Kp; k++) qr[k] = 128;
    *sx = a / 127.0f;
}

#if Q_ISA == Q_AVX2
static void split_row(const uint8_t *q, int Kp, uint8_t *xm, int32_t *neg); /* w8_avx2.c */
#endif

/* The int8 rows a product reads (row r of a Lin L at q + r * L->kp): q biased (q + 128), sx the
 * row scales; on AVX2 also each row split into |x| and sign (split_row: xm, 2 * kp bytes a row,
 * and neg), which the int8-weight product reads instead of q. */
typedef struct {
    uint8_t *q, *xm;
    float *sx;
    int32_t *neg;
} Acts;

static Acts acts_alloc(int M, int kmax) {
    Acts a = {(uint8_t *)malloc((size_t)M * kmax), NULL, (float *)malloc(sizeof(float) * M), NULL};
#if Q_ISA == Q_AVX2
    a.xm = (uint8_t *)malloc((size_t)M * 2 * kmax);
    a.neg = (int32_t *)malloc(sizeof(int32_t) * M);
#endif
    return a;
}

static void acts_free(Acts a) {
    free(a.q); free(a.xm); free(a.sx); free(a.neg);
}

/* row r of x (K floats) -> the int8 row r for L */
static void act_row(const Lin *L, const float *xr, int K, const Acts *a, int r) {
    quant_row(xr, K, L->kp, a->q + (size_t)r * L->kp, a->sx + r);
#if Q_ISA == Q_AVX2
    if (L->bits != 4) split_row(a->q + (size_t)r * L->kp, L->kp, a->xm + (size_t)r * 2 * L->kp, a->neg + r);
#endif
}

/* The statements run for r = 0..M-1, rows split over nt threads when M > 1; a single row (the
 * decode step) runs on the calling thread, without a fork/join. Rows are independent. */
#define FOR_ROWS(r, M, nt, ...)                                                                  \
    do {                                                                                         \
        if ((M) > 1) {                                                                           \
            _Pragma("omp parallel for schedule(static) num_threads(nt)") for (int r = 0; r < (M); r++) { __VA_ARGS__ } \
        } else                                                                                   \
            for (int r = 0; r < (M); r++) { __VA_ARGS__ }                                        \
    } while (0)

/* acc[r] = sum_k q[r, k] * w[k] for mm <= 4 rows and one weight row w of a packed group (its
 * 64-byte chunks W8_STEP apart; u8 x s8 -> s32; without Q_BIASED the activations less 128);
 * inlined per constant mm */
static inline __attribute__((always_inline)) void dot_rows(const uint8_t *q, int Kp, const int8_t *w, int mm, int32_t *acc) {
#if Q_ISA == Q_NEON
    for (int r = 0; r < mm; r++) {
        const uint8_t *qr = q + (size_t)r * Kp;
        int32x4_t a = vdupq_n_s32(0);
        for (int k = 0; k < Kp; k += 16) {
            const int8x16_t x = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(qr + k), vdupq_n_u8(0x80)));
            const int8x16_t wv = vld1q_s8(w + (size_t)(k / W8_CH) * W8_STEP + k % W8_CH);
            int16x8_t p = vmull_s8(vget_low_s8(x), vget_low_s8(wv)); /* |x|, |w| <= 127: pairs < 2^15 */
            p = vmlal_s8(p, vget_high_s8(x), vget_high_s8(wv));
            a = vpadalq_s16(a, p);
        }
        acc[r] = vaddvq_s32(a);
    }
#else
    for (int r = 0; r < mm; r++) {
        const uint8_t *qr = q + (size_t)r * Kp;
        int32_t s = 0;
        for (int c = 0; c < Kp / W8_CH; c++)
            for (int i = 0; i < W8_CH; i++) s += (int32_t)qr[c * W8_CH + i] * (int32_t)w[(size_t)c * W8_STEP + i];
        acc[r] = s;
    }
#endif
}

#if Q_ISA == Q_AVX512
/* the four 16-lane sums of a, b, c, d as one 4-lane vector (fewer shuffles than four reductions) */
static inline __m128i hsum4(__m512i a, __m512i b, __m512i c, __m512i d) {
    const __m256i a2 = _mm256_add_epi32(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64(a, 1));
    const __m256i b2 = _mm256_add_epi32(_mm512_castsi512_si256(b), _mm512_extracti64x4_epi64(b, 1));
    const __m256i c2 = _mm256_add_epi32(_mm512_castsi512_si256(c), _mm512_extracti64x4_epi64(c, 1));
    const __m256i d2 = _mm256_add_epi32(_mm512_castsi512_si256(d), _mm512_extracti64x4_epi64(d, 1));
    const __m256i abcd = _mm256_hadd_epi32(_mm256_hadd_epi32(a2, b2), _mm256_hadd_epi32(c2, d2));
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

/* acc[r * 4 + j] = sum_k q[r, k] * w[j][k], the 4 weight rows of a packed group x mm <= 4 activation
 * rows; pf: prefetch the group pf bytes ahead into L2 (gemm_rows) */
static inline __attribute__((always_inline)) void dot_rows_4n(const uint8_t *q, int Kp, const int8_t *w, int mm, size_t pf, int32_t *acc) {
    __m512i z = _mm512_setzero_si512();
    __m512i a00 = z, a01 = z, a02 = z, a03 = z, a10 = z, a11 = z, a12 = z, a13 = z;
    __m512i a20 = z, a21 = z, a22 = z, a23 = z, a30 = z, a31 = z, a32 = z, a33 = z;
    for (int k = 0; k < Kp; k += 64, w += W8_STEP) {
        if (pf)
            for (int j = 0; j < W8_NR; j++) _mm_prefetch((const char *)(w + pf + j * W8_CH), _MM_HINT_T1);
        const __m512i w0 = _mm512_loadu_si512((const void *)w), w1 = _mm512_loadu_si512((const void *)(w + W8_CH));
        const __m512i w2 = _mm512_loadu_si512((const void *)(w + 2 * W8_CH)), w3 = _mm512_loadu_si512((const void *)(w + 3 * W8_CH));
        __m512i x = _mm512_loadu_si512((const void *)(q + k));
        a00 = _mm512_dpbusd_epi32(a00, x, w0); a01 = _mm512_dpbusd_epi32(a01, x, w1);
        a02 = _mm512_dpbusd_epi32(a02, x, w2); a03 = _mm512_dpbusd_epi32(a03, x, w3);
        if (mm > 1) {
            x = _mm512_loadu_si512((const void *)(q + Kp + k));
            a10 = _mm512_dpbusd_epi32(a10, x, w0); a11 = _mm512_dpbusd_epi32(a11, x, w1);
            a12 = _mm512_dpbusd_epi32(a12, x, w2); a13 = _mm512_dpbusd_epi32(a13, x, w3);
        }
        if (mm > 2) {
            x = _mm512_loadu_si512((const void *)(q + 2 * (size_t)Kp + k));
            a20 = _mm512_dpbusd_epi32(a20, x, w0); a21 = _mm512_dpbusd_epi32(a21, x, w1);
            a22 = _mm512_dpbusd_epi32(a22, x, w2); a23 = _mm512_dpbusd_epi32(a23, x, w3);
        }
        if (mm > 3) {
            x = _mm512_loadu_si512((const void *)(q + 3 * (size_t)Kp + k));
            a30 = _mm512_dpbusd_epi32(a30, x, w0); a31 = _mm512_dpbusd_epi32(a31, x, w1);
            a32 = _mm512_dpbusd_epi32(a32, x, w2); a33 = _mm512_dpbusd_epi32(a33, x, w3);
        }
    }
    _mm_storeu_si128((__m128i *)acc, hsum4(a00, a01, a02, a03));
    if (mm > 1) _mm_storeu_si128((__m128i *)(acc + 4), hsum4(a10, a11, a12, a13));
    if (mm > 2) _mm_storeu_si128((__m128i *)(acc + 8), hsum4(a20, a21, a22, a23));
    if (mm > 3) _mm_storeu_si128((__m128i *)(acc + 12), hsum4(a30, a31, a32, a33));
}
#endif

/* y[m, n] (=|+=) the rescaled int32 sum acc of row m and weight row n (+ bias) */
static inline void store_out(const Lin *L, int32_t acc, float sxm, int n, float *dst, int accumulate) {
    float v = (float)(Q_BIASED ? acc - 128 * L->wsum[n] : acc) * sxm * L->scale[n];
    if (L->bias) v = v + L->bias[n];
    *dst = accumulate ? *dst + v : v;
}

#if Q_ISA == Q_AVX512 || Q_ISA == Q_AVX2
/* store_out for the weight rows n..n+3 at once: the same IEEE operations on each output */
static inline void store_out4(const Lin *L, __m128i acc, float sxm, int n, float *dst, int accumulate) {
#if Q_BIASED
    acc = _mm_sub_epi32(acc, _mm_slli_epi32(_mm_loadu_si128((const __m128i *)(L->wsum + n)), 7)); /* acc - 128 * wsum */
#endif
    __m128 v = _mm_cvtepi32_ps(acc);
    v = _mm_mul_ps(_mm_mul_ps(v, _mm_set1_ps(sxm)), _mm_loadu_ps(L->scale + n));
    if (L->bias) v = _mm_add_ps(v, _mm_loadu_ps(L->bias + n));
    if (accumulate) v = _mm_add_ps(_mm_loadu_ps(dst), v);
    _mm_storeu_ps(dst, v);
}
#endif

#if Q_ISA == Q_AVX2
#include "w8_avx2.c" /* split_row, gemm_rows_avx2 */
#endif

/* y[m, n] (=|+=) dot(q_m, w_n) rescaled; ldy: row stride of y. Threads take contiguous runs of
 * 16-row blocks: each streams one contiguous part of the packed weights. */
static void gemm_rows(const Lin *L, const Acts *a, int M, float *y, int ldy, int accumulate, int nt) {
    if (L->bits == 4) { /* int4 weights: q4.c */
        q4_gemm_biased(L, a->q, a->sx, M, y, ldy, accumulate, nt);
        return;
    }
#if Q_ISA == Q_AVX2
    gemm_rows_avx2(L, a, M, y, ldy, accumulate, nt);
#else
    const uint8_t *q = a->q;
    const float *sx = a->sx;
    const int N = L->n, Kp = L->kp;
    const int NB = 16, nblocks = (N + NB - 1) / NB;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int b = 0; b < nblocks; b++) {
        const int n1 = (b + 1) * NB < N ? (b + 1) * NB : N;
        for (int m0 = 0; m0 < M; m0 += 4) {
            const int mm = M - m0 < 4 ? M - m0 : 4;
            const uint8_t *q0 = q + (size_t)m0 * Kp;
            for (int n = b * NB; n < n1; n += W8_NR) { /* one packed group (its padding rows are zero) */
                const int8_t *w = L->w + (size_t)n * Kp;
                const int nr = n1 - n < W8_NR ? n1 - n : W8_NR;
#if Q_ISA == Q_AVX512
                int32_t acc[16];
                /* the last of several passes over the block (of 2+ rows) prefetches the next block, as on AVX2 */
                const size_t pf = M > 4 && m0 + 4 >= M && mm > 1 ? (size_t)NB * Kp : 0;
                switch (mm) {
                case 1: dot_rows_4n(q0, Kp, w, 1, pf, acc); break;
                case 2: dot_rows_4n(q0, Kp, w, 2, pf, acc); break;
                case 3: dot_rows_4n(q0, Kp, w, 3, pf, acc); break;
                default: dot_rows_4n(q0, Kp, w, 4, pf, acc); break;
                }
                for (int r = 0; r < mm; r++) {
                    float *dst = y + (size_t)(m0 + r) * ldy + n;
                    if (nr == W8_NR)
                        store_out4(L, _mm_loadu_si128((const __m128i *)(acc + r * 4)), sx[m0 + r], n, dst, accumulate);
                    else
                        for (int j = 0; j < nr; j++) store_out(L, acc[r * 4 + j], sx[m0 + r], n + j, dst + j, accumulate);
                }
#else
                for (int j = 0; j < nr; j++) {
                    int32_t acc[4] = {0, 0, 0, 0};
                    switch (mm) { /* constant row counts: no per-iteration row tests */
                    case 1: dot_rows(q0, Kp, w + j * W8_CH, 1, acc); break;
                    case 2: dot_rows(q0, Kp, w + j * W8_CH, 2, acc); break;
                    case 3: dot_rows(q0, Kp, w + j * W8_CH, 3, acc); break;
                    default: dot_rows(q0, Kp, w + j * W8_CH, 4, acc); break;
                    }
                    for (int r = 0; r < mm; r++) store_out(L, acc[r], sx[m0 + r], n + j, y + (size_t)(m0 + r) * ldy + n + j, accumulate);
                }
#endif
            }
        }
    }
#endif
}

static void rms_norm_row(const float *x, const float *w, int n, float eps, float *out) {
    const float s = dot_f32(x, x, n);
    const float r = 1.0f / sqrtf(s / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * r);
}

/* a = silu(g) * u for one row of gate/up (g: the gate half, u = g + I); a may be g (in place) */
static void silu_mul_row(const float *g, int I, float *a) {
    const float *u = g + I;
    int i = 0;
#ifdef Q_VEC
    for (; i + 16 <= I; i += 16) /* 16 at a time on every path: the scalar tail starts alike */
        for (int h = i; h < i + 16; h += VL) {
            const vf gv = vloadu(g + h);
            const vf e = exp_ps(vsub(vzero(), gv));
            vstoreu(a + h, vmul(vdiv(gv, vadd(vset1(1.0f), e)), vloadu(u + h)));
        }
#endif
    for (; i < I; i++) a[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void Q_FN(qwen3tts_linear)(const Lin *L, const float *x, int M, float *y, int nt) {
    const Acts a = acts_alloc(M, L->kp);
    for (int r = 0; r < M; r++) act_row(L, x + (size_t)r * L->k, L->k, &a, r);
    gemm_rows(L, &a, M, y, L->n, 0, nt);
    acts_free(a);
}

void Q_FN(qwen3tts_stack_decode)(const Stack *S, int M, float *x, float *out, const float *cos_t, const float *sin_t,
                           const int64_t *pos, int npos, const int64_t *kp, const int64_t *vp, const int64_t *smax, int nt) {
    const int H = S->hidden, nh = S->n_heads, nkv = S->n_kv, D = S->head_dim, I = S->inter;
    const int nqk = nh + nkv, nqkv = nh + 2 * nkv, group = nh / nkv;
    const float scale = 1.0f / sqrtf((float)D);
    int kmax = H > I ? H : I;
    if (nh * D > kmax) kmax = nh * D;
    kmax = (kmax + KALIGN - 1) / KALIGN * KALIGN;
    int64_t lmax = 0;
    for (int r = 0; r < M; r++) lmax = pos[r % npos] + 1 > lmax ? pos[r % npos] + 1 : lmax;
    float *xn = (float *)malloc(sizeof(float) * M * H);
    float *qkv = (float *)malloc(sizeof(float) * M * nqkv * D);
    float *att = (float *)malloc(sizeof(float) * M * nh * D);
    float *gu = (float *)malloc(sizeof(float) * M * 2 * I);
    const Acts a = acts_alloc(M, kmax);
    float *scores = (float *)malloc(sizeof(float) * (size_t)nt * lmax);

    for (int l = 0; l < S->n_layers; l++) {
        const Layer *Ly = S->layers + l;
        FOR_ROWS(r, M, nt, {
            rms_norm_row(x + (size_t)r * H, Ly->in_norm, H, S->eps, xn + (size_t)r * H);
            act_row(&Ly->qkv, xn + (size_t)r * H, H, &a, r);
        });
        gemm_rows(&Ly->qkv, &a, M, qkv, nqkv * D, 0, nt);
        /* q/k RMSNorm per head, RoPE, K/V into the caches (each row its own cache slot) */
        FOR_ROWS(r, M, nt, {
            const int64_t p = pos[r % npos];
            const float *c = cos_t + p * D, *s = sin_t + p * D;
            float *row = qkv + (size_t)r * nqkv * D;
            float tmp[1024];
            for (int h = 0; h < nqk; h++) {
                float *hv = row + (size_t)h * D;
                rms_norm_row(hv, Ly->qk_norm + (size_t)h * D, D, S->eps, tmp);
                const int half = D / 2;
                for (int i = 0; i < half; i++) {
                    hv[i] = tmp[i] * c[i] + (-tmp[i + half]) * s[i];
                    hv[i + half] = tmp[i + half] * c[i + half] + tmp[i] * s[i + half];
                }
            }
            float *kc = (float *)kp[(size_t)l * M + r], *vc = (float *)vp[(size_t)l * M + r];
            const int64_t sm = smax[r];
            for (int g = 0; g < nkv; g++) {
                memcpy(kc + ((size_t)g * sm + p) * D, row + (size_t)(nh + g) * D, sizeof(float) * D);
                memcpy(vc + ((size_t)g * sm + p) * D, row + (size_t)(nqk + g) * D, sizeof(float) * D);
            }
        });
        /* causal GQA attention: row r attends to cache slots [0, pos + 1) */
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int rh = 0; rh < M * nh; rh++) {
            const int r = rh / nh, h = rh % nh, g = h / group;
            const int64_t L = pos[r % npos] + 1, sm = smax[r];
            const float *qh = qkv + (size_t)r * nqkv * D + (size_t)h * D;
            const float *kc = (const float *)kp[(size_t)l * M + r] + (size_t)g * sm * D;
            const float *vc = (const float *)vp[(size_t)l * M + r] + (size_t)g * sm * D;
            float *sc = scores + (size_t)omp_get_thread_num() * lmax;
            float mx = -INFINITY;
            for (int64_t t = 0; t < L; t++) {
                const float *kt = kc + t * D;
                sc[t] = dot_f32(qh, kt, D) * scale;
                mx = sc[t] > mx ? sc[t] : mx;
            }
            const float sum = exp_shift_sum(sc, L, mx);
            float *o = att + (size_t)r * nh * D + (size_t)h * D;
            for (int i = 0; i < D; i++) o[i] = 0.f;
            for (int64_t t = 0; t < L; t++) {
                const float pt = sc[t] / sum, *vt = vc + t * D;
                for (int i = 0; i < D; i++) o[i] += pt * vt[i];
            }
        }
        FOR_ROWS(r, M, nt, act_row(&Ly->o, att + (size_t)r * nh * D, nh * D, &a, r););
        gemm_rows(&Ly->o, &a, M, x, H, 1, nt); /* x += o(att) */
        FOR_ROWS(r, M, nt, {
            rms_norm_row(x + (size_t)r * H, Ly->post_norm, H, S->eps, xn + (size_t)r * H);
            act_row(&Ly->gate_up, xn + (size_t)r * H, H, &a, r);
        });
        gemm_rows(&Ly->gate_up, &a, M, gu, 2 * I, 0, nt);
        FOR_ROWS(r, M, nt, { /* act = silu(gate) * up over the row's gate half, then its int8 row */
            float *g = gu + (size_t)r * 2 * I;
            silu_mul_row(g, I, g);
            act_row(&Ly->down, g, I, &a, r);
        });
        gemm_rows(&Ly->down, &a, M, x, H, 1, nt); /* x += down(act) */
    }
    FOR_ROWS(r, M, nt, {
        if (S->final_norm) rms_norm_row(x + (size_t)r * H, S->final_norm, H, S->eps, out + (size_t)r * H);
        else memcpy(out + (size_t)r * H, x + (size_t)r * H, sizeof(float) * H);
    });
    free(xn); free(qkv); free(att); free(gu); free(scores);
    acts_free(a);
}
