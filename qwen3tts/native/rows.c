/* Native CPU products of the codec decoder for few activation rows (see native/__init__.py):
 * float32 weights (native/f32.py), int8 and int16 weights with float32 rows (native/w8f.py: the
 * quantized modes' products and Winograd mixes), and the decoder transformer's pass in one call
 * (native/codec_stack.py), which runs on the int8 product. */
#include "vec.h"

/* ------------------------------------------------------------------ float32 linear, few rows
 * y (M, N) = x (M, K) @ w (N, K)^T (+ bias), for the codec decoder's few-row products
 * (native/f32.py): 4 weight rows x mm <= 4 activation rows per pass in 16 lanes (FMA), each
 * weight row read from memory once (then from L1 for the next 4 activation rows), one
 * horizontal sum per output. Summation order: 16 lanes over k, then the lanes (AVX2: 8 lanes). */
#ifdef Q_VEC
/* the sum of a vector's lanes: in 16 lanes _mm512_reduce_add_ps's order */
static inline float vhsum(vf a) {
#if VL == 16
    return _mm512_reduce_add_ps(a);
#else
    const __m128 s4 = _mm_add_ps(_mm256_extractf128_ps(a, 1), _mm256_castps256_ps128(a));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
#endif
}

/* acc[i][j] += x_i[k..k+VL) * wv[j] for the mm activation rows (tail lanes of x masked) */
static inline __attribute__((always_inline)) void fma_4n(vf acc[4][4], const vf *wv, const float *const *xr, int k, int K, int mm) {
    for (int i = 0; i < mm; i++) {
        const vf xv = vloadn(xr[i] + k, K - k);
        for (int j = 0; j < 4; j++) acc[i][j] = vfmadd(xv, wv[j], acc[i][j]);
    }
}

static inline __attribute__((always_inline)) void hsum_4n(vf acc[4][4], int mm, float *out) {
    for (int i = 0; i < mm; i++)
        for (int j = 0; j < 4; j++) out[i * 4 + j] = vhsum(acc[i][j]);
}

static inline __attribute__((always_inline)) void dot_f32_4n(const float *const *xr, int K, const float *const *wr, int mm,
                                                             const float *pf, int pass, int passes, float *out) {
    vf acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = vzero();
    /* the next 4 weight rows (contiguous): pass p of P over these rows fetches their p-th P-th,
     * one cache line per row every P steps */
    size_t at = ((size_t)pass * K / passes) & ~(size_t)15;
    int tick = 0;
    for (int k = 0; k < K; k += VL) {
        if (pf && (k & 15) == 0) {
            for (int j = 0; j < 4; j++) _mm_prefetch((const char *)(pf + (size_t)j * K + at), _MM_HINT_T0);
            if (++tick == passes) tick = 0, at += 16;
        }
        vf wv[4];
        for (int j = 0; j < 4; j++) wv[j] = vloadn(wr[j] + k, K - k);
        fma_4n(acc, wv, xr, k, K, mm);
    }
    hsum_4n(acc, mm, out);
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
#ifdef Q_VEC
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

/* ------------------------------------------------------------------ int8 weights, float32 rows
 * y (M, N) = (x (M, K) @ q (N, K)^T) * scale (N,) (+ bias): weight-only int8 (per output row
 * scale) with float32 activations, for the codec decoder's weight-bound products in the
 * quantized modes (codec_quant.py, native/w8f.py). q is in interleaved groups of 4 rows (ldq >= K
 * bytes per row, a multiple of 64, zero past K; rows past N zero), so every weight load is a full
 * one and a group is one sequential stream. The same 4 x 4 blocks as the float32 kernel above; each int8 weight is converted to float exactly, so a row's sum is the float32 kernel's
 * on the integer weights: M does not change a row's result. */
#ifdef Q_VEC
static inline vf vload_i8(const int8_t *p) {
#if VL == 16
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
#else
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
#endif
}

/* one interleaved group of 4 weight rows (decode.c's layout: 64-byte pieces of rows 0..3 in turn,
 * native/stack.py pack_rows): row j's inputs k..k+VL are at g + (k / 64) * 256 + j * 64 + k % 64 */
static inline __attribute__((always_inline)) void dot_w8_4n(const float *const *xr, int K, const int8_t *g, int mm, float *out) {
    vf acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = vzero();
    for (int k = 0; k < K; k += VL) {
        const int8_t *p = g + (size_t)(k >> 6) * 256 + (k & 63);
        vf wv[4];
        for (int j = 0; j < 4; j++) wv[j] = vload_i8(p + j * 64);
        fma_4n(acc, wv, xr, k, K, mm);
    }
    hsum_4n(acc, mm, out);
}

/* the same group converted to float once (wf: 4 rows of Kp floats, zero past K), for many
 * activation rows: the same operations on the same values, so the same floats as dot_w8_4n */
static void group_to_float(const int8_t *g, int Kp, float *wf) {
    for (int k = 0; k < Kp; k += VL)
        for (int j = 0; j < 4; j++) vstoreu(wf + (size_t)j * Kp + k, vload_i8(g + (size_t)(k >> 6) * 256 + j * 64 + (k & 63)));
}

static inline __attribute__((always_inline)) void dot_wf_4n(const float *const *xr, int K, const float *wf, int Kp, int mm, float *out) {
    vf acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = vzero();
    for (int k = 0; k < K; k += VL) {
        vf wv[4];
        for (int j = 0; j < 4; j++) wv[j] = vloadu(wf + (size_t)j * Kp + k);
        fma_4n(acc, wv, xr, k, K, mm);
    }
    hsum_4n(acc, mm, out);
}
#endif

#define W8F_FLOAT_KMAX 1536 /* 4 float rows: 24 KB */

/* activation rows per pass: 4 x 4 accumulators fit AVX-512's 32 registers; AVX2's 16 hold 4 x 2 */
#if defined(Q_VEC) && VL == 8
#define W8_ROWS 2
#else
#define W8_ROWS 4
#endif

void Q_FN(qwen3tts_linear_w8f)(const float *x, int M, int K, const int8_t *q, int64_t ldq, const float *scale, const float *bias,
                               int N, float *y, int nt) {
#pragma omp parallel num_threads(nt)
    {
#ifdef Q_VEC
    /* AVX2, 4+ passes over a group whose float copy fits L1 beside the activation rows: its
     * weights converted to float once (fewer passes, longer rows, or AVX-512's 4 rows per pass:
     * converting in each pass costs less) */
    const int Kp = (K + 63) & ~63;
    float *wf = VL == 8 && M > 3 * W8_ROWS && Kp <= W8F_FLOAT_KMAX ? aligned_alloc(64, (size_t)4 * Kp * sizeof(float)) : NULL;
#endif
#pragma omp for schedule(static)
    for (int n0 = 0; n0 < N; n0 += 4) {
        const int8_t *g = q + (size_t)n0 * ldq; /* the group of rows n0..n0+3 */
#ifdef Q_VEC
        if (wf) group_to_float(g, Kp, wf);
#endif
        for (int m0 = 0; m0 < M; m0 += W8_ROWS) {
            const int mm = M - m0 < W8_ROWS ? M - m0 : W8_ROWS;
            const float *xr[4];
            for (int i = 0; i < 4; i++) xr[i] = x + (size_t)(m0 + (i < mm ? i : 0)) * K;
            float out[16];
#ifdef Q_VEC
            if (wf) switch (mm) { /* constant row counts */
            case 1: dot_wf_4n(xr, K, wf, Kp, 1, out); break;
            case 2: dot_wf_4n(xr, K, wf, Kp, 2, out); break;
            case 3: dot_wf_4n(xr, K, wf, Kp, 3, out); break;
            default: dot_wf_4n(xr, K, wf, Kp, 4, out); break;
            }
            else switch (mm) {
            case 1: dot_w8_4n(xr, K, g, 1, out); break;
            case 2: dot_w8_4n(xr, K, g, 2, out); break;
            case 3: dot_w8_4n(xr, K, g, 3, out); break;
            default: dot_w8_4n(xr, K, g, 4, out); break;
            }
#else
            for (int i = 0; i < mm; i++)
                for (int j = 0; j < 4; j++) {
                    float s = 0.f;
                    for (int k = 0; k < K; k++) s += xr[i][k] * (float)g[(size_t)(k >> 6) * 256 + j * 64 + (k & 63)];
                    out[i * 4 + j] = s;
                }
#endif
            for (int i = 0; i < mm; i++)
                for (int j = 0; j < 4 && n0 + j < N; j++)
                    y[(size_t)(m0 + i) * N + n0 + j] = out[i * 4 + j] * scale[n0 + j] + (bias ? bias[n0 + j] : 0.f);
        }
    }
#ifdef Q_VEC
    free(wf);
#endif
    }
}

/* ------------------------------------------------------------------ int16 weights, float32 rows
 * y (M, N) = (x (M, K) @ q (N, K)^T) * scale (N,) (+ bias) with int16 weight values (one scale per
 * output column): the Winograd channel mixes of the quantized codec (codec_quant.py), whose
 * transformed weights int8 would round too coarsely (the output transform amplifies their
 * rounding). q is in panels of W16_NR output columns, k major: (ceil(N / 16), K, 16), zero past
 * N. Each thread converts a panel to float once (exactly) per chunk of W16_MC rows and multiplies
 * it by blocks of W16_MR rows (broadcast activations, a vector of 16 columns: AVX2's 12
 * accumulators); for two row blocks or fewer it converts the weights in each block instead. Every output is one chain of multiply-adds over k in order (FMAs on AVX2 and
 * AVX-512, the same floats on both), so a row's result depends neither on M nor on the chunks. */
#define W16_NR 16
#define W16_MR 6
#define W16_MC 96 /* activation rows per chunk: a chunk of x stays in L2 while every panel passes */
#define W16_PF 64 /* k ahead: the int16 weights prefetched while converted in the loop */

static void w16_panel_float(const int16_t *p, int K, float *pf) {
    const size_t n = (size_t)K * W16_NR;
#ifdef Q_VEC
    for (size_t i = 0; i < n; i += VL)
#if VL == 16
        vstoreu(pf + i, _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(p + i)))));
#else
        vstoreu(pf + i, _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(p + i)))));
#endif
#else
    for (size_t i = 0; i < n; i++) pf[i] = (float)p[i];
#endif
}

#ifdef Q_VEC
/* 16 weights of one k of a panel as VN16 float vectors: the float panel's, or converted here */
static inline __attribute__((always_inline)) void w16_row(const float *pf, const int16_t *pq, int k, vf *w) {
    if (pf) {
        for (int v = 0; v < VN16; v++) w[v] = vloadu(pf + (size_t)k * W16_NR + v * VL);
        return;
    }
#if VL == 16
    w[0] = _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(pq + (size_t)k * W16_NR))));
#else
    const __m256i h = _mm256_loadu_si256((const __m256i *)(pq + (size_t)k * W16_NR));
    w[0] = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(h)));
    w[1] = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(h, 1)));
#endif
}

/* out (mr, 16) = x (mr rows of ldx) @ the panel (K, 16): its float copy pf, or (pf NULL) its int16 values pq */
static inline __attribute__((always_inline)) void w16_block(const float *x, int64_t ldx, int K, const float *pf, const int16_t *pq,
                                                            int mr, float *out) {
    vf acc[W16_MR][VN16];
    for (int i = 0; i < W16_MR; i++)
        for (int v = 0; v < VN16; v++) acc[i][v] = vzero();
    for (int k = 0; k < K; k++) {
        vf w[VN16];
        if (!pf && (k & 1) == 0) _mm_prefetch((const char *)(pq + (size_t)(k + W16_PF) * W16_NR), _MM_HINT_T0);
        w16_row(pf, pq, k, w);
        for (int i = 0; i < mr; i++) {
            const vf xb = vset1(x[(size_t)i * ldx + k]);
            for (int v = 0; v < VN16; v++) acc[i][v] = vfmadd(xb, w[v], acc[i][v]);
        }
    }
    for (int i = 0; i < mr; i++)
        for (int v = 0; v < VN16; v++) vstoreu(out + i * W16_NR + v * VL, acc[i][v]);
}
#endif

/* rows mc..mend of y (M, N) for panel p of q: the panel converted to float in pf (more than two
 * row blocks), or converted in each block */
static void w16_panel_rows(const float *x, int M, int K, const int16_t *q, const float *scale, const float *bias, int N, float *y,
                           int p, int mc, int mend, float *pf) {
    const int16_t *pq = q + (size_t)p * K * W16_NR;
    const float *pw = pf;
    if (M > 2 * W16_MR)
        w16_panel_float(pq, K, pf);
    else
        pw = NULL;
    const int n0 = p * W16_NR, nn = N - n0 < W16_NR ? N - n0 : W16_NR;
    const int nb = (mend - mc + W16_MR - 1) / W16_MR; /* blocks of even size: 13 rows as 5 + 4 + 4 */
    for (int b = 0, m0 = mc, mr; b < nb; b++, m0 += mr) {
        mr = (mend - m0 + nb - b - 1) / (nb - b);
        const float *xr = x + (size_t)m0 * K;
        float out[W16_MR * W16_NR];
#ifdef Q_VEC
        switch (mr) { /* constant row counts */
        case 1: w16_block(xr, K, K, pw, pq, 1, out); break;
        case 2: w16_block(xr, K, K, pw, pq, 2, out); break;
        case 3: w16_block(xr, K, K, pw, pq, 3, out); break;
        case 4: w16_block(xr, K, K, pw, pq, 4, out); break;
        case 5: w16_block(xr, K, K, pw, pq, 5, out); break;
        default: w16_block(xr, K, K, pw, pq, 6, out); break;
        }
#else
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < W16_NR; j++) {
                float s = 0.f;
                for (int k = 0; k < K; k++) s += xr[(size_t)i * K + k] * (pw ? pw[(size_t)k * W16_NR + j] : (float)pq[(size_t)k * W16_NR + j]);
                out[i * W16_NR + j] = s;
            }
#endif
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < nn; j++)
                y[(size_t)(m0 + i) * N + n0 + j] = out[i * W16_NR + j] * scale[n0 + j] + (bias ? bias[n0 + j] : 0.f);
    }
}

/* n products at once (the n channel mixes of a Winograd convolution): y_i (M, N) = x_i @ q_i^T *
 * scale_i for i < n, x_i = x + i * sx, y_i = y + i * sy (floats), no bias; one parallel loop over
 * every (product, panel) pair. n = 1 with a bias: one product. The same sums as n calls. */
int Q_FN(qwen3tts_linear_w16f)(int n, const float *x, int64_t sx, int M, int K, const int16_t *const *q, const float *const *scale,
                               const float *bias, int N, float *y, int64_t sy, int nt) {
    const int P = (N + W16_NR - 1) / W16_NR;
    int failed = 0;
#pragma omp parallel num_threads(nt)
    {
    float *pf = aligned_alloc(64, (size_t)K * W16_NR * sizeof(float));
    if (!pf) {
#pragma omp atomic write
        failed = 1;
    }
    for (int mc = 0; mc < M; mc += W16_MC) {
        const int mend = M - mc < W16_MC ? M : mc + W16_MC;
#pragma omp for schedule(static) nowait
        for (int t = 0; t < n * P; t++) {
            if (!pf) continue;
            const int i = t / P;
            w16_panel_rows(x + i * sx, M, K, q[i], scale[i], bias, N, y + i * sy, t % P, mc, mend, pf);
        }
    }
    free(pf);
    }
    return failed ? -1 : 0;
}

/* ------------------------------------------------------------------ codec decoder transformer, few rows
 * The codec decoder's transformer (codec/transformer.py DecoderTransformer) for a pass of
 * N <= RING_CHUNK frames of B rows, in one call, in the quantized modes (every product with int8
 * weights: qwen3tts_linear_w8f above, so each product gives the floats the seam's w8f backend
 * gives): h = input_proj(x); per layer h += ls1 * o(attention(rope(qkv(rms(h))))), h += ls2 *
 * down(silu(gate) * up)(rms(h)); out = output_proj(rms(h)). Attention is over each row's ring of post-RoPE keys / values
 * ((B, Hkv, R, D) per layer; position p in slot p % R): the pass's keys are written first, then
 * query p sees the slots holding positions in (p - W, p]. On a streaming step of one frame the
 * ~20 torch ops per layer cost more than its products; this is one call for the stack.
 * w: per layer CS_FIELDS int64 values (pointers, and each product's row stride in bytes), in
 * the order of CS_* below, then CS_HEAD_FIELDS (CS_IN_* / CS_OUT_*: the input and output
 * projections, the final norm); dims: H, I, then window_attention_rows' (heads, kv heads, D, W,
 * R), then L (the latent width: x and out are (B * N, L));
 * cos / sin: (N, D) rows of the pass's positions, row b's at b * cs_stride; pos (B,): each row's
 * first position; kv: per layer its key ring and value ring. */
enum { CS_IN_NORM, CS_QKV_Q, CS_QKV_LD, CS_QKV_SCALE, CS_QKV_BIAS, CS_O_Q, CS_O_LD, CS_O_SCALE, CS_O_BIAS, CS_LS1, CS_POST_NORM,
       CS_GU_Q, CS_GU_LD, CS_GU_SCALE, CS_GU_BIAS, CS_DOWN_Q, CS_DOWN_LD, CS_DOWN_SCALE, CS_DOWN_BIAS, CS_LS2, CS_FIELDS };
enum { CS_IN_Q, CS_IN_LD, CS_IN_SCALE, CS_IN_BIAS, CS_FINAL_NORM, CS_OUT_Q, CS_OUT_LD, CS_OUT_SCALE, CS_OUT_BIAS, CS_HEAD_FIELDS };

#define CS_PTR(l, f) ((const void *)(intptr_t)w[(size_t)(l) * CS_FIELDS + (f)])

/* x (rows, n) += ls (n) * y (rows, n) */
static void add_scaled_rows(float *x, const float *ls, const float *y, int rows, int n) {
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < n; i++) x[(size_t)r * n + i] += ls[i] * y[(size_t)r * n + i];
}

/* softmax(q . k_t / sqrt(D)) v over the ring slots visible from position p (those holding a
 * position in (p - W, p]; last: the newest position written) for one query head: o (D).
 * sc: R floats, idx: R ints of scratch. */
static void ring_attend(const float *qh, const float *kc, const float *vc, int R, int D, int64_t p, int64_t last, int W, float *sc,
                        int *idx, float *o) {
    const float scale = 1.0f / sqrtf((float)D);
    float mx = -INFINITY;
    int n = 0;
    for (int j = 0; j < R; j++) {
        const int64_t kp = last - ((((last - j) % R) + R) % R); /* the position slot j holds (< 0: none yet) */
        if (kp < 0 || kp > p || kp <= p - W) continue;
        idx[n] = j;
        sc[n] = dot_f32(qh, kc + (size_t)j * D, D) * scale;
        mx = sc[n] > mx ? sc[n] : mx;
        n++;
    }
    const float sum = exp_shift_sum(sc, n, mx);
    for (int i = 0; i < D; i++) o[i] = 0.f;
    for (int t = 0; t < n; t++) {
        const float pt = sc[t] / sum, *vt = vc + (size_t)idx[t] * D;
        for (int i = 0; i < D; i++) o[i] += pt * vt[i];
    }
}

/* The attention of a pass over rows of the fused projection qkv (B * N, (nh + 2 nkv) D), row
 * b * N + i at position pos[b] + i: RoPE on its q and k heads (in place), its keys / values into
 * the rings (B, nkv, R, D) at slot position % R, then each query head's ring attention: att
 * (B * N, nh * D). dims: nh, nkv, D, W, R. scratch: nt * R floats and nt * R ints. */
static void window_attention_rows(float *qkv, const int32_t *dims, int B, int N, const float *cos_t, const float *sin_t,
                                  int64_t cs_stride, const int64_t *pos, float *kring, float *vring, float *att, float *scores,
                                  int *idx, int nt) {
    const int nh = dims[0], nkv = dims[1], D = dims[2], W = dims[3], R = dims[4];
    const int M = B * N, nq = nh * D, nqkv = (nh + 2 * nkv) * D, group = nh / nkv, half = D / 2;
    for (int r = 0; r < M; r++) {
        const int b = r / N, i = r % N;
        const int64_t p = pos[b] + i;
        const float *c = cos_t + b * cs_stride + (size_t)i * D, *s = sin_t + b * cs_stride + (size_t)i * D;
        float *row = qkv + (size_t)r * nqkv;
        for (int h = 0; h < nh + nkv; h++) { /* x * cos + rotate_half(x) * sin */
            float *hv = row + (size_t)h * D;
            for (int k = 0; k < half; k++) {
                const float a = hv[k], e = hv[k + half];
                hv[k] = a * c[k] + (-e) * s[k];
                hv[k + half] = e * c[k + half] + a * s[k + half];
            }
        }
        const int64_t slot = p % R;
        for (int g = 0; g < nkv; g++) {
            memcpy(kring + (((size_t)b * nkv + g) * R + slot) * D, row + nq + (size_t)g * D, sizeof(float) * D);
            memcpy(vring + (((size_t)b * nkv + g) * R + slot) * D, row + nq + (size_t)(nkv + g) * D, sizeof(float) * D);
        }
    }
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int rh = 0; rh < M * nh; rh++) {
        const int r = rh / nh, h = rh % nh, b = r / N, g = h / group, t = omp_get_thread_num();
        const size_t ring = ((size_t)b * nkv + g) * R * D;
        ring_attend(qkv + (size_t)r * nqkv + (size_t)h * D, kring + ring, vring + ring, R, D, pos[b] + r % N, pos[b] + N - 1, W,
                    scores + (size_t)t * R, idx + (size_t)t * R, att + (size_t)r * nq + (size_t)h * D);
    }
}

int Q_FN(qwen3tts_codec_stack)(const int64_t *w, int n_layers, const int32_t *dims, float eps, const float *xin, float *out,
                                int B, int N, const float *cos_t, const float *sin_t, int64_t cs_stride, const int64_t *pos,
                                const int64_t *kv, int nt) {
    const int H = dims[0], I = dims[1], nh = dims[2], nkv = dims[3], D = dims[4], R = dims[6], L = dims[7];
    const int M = B * N, nq = nh * D, nqkv = (nh + 2 * nkv) * D;
    const int64_t *hw = w + (size_t)n_layers * CS_FIELDS; /* the projections in and out, the final norm */
    float *x = (float *)malloc(sizeof(float) * M * H);
    float *xn = (float *)malloc(sizeof(float) * M * H);
    float *qkv = (float *)malloc(sizeof(float) * M * nqkv);
    float *att = (float *)malloc(sizeof(float) * M * nq);
    float *gu = (float *)malloc(sizeof(float) * M * 2 * I);
    float *act = (float *)malloc(sizeof(float) * M * I);
    float *y = (float *)malloc(sizeof(float) * M * H);
    float *scores = (float *)malloc(sizeof(float) * (size_t)nt * R);
    int *idx = (int *)malloc(sizeof(int) * (size_t)nt * R);
    if (!x || !xn || !qkv || !att || !gu || !act || !y || !scores || !idx) {
        free(x); free(xn); free(qkv); free(att); free(gu); free(act); free(y); free(scores); free(idx);
        return -1;
    }
    Q_FN(qwen3tts_linear_w8f)(xin, M, L, (const int8_t *)(intptr_t)hw[CS_IN_Q], hw[CS_IN_LD], (const float *)(intptr_t)hw[CS_IN_SCALE],
                              (const float *)(intptr_t)hw[CS_IN_BIAS], H, x, nt);
    for (int l = 0; l < n_layers; l++) {
        float *kring = (float *)(intptr_t)kv[2 * l], *vring = (float *)(intptr_t)kv[2 * l + 1];
        for (int r = 0; r < M; r++) rms_norm_row(x + (size_t)r * H, (const float *)CS_PTR(l, CS_IN_NORM), H, eps, xn + (size_t)r * H);
        Q_FN(qwen3tts_linear_w8f)(xn, M, H, (const int8_t *)CS_PTR(l, CS_QKV_Q), w[(size_t)l * CS_FIELDS + CS_QKV_LD],
                                  (const float *)CS_PTR(l, CS_QKV_SCALE), (const float *)CS_PTR(l, CS_QKV_BIAS), nqkv, qkv, nt);
        window_attention_rows(qkv, dims + 2, B, N, cos_t, sin_t, cs_stride, pos, kring, vring, att, scores, idx, nt);
        Q_FN(qwen3tts_linear_w8f)(att, M, nq, (const int8_t *)CS_PTR(l, CS_O_Q), w[(size_t)l * CS_FIELDS + CS_O_LD],
                                  (const float *)CS_PTR(l, CS_O_SCALE), (const float *)CS_PTR(l, CS_O_BIAS), H, y, nt);
        add_scaled_rows(x, (const float *)CS_PTR(l, CS_LS1), y, M, H);
        for (int r = 0; r < M; r++) rms_norm_row(x + (size_t)r * H, (const float *)CS_PTR(l, CS_POST_NORM), H, eps, xn + (size_t)r * H);
        Q_FN(qwen3tts_linear_w8f)(xn, M, H, (const int8_t *)CS_PTR(l, CS_GU_Q), w[(size_t)l * CS_FIELDS + CS_GU_LD],
                                  (const float *)CS_PTR(l, CS_GU_SCALE), (const float *)CS_PTR(l, CS_GU_BIAS), 2 * I, gu, nt);
        for (int r = 0; r < M; r++) silu_mul_row(gu + (size_t)r * 2 * I, I, act + (size_t)r * I);
        Q_FN(qwen3tts_linear_w8f)(act, M, I, (const int8_t *)CS_PTR(l, CS_DOWN_Q), w[(size_t)l * CS_FIELDS + CS_DOWN_LD],
                                  (const float *)CS_PTR(l, CS_DOWN_SCALE), (const float *)CS_PTR(l, CS_DOWN_BIAS), H, y, nt);
        add_scaled_rows(x, (const float *)CS_PTR(l, CS_LS2), y, M, H);
    }
    for (int r = 0; r < M; r++) rms_norm_row(x + (size_t)r * H, (const float *)(intptr_t)hw[CS_FINAL_NORM], H, eps, xn + (size_t)r * H);
    Q_FN(qwen3tts_linear_w8f)(xn, M, H, (const int8_t *)(intptr_t)hw[CS_OUT_Q], hw[CS_OUT_LD], (const float *)(intptr_t)hw[CS_OUT_SCALE],
                              (const float *)(intptr_t)hw[CS_OUT_BIAS], L, out, nt);
    free(x); free(xn); free(qkv); free(att); free(gu); free(act); free(y); free(scores); free(idx);
    return 0;
}
