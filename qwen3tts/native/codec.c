/* Native CPU kernels of the codec decoder (see native/__init__.py): SnakeBeta in one pass, the
 * depthwise convolution, the transposed convolutions' overlap-add, the transforms of the
 * Winograd k7 convolutions (codec/winograd.py) and the fused F(4, 7) kernel. Its products of few
 * rows and the transformer pass are in rows.c. */
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
