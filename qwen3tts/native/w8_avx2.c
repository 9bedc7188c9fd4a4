/* The int8 x int8 product of decode.c's w8a8 linears on AVX2 (included by decode.c, which has
 * the packed weight layout, Acts and the float epilogue store_out / store_out4).
 *
 * AVX2 has no u8 x s8 -> s32 dot product: vpmaddubsw multiplies u8 x s8 into int16 pair sums
 * (saturating) and vpmaddwd by ones widens those to int32. Each activation row x is taken as |x|
 * and its sign mask m (-1 where x < 0, else 0), 32 bytes of one then 32 of the other
 * (split_row): vpmaddubsw(|x|, w ^ m) multiplies x >= 0 by w and |x| by ~w = -w - 1 where
 * x < 0, i.e. gives x * w - |x| there (pairs at most 2 * 127 * 128 < 2^15: never saturates), so
 * the int32 sum is sum_k x_k w_k - neg, with neg = the sum of |x_k| over x_k < 0 added back per
 * row. The vpxor runs on any vector pipe, where the textbook vpsignb(w, x) on |x| takes one of
 * the two pipes that vpmaddubsw and vpmaddwd need (on current AMD and Intel cores alike): 2
 * operations on those pipes per 32 products instead of 3. The sums are exact, equal to every
 * other path's. */

static void split_row(const uint8_t *q, int Kp, uint8_t *xm, int32_t *neg) {
    const __m256i bias = _mm256_set1_epi8((char)0x80), z = _mm256_setzero_si256();
    __m256i s = z;
    for (int k = 0; k < Kp; k += 32) {
        const __m256i x = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(q + k)), bias); /* q - 128 */
        const __m256i m = _mm256_cmpgt_epi8(z, x), ax = _mm256_abs_epi8(x);
        _mm256_storeu_si256((__m256i *)(xm + 2 * k), ax);
        _mm256_storeu_si256((__m256i *)(xm + 2 * k + 32), m);
        s = _mm256_add_epi64(s, _mm256_sad_epu8(_mm256_and_si256(ax, m), z)); /* |x| where x < 0, summed by 8 */
    }
    const __m128i s2 = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    *neg = (int32_t)(_mm_cvtsi128_si64(s2) + _mm_extract_epi64(s2, 1));
}

/* the four 8-lane sums of a, b, c, d as one 4-lane vector */
static inline __m128i hsum4(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i abcd = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

/* acc[r * 4 + j] = sum_k x[r, k] * w[j][k] - neg[r] (see above), the 4 weight rows of a packed
 * group x mm <= 2 activation rows of xm (split_row's layout, 2 * Kp bytes a row); 2 rows x 4
 * weight rows of accumulators, the weights read from L1 for each row (memory operands), leave
 * registers for |x|, m and the products. Inputs pf0 <= k < pf1: prefetch the next group's
 * (gemm_rows_avx2). */
static inline __attribute__((always_inline)) void dot_rows_4n_xm(const uint8_t *xm, int Kp, const int8_t *w, int mm, int pf0, int pf1, int32_t *acc) {
    __m256i a[2][4];
    for (int r = 0; r < 2; r++)
        for (int j = 0; j < 4; j++) a[r][j] = _mm256_setzero_si256();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int k = 0; k < Kp; k += 64, w += W8_STEP) {
        if (k >= pf0 && k < pf1) /* the next group's piece into L2 */
            for (int j = 0; j < W8_NR; j++) _mm_prefetch((const char *)(w + (size_t)W8_NR * Kp + j * W8_CH), _MM_HINT_T1);
        for (int h = 0; h < 64; h += 32)
            for (int r = 0; r < mm; r++) {
                const uint8_t *p = xm + (size_t)r * 2 * Kp + 2 * (k + h);
                const __m256i ax = _mm256_loadu_si256((const __m256i *)p), m = _mm256_loadu_si256((const __m256i *)(p + 32));
                for (int j = 0; j < 4; j++) {
                    const __m256i wv = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(w + j * W8_CH + h)), m);
                    a[r][j] = _mm256_add_epi32(a[r][j], _mm256_madd_epi16(_mm256_maddubs_epi16(ax, wv), ones));
                    __asm__("" : "+x"(a[r][j])); /* keeps each sum in its register (no reassociation, no spills) */
                }
            }
    }
    for (int r = 0; r < mm; r++) _mm_storeu_si128((__m128i *)(acc + r * 4), hsum4(a[r][0], a[r][1], a[r][2], a[r][3]));
}

/* gemm_rows on AVX2: each thread takes contiguous runs of 16 weight rows and passes each packed
 * group (in L1 from the second pass) over the rows two at a time. With more than one pass, the
 * passes after the first prefetch the next group into L2, each its share of the inputs: the
 * hardware prefetcher, which keeps a single pass (1 or 2 rows) streaming, stops short while the
 * later passes hit L1, and each group's first pass then waited on memory. */
static void gemm_rows_avx2(const Lin *L, const Acts *a, int M, float *y, int ldy, int accumulate, int nt) {
    const int N = L->n, Kp = L->kp;
    const int NB = 16, nblocks = (N + NB - 1) / NB;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int b = 0; b < nblocks; b++) {
        const int n1 = (b + 1) * NB < N ? (b + 1) * NB : N;
        for (int n = b * NB; n < n1; n += W8_NR) { /* one packed group (its padding rows are zero) */
            const int8_t *w = L->w + (size_t)n * Kp;
            const int nr = n1 - n < W8_NR ? n1 - n : W8_NR;
            for (int m0 = 0; m0 < M; m0 += 2) {
                const int mm = M - m0 < 2 ? M - m0 : 2;
                const uint8_t *x0 = a->xm + (size_t)m0 * 2 * Kp;
                int32_t acc[8];
                const int P = (M + 1) / 2 - 1, p = m0 / 2 - 1, S = Kp / 64; /* pass p of the P after the first */
                const int pf0 = p >= 0 ? p * S / P * 64 : 0, pf1 = p >= 0 ? (p + 1) * S / P * 64 : 0;
                if (mm == 2) dot_rows_4n_xm(x0, Kp, w, 2, pf0, pf1, acc);
                else dot_rows_4n_xm(x0, Kp, w, 1, pf0, pf1, acc);
                for (int r = 0; r < mm; r++) {
                    const __m128i s = _mm_add_epi32(_mm_loadu_si128((const __m128i *)(acc + r * 4)), _mm_set1_epi32(a->neg[m0 + r]));
                    float *dst = y + (size_t)(m0 + r) * ldy + n;
                    if (nr == W8_NR) store_out4(L, s, a->sx[m0 + r], n, dst, accumulate);
                    else {
                        _mm_storeu_si128((__m128i *)(acc + r * 4), s);
                        for (int j = 0; j < nr; j++) store_out(L, acc[r * 4 + j], a->sx[m0 + r], n + j, dst + j, accumulate);
                    }
                }
            }
        }
    }
}
