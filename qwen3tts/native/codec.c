/* Native CPU kernels of the codec decoder (see native/__init__.py): SnakeBeta in one pass, the
 * input / output transforms of the Winograd k7 convolutions (codec/winograd.py) and the
 * few-row float32 linear (native/f32.py). */
#include "vec.h"

/* ------------------------------------------------------------------ SnakeBeta (codec decoder)
 * y = x + inv_beta[c] * sin(x * alpha[c])^2 over channels-last rows (rows, C), one pass
 * (codec/layers.py `SnakeBeta`: alpha = exp(log alpha), inv_beta = 1 / (exp(log beta) + 1e-9),
 * both given). sin^2 has period pi: v = k pi/2 + r, |r| <= pi/4 (Cody-Waite reduction in three
 * parts, Cephes' constants doubled: k * part is exact for |v| < 8192), then sin^2 v = sin^2 r
 * (k even) or 1 - sin^2 r (k odd), sin^2 r = z (1 - z/3 + 2z^2/45 - z^3/315 + 2z^4/14175
 * - 2z^5/467775), z = r^2 (the series; truncation < 4e-9 at |r| = pi/4). Within ~2e-7 absolute
 * of the exact sin^2; lanes with |v| > 8192 use libm's sinf. The AVX2 path does the same
 * operations in 8 lanes (the same floats); the portable one calls sinf. */
#ifdef Q_VEC
static inline vf sin2_ps(vf v) {
    const vf ax = vabs(v);
    const int big = vgt_bits(ax, vset1(8192.f));
    const vf k = vround(vmul(ax, vset1(0.636619772367581343f)));
    vf r = vfnmadd(k, vset1(1.5703125f), ax);
    r = vfnmadd(k, vset1(4.837512969970703125e-4f), r);
    r = vfnmadd(k, vset1(7.54978995489188216e-8f), r);
    const vf z = vmul(r, r);
    vf p = vset1(-4.27563e-6f);              /* -2 / 467775 */
    p = vfmadd(p, z, vset1(1.41093474e-4f));  /* 2 / 14175 */
    p = vfmadd(p, z, vset1(-3.17460317e-3f)); /* -1 / 315 */
    p = vfmadd(p, z, vset1(4.44444444e-2f));  /* 2 / 45 */
    p = vfmadd(p, z, vset1(-3.33333333e-1f)); /* -1 / 3 */
    p = vfmadd(p, z, vset1(1.0f));
    vf res = vodd_flip(k, vmul(p, z));
    if (big) {
        float buf[VL], in[VL];
        vstoreu(buf, res);
        vstoreu(in, v);
        for (int i = 0; i < VL; i++)
            if (big >> i & 1) {
                const float sv = sinf(in[i]);
                buf[i] = sv * sv;
            }
        res = vloadu(buf);
    }
    return res;
}
#endif


/* one channels-last row of C channels */
static inline void snake_row(const float *xr, float *yr, const float *alpha, const float *inv_beta, int C) {
    int c = 0;
#ifdef Q_VEC
    for (; c + 16 <= C; c += 16) /* 16 at a time on every path: the scalar tail starts alike */
        for (int h = c; h < c + 16; h += VL) {
            const vf v = vloadu(xr + h);
            const vf s2 = sin2_ps(vmul(v, vloadu(alpha + h)));
            vstoreu(yr + h, vadd(v, vmul(vloadu(inv_beta + h), s2)));
        }
#endif
    for (; c < C; c++) {
        const float s = sinf(xr[c] * alpha[c]);
        yr[c] = xr[c] + inv_beta[c] * (s * s);
    }
}

void Q_FN(qwen3tts_snake)(const float *x, float *y, const float *alpha, const float *inv_beta, int64_t rows, int C, int nt) {
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < rows; r++) snake_row(x + r * C, y + r * C, alpha, inv_beta, C);
}

/* the same over NCW rows: x (B * C, T), channel c = row % C */
void Q_FN(qwen3tts_snake_ncw)(const float *x, float *y, const float *alpha, const float *inv_beta, int64_t rows, int C, int64_t T, int nt) {
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < rows; r++) {
        const float a = alpha[r % C], ib = inv_beta[r % C];
        const float *xr = x + r * T;
        float *yr = y + r * T;
        int64_t t = 0;
#ifdef Q_VEC
        const vf av = vset1(a), ibv = vset1(ib);
        for (; t + 16 <= T; t += 16)
            for (int h = 0; h < 16; h += VL) {
                const vf v = vloadu(xr + t + h);
                const vf s2 = sin2_ps(vmul(v, av));
                vstoreu(yr + t + h, vadd(v, vmul(ibv, s2)));
            }
#endif
        for (; t < T; t++) {
            const float s = sinf(xr[t] * a);
            yr[t] = xr[t] + ib * (s * s);
        }
    }
}

/* ------------------------------------------------------------------ depthwise convolution
 * y (B, T, C) = the valid depthwise convolution of [h (B, Lh, C); x (B, Lx, C)] (channels-last
 * rows; h: a streaming step's history, read in place, Lh may be 0) with wt (k, C) (tap-major)
 * at dilation d, T = Lh + Lx - (k - 1) d, + bias after the taps: the ConvNeXt blocks' k7
 * convolution (codec/layers.py; ops/native_backend.py). Per output, one fused multiply-add per
 * tap in tap order (fmaf in the scalar lanes), so every path gives the same floats and an
 * output does not depend on where its chunk starts. */
static inline const float *dw_row(const float *h, int64_t Lh, int64_t ldh, const float *x, int64_t ldx, int64_t t, int C,
                                  int64_t b) {
    return t < Lh ? h + b * ldh + t * C : x + b * ldx + (t - Lh) * C;
}

void Q_FN(qwen3tts_dwconv)(const float *h, int64_t Lh, int64_t ldh, const float *x, int64_t Lx, int64_t ldx, int B, int C,
                           const float *wt, int k, int d, const float *bias, float *y, int nt) {
    const int64_t T = Lh + Lx - (int64_t)(k - 1) * d;
    if (T <= 0) return;
#pragma omp parallel for schedule(static) num_threads(nt) if (T * B * C * k >= (1 << 17))
    for (int64_t r = 0; r < B * T; r++) {
        const int64_t b = r / T, t = r % T;
        float *yr = y + r * C;
        int c = 0;
#ifdef Q_VEC
        for (; c + VL <= C; c += VL) {
            vf acc = vzero();
            for (int j = 0; j < k; j++)
                acc = vfmadd(vloadu(wt + (size_t)j * C + c), vloadu(dw_row(h, Lh, ldh, x, ldx, t + (int64_t)j * d, C, b) + c), acc);
            vstoreu(yr + c, bias ? vadd(acc, vloadu(bias + c)) : acc);
        }
#endif
        for (; c < C; c++) {
            float acc = 0.f;
            for (int j = 0; j < k; j++) acc = fmaf(wt[(size_t)j * C + c], dw_row(h, Lh, ldh, x, ldx, t + (int64_t)j * d, C, b)[c], acc);
            yr[c] = bias ? acc + bias[c] : acc;
        }
    }
}

/* ------------------------------------------------------------------ transposed convolution, overlap-add
 * The output of a transposed convolution (kernel k <= 2 s, stride s) from its product
 * z (B, N, k, C) (input column t times the weight's k taps): y (B, N * s, C) with
 * y[t s + j] = (z[t, j] + z[t - 1, s + j]) + bias for j < k - s (z[-1, s + j] = tail[j], the
 * previous chunk's spill), z[t, j] + bias otherwise; then tail (B, k - s, C) = z[N - 1, s..k)
 * (codec/layers.py `CausalConvTranspose1d`, the same additions in the same order as its torch
 * form). Rows of C channels contiguous; tail's batch stride ldt. */
void Q_FN(qwen3tts_overlap_add)(const float *z, int B, int64_t N, int k, int s, int C, float *tail, int64_t ldt, const float *bias,
                                float *y, int nt) {
    const int nt_ = k - s;
#pragma omp parallel for schedule(static) num_threads(nt) if ((int64_t)B * N * s * C >= (1 << 16))
    for (int64_t r = 0; r < (int64_t)B * N * s; r++) {
        const int64_t b = r / (N * s), t = r / s % N;
        const int j = (int)(r % s);
        const float *zr = z + ((b * N + t) * k + j) * C;
        const float *pr = j >= nt_ ? NULL : t > 0 ? z + ((b * N + t - 1) * k + s + j) * C : tail + b * ldt + (int64_t)j * C;
        float *yr = y + r * C;
        int c = 0;
#ifdef Q_VEC
        for (; c + VL <= C; c += VL) {
            vf v = vloadu(zr + c);
            if (pr) v = vadd(v, vloadu(pr + c));
            vstoreu(yr + c, bias ? vadd(v, vloadu(bias + c)) : v);
        }
#endif
        for (; c < C; c++) {
            float v = zr[c];
            if (pr) v += pr[c];
            yr[c] = bias ? v + bias[c] : v;
        }
    }
    for (int b = 0; b < B; b++)
        for (int j = 0; j < nt_; j++)
            memcpy(tail + b * ldt + (int64_t)j * C, z + (((int64_t)b * N + N - 1) * k + s + j) * C, sizeof(float) * C);
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

#ifdef Q_VEC
/* one tile row of the input transform in registers, VL channels at a time, over all n x n
 * coefficients (constant n: unrolled, each product one multiply with a broadcast operand). The
 * same values as the plain loop below: a zero coefficient or a missing (zero) input row adds an
 * exact zero, so the sums agree with the sparse ones in order and rounding. */
static inline __attribute__((always_inline)) void wino_in_row(const float *const *xk, int n, int C, float *out0, int64_t si,
                                                              const float *BT) {
    for (int c = 0; c < C; c += VL) {
        vf xv[32];
        for (int k = 0; k < n; k++) xv[k] = xk[k] ? vloadn(xk[k] + c, C - c) : vzero();
        for (int i = 0; i < n; i++) {
            vf acc = vmul(vset1(BT[i * n]), xv[0]);
            for (int k = 1; k < n; k++) acc = vadd(acc, vmul(vset1(BT[i * n + k]), xv[k]));
            vstoren(out0 + i * si + c, C - c, acc);
        }
    }
}

/* one tile row of the output transform (+ bias), its first pmax outputs, the same way */
static inline __attribute__((always_inline)) void wino_out_row(const float *const *Mr, int n, int m, int C, float *dst0, int64_t ds,
                                                               int pmax, const float *bias, const float *AT) {
    for (int c = 0; c < C; c += VL) {
        vf mv[32];
        for (int i = 0; i < n; i++) mv[i] = vloadn(Mr[i] + c, C - c);
        const vf bv = bias ? vloadn(bias + c, C - c) : vzero();
        for (int p = 0; p < m; p++) {
            if (p >= pmax) break;
            vf acc = vmul(vset1(AT[p * n]), mv[0]);
            for (int i = 1; i < n; i++) acc = vadd(acc, vmul(vset1(AT[p * n + i]), mv[i]));
            if (bias) acc = vadd(acc, bv);
            vstoren(dst0 + p * ds + c, C - c, acc);
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
#ifdef Q_VEC
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
#ifdef Q_VEC
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
 * rows x 32 output channels of FMA accumulators per block on AVX-512, 4 x 24 on AVX2 (sums over
 * k in order, one FMA each: the same floats). AVX-512 and AVX2 (elsewhere it returns -2; the
 * caller checks qwen3tts_wino_fused_available).
 * `epi` (or NULL): the rest of a residual unit applied to each chunk's outputs while they are in
 * cache: y = res + W2 snake(y) + b2, epi = {res (B, ldr, Cout), alpha2, inv_beta2 (Cout,),
 * W2 (Cout, Cout) as (in, out) row-major, b2 (Cout,)}; needs TR % d == 0 (a chunk is whole
 * tiles of every phase: m d consecutive outputs each) and C == Cout. */
#ifdef Q_VEC
/* rows x vectors of accumulators per block: 8 x 2 of 32 zmm; 4 x 3 of 16 ymm (with the 3 B
 * vectors and the broadcast: all 16), 7 loads per 12 FMAs */
#define MIX_ROWS (VL == 16 ? 8 : 4)
#define MIX_VECS (VL == 16 ? 2 : 3)
static inline __attribute__((always_inline)) void mix_block(const float *A, int64_t lda, int rb, const float *Bm, int K, int N, int c0,
                                                            float *Cm, int64_t ldc) {
    const int full = !VMASK_FREE && N - c0 >= MIX_VECS * VL; /* plain loads (see vloadn) */
    vmask mk[MIX_VECS];
    for (int v = 0; v < MIX_VECS; v++) mk[v] = vlanes(N - c0 - v * VL);
    vf acc[MIX_ROWS][MIX_VECS];
    for (int r = 0; r < MIX_ROWS; r++)
        for (int v = 0; v < MIX_VECS; v++) acc[r][v] = vzero();
    for (int k = 0; k < K; k++) {
        vf b[MIX_VECS];
        for (int v = 0; v < MIX_VECS; v++) b[v] = full ? vloadu(Bm + (int64_t)k * N + c0 + v * VL) : vmaskload(Bm + (int64_t)k * N + c0 + v * VL, mk[v]);
        for (int r = 0; r < rb; r++) {
            const vf a = vset1(A[r * lda + k]);
            for (int v = 0; v < MIX_VECS; v++) acc[r][v] = vfmadd(a, b[v], acc[r][v]);
        }
    }
    for (int r = 0; r < rb; r++)
        for (int v = 0; v < MIX_VECS; v++)
            if (N - c0 > v * VL) vstoren(Cm + r * ldc + c0 + v * VL, N - c0 - v * VL, acc[r][v]);
}

/* one block of rb <= MIX_ROWS rows x MIX_VECS vectors at column c0 of Cm = A @ Bm (rows of A K
 * apart, of Cm and res N apart), then (+ bias) (+ res) while it is in L1 (outside the FMA loop:
 * no spills there) */
static inline void mix_tile(const float *Ar, int rb, const float *Bm, int K, int N, int c0, float *Cr, const float *bias,
                            const float *Rr) {
    switch (rb) { /* constant row counts: the accumulators stay in registers */
#define MIX_CASE(nr) case nr: mix_block(Ar, K, nr, Bm, K, N, c0, Cr, N); break;
    MIX_CASE(1) MIX_CASE(2) MIX_CASE(3)
#if MIX_ROWS > 4
    MIX_CASE(4) MIX_CASE(5) MIX_CASE(6) MIX_CASE(7)
#endif
#undef MIX_CASE
    default: mix_block(Ar, K, MIX_ROWS, Bm, K, N, c0, Cr, N); break;
    }
    if (bias || Rr)
        for (int r = 0; r < rb; r++)
            for (int c = c0; c < N && c < c0 + MIX_VECS * VL; c += VL) {
                vf v = vloadn(Cr + (int64_t)r * N + c, N - c);
                if (bias) v = vadd(v, vloadn(bias + c, N - c));
                if (Rr) v = vadd(v, vloadn(Rr + (int64_t)r * N + c, N - c));
                vstoren(Cr + (int64_t)r * N + c, N - c, v);
            }
}

/* Cm (R, N) = A (R, K) @ Bm (K, N), rows contiguous: the Winograd mixes (row blocks outer) */
static void mix_rows(const float *A, int R, int K, const float *Bm, int N, float *Cm) {
    for (int r0 = 0; r0 < R; r0 += MIX_ROWS)
        for (int c0 = 0; c0 < N; c0 += MIX_VECS * VL)
            mix_tile(A + (int64_t)r0 * K, R - r0 < MIX_ROWS ? R - r0 : MIX_ROWS, Bm, K, N, c0, Cm + (int64_t)r0 * N, NULL, NULL);
}

#define EPI_ROWS 32 /* rows of the epilogue's 1x1 convolution at a time */

/* the same + bias (N,) + res (R, N), column panels outer (a panel of Bm stays in L1 over the
 * rows): the residual unit's 1x1 convolution in the epilogue */
static void mix_cols(const float *A, int R, int K, const float *Bm, int N, float *Cm, const float *bias, const float *res) {
    for (int c0 = 0; c0 < N; c0 += MIX_VECS * VL)
        for (int r0 = 0; r0 < R; r0 += MIX_ROWS)
            mix_tile(A + (int64_t)r0 * K, R - r0 < MIX_ROWS ? R - r0 : MIX_ROWS, Bm, K, N, c0, Cm + (int64_t)r0 * N, bias,
                     res + (int64_t)r0 * N);
}
#endif

int Q_FN(qwen3tts_wino_fused)(const float *h, int64_t Lh, int64_t ldh, const float *x, int64_t Lx, int64_t ldx, int B, int C, int Cout,
                        const float *U, const float *BT, const float *AT, const float *bias, int64_t q, int64_t T, int64_t ldb,
                        float *y, int TR, int d, const float *const *epi, int64_t ldr, int nt) {
#ifdef Q_VEC
    enum { m = 4, n = 10 };
    const int64_t R = (int64_t)B * q * d;
    const int64_t chunks = (R + TR - 1) / TR;
    int fail = 0;
#pragma omp parallel num_threads(nt)
    {
        float *V = aligned_alloc(64, ((size_t)n * TR * C * sizeof(float) + 63) / 64 * 64);
        float *M = aligned_alloc(64, ((size_t)n * TR * Cout * sizeof(float) + 63) / 64 * 64);
        float *Z = epi ? aligned_alloc(64, (size_t)EPI_ROWS * Cout * sizeof(float)) : NULL;
        if (!V || !M || (epi && !Z)) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(static)
        for (int64_t ch = 0; ch < chunks; ch++) {
            if (!V || !M || (epi && !Z)) continue;
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
            if (epi) /* the chunk's whole tiles (TR % d == 0): per batch row one run of consecutive outputs */
                for (int64_t u = r0 / d, u1 = (r0 + rows) / d; u < u1;) {
                    const int64_t b = u / q, ue = (b + 1) * q < u1 ? (b + 1) * q : u1;
                    const int64_t o0 = (u - b * q) * m * d, o1 = (ue - b * q) * m * d < T ? (ue - b * q) * m * d : T;
                    u = ue;
                    if (o0 >= o1) continue;
                    for (int64_t g = o0; g < o1; g += EPI_ROWS) { /* EPI_ROWS rows of snake output in L1 */
                        const int S = (int)(o1 - g < EPI_ROWS ? o1 - g : EPI_ROWS);
                        float *yr = y + (b * ldb + g) * Cout;
                        const float *rg = epi[0] + (b * ldr + g) * Cout;
                        for (int s = 0; s < S; s++) {
                            for (int c = 0; c < Cout; c += 16) _mm_prefetch((const char *)(rg + (int64_t)s * Cout + c), _MM_HINT_T0);
                            snake_row(yr + (int64_t)s * Cout, Z + (int64_t)s * Cout, epi[1], epi[2], Cout);
                        }
                        mix_cols(Z, S, Cout, epi[3], Cout, yr, epi[4], rg);
                    }
                }
        }
        free(V);
        free(M);
        free(Z);
    }
    return fail ? -1 : 0;
#else
    (void)h; (void)Lh; (void)ldh; (void)x; (void)Lx; (void)ldx; (void)B; (void)C; (void)Cout; (void)U; (void)BT; (void)AT;
    (void)bias; (void)q; (void)T; (void)ldb; (void)y; (void)TR; (void)d; (void)epi; (void)ldr; (void)nt;
    return -2;
#endif
}

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

int Q_FN(qwen3tts_linear_w16f)(const float *x, int M, int K, const int16_t *q, const float *scale, const float *bias, int N,
                               float *y, int nt) {
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
        for (int p = 0; p < P; p++) {
            if (!pf) continue;
            const int16_t *pq = q + (size_t)p * K * W16_NR;
            const float *pw = pf; /* the panel in float: converted once here, or (two row blocks or fewer) in each block */
            if (M > 2 * W16_MR)
                w16_panel_float(pq, K, pf);
            else
                pw = NULL;
            const int n0 = p * W16_NR, nn = N - n0 < W16_NR ? N - n0 : W16_NR;
            const int nb = (mend - mc + W16_MR - 1) / W16_MR; /* blocks of even size: 9 rows as 5 + 4 (6 + 3 leaves FMA latency idle) */
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
