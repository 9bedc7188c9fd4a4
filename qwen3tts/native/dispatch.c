/* The native library's public names: each calls the kernel variant of the instruction set chosen
 * at run time (see common.h). The default is the best one the CPU has; qwen3tts_set_isa forces
 * another (a lower one, to test or measure it; one the CPU lacks is refused). Also: the version,
 * the ISA in use, and the structures' layout (qwen3tts_abi) for the loader to check. */
#include <stddef.h>
#include "common.h"

static const char *const NAMES[Q_NISA] = {"portable", "avx2", "avx512", "neon"};

typedef struct {
#define Q_SLOT(ret, name, sfx, args) ret(*name) args;
    Q_KERNELS(Q_SLOT, unused)
} Table;

#define Q_ENTRY(ret, name, sfx, args) Q_CAT(name, sfx),
static const Table TABLES[Q_NISA] = {
    [Q_PORTABLE] = {Q_KERNELS(Q_ENTRY, portable)},
#ifdef Q_X86
    [Q_AVX2] = {Q_KERNELS(Q_ENTRY, avx2)},
    [Q_AVX512] = {Q_KERNELS(Q_ENTRY, avx512)},
#endif
#ifdef Q_ARM64
    [Q_NEON] = {Q_KERNELS(Q_ENTRY, neon)},
#endif
};

int qwen3tts_isa_supported(int isa) {
    switch (isa) {
    case Q_PORTABLE: return 1;
#ifdef Q_X86
    case Q_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Q_AVX512:
        __builtin_cpu_init();
        return qwen3tts_isa_supported(Q_AVX2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
#endif
#ifdef Q_ARM64
    case Q_NEON: return 1; /* Advanced SIMD is part of the aarch64 baseline */
#endif
    default: return 0;
    }
}

static int best_isa(void) {
    for (int i = Q_NISA - 1; i > 0; i--)
        if (qwen3tts_isa_supported(i)) return i;
    return Q_PORTABLE;
}

static int g_isa = -1; /* set at the first call (or by qwen3tts_set_isa) */

static inline const Table *table(void) {
    int i = __atomic_load_n(&g_isa, __ATOMIC_RELAXED);
    if (i < 0) __atomic_store_n(&g_isa, i = best_isa(), __ATOMIC_RELAXED);
    return &TABLES[i];
}

int qwen3tts_isa(void) { return (int)(table() - TABLES); }
const char *qwen3tts_isa_name(int isa) { return isa >= 0 && isa < Q_NISA ? NAMES[isa] : "unknown"; }

/* isa < 0: the best the CPU has. Returns 0, or -1 (and changes nothing) for an unsupported one. */
int qwen3tts_set_isa(int isa) {
    if (isa < 0) isa = best_isa();
    if (isa >= Q_NISA || !qwen3tts_isa_supported(isa)) return -1;
    __atomic_store_n(&g_isa, isa, __ATOMIC_RELAXED);
    return 0;
}

int qwen3tts_native_version(void) { return 2; }
/* the AVX-512 VNNI kernels are in use */
int qwen3tts_native_vnni(void) { return qwen3tts_isa() == Q_AVX512; }
/* qwen3tts_wino_fused runs (else it returns -2): the vector ISAs of x86 */
int qwen3tts_wino_fused_available(void) { return qwen3tts_isa() == Q_AVX512 || qwen3tts_isa() == Q_AVX2; }

/* The structures' layout: sizes and offsets in a fixed order (native/__init__.py ABI_FIELDS).
 * Writes min(n, count) values and returns the count. */
int qwen3tts_abi(int32_t *out, int n) {
    const int32_t v[] = {
        sizeof(Lin), offsetof(Lin, w), offsetof(Lin, scale), offsetof(Lin, wsum), offsetof(Lin, bias), offsetof(Lin, n),
        offsetof(Lin, k), offsetof(Lin, kp), offsetof(Lin, bits), offsetof(Lin, group),
        sizeof(Layer), offsetof(Layer, in_norm), offsetof(Layer, post_norm), offsetof(Layer, qk_norm), offsetof(Layer, qkv),
        offsetof(Layer, o), offsetof(Layer, gate_up), offsetof(Layer, down),
        sizeof(Stack), offsetof(Stack, n_layers), offsetof(Stack, hidden), offsetof(Stack, n_heads), offsetof(Stack, n_kv),
        offsetof(Stack, head_dim), offsetof(Stack, inter), offsetof(Stack, eps), offsetof(Stack, layers), offsetof(Stack, final_norm),
    };
    const int count = (int)(sizeof(v) / sizeof(v[0]));
    for (int i = 0; i < n && i < count; i++) out[i] = v[i];
    return count;
}

#define Q_WRAP_void(name, params, args) void name params { table()->name args; }
#define Q_WRAP_int(name, params, args) int name params { return table()->name args; }

Q_WRAP_void(qwen3tts_linear, (const Lin *L, const float *x, int M, float *y, int nt), (L, x, M, y, nt))
Q_WRAP_void(qwen3tts_stack_decode,
            (const Stack *S, int M, float *x, float *out, const float *cos_t, const float *sin_t, const int64_t *pos, int npos,
             const int64_t *kp, const int64_t *vp, const int64_t *smax, int nt),
            (S, M, x, out, cos_t, sin_t, pos, npos, kp, vp, smax, nt))
Q_WRAP_void(qwen3tts_snake, (const float *x, float *y, const float *alpha, const float *inv_beta, int64_t rows, int C, int nt),
            (x, y, alpha, inv_beta, rows, C, nt))
Q_WRAP_void(qwen3tts_snake_ncw,
            (const float *x, float *y, const float *alpha, const float *inv_beta, int64_t rows, int C, int64_t T, int nt),
            (x, y, alpha, inv_beta, rows, C, T, nt))
Q_WRAP_void(qwen3tts_dwconv,
            (const float *h, int64_t Lh, int64_t ldh, const float *x, int64_t Lx, int64_t ldx, int B, int C, const float *wt, int k,
             int d, const float *bias, float *y, int nt),
            (h, Lh, ldh, x, Lx, ldx, B, C, wt, k, d, bias, y, nt))
Q_WRAP_void(qwen3tts_overlap_add,
            (const float *z, int B, int64_t N, int k, int s, int C, float *tail, int64_t ldt, const float *bias, float *y, int nt),
            (z, B, N, k, s, C, tail, ldt, bias, y, nt))
Q_WRAP_void(qwen3tts_wino_in,
            (const float *h, int64_t Lh, int64_t ldh, const float *x, int64_t Lx, int64_t ldx, int64_t off, int B, int C, float *V,
             int64_t si, int64_t sr, const float *BT, int m, int n, int d, int64_t q, int nt),
            (h, Lh, ldh, x, Lx, ldx, off, B, C, V, si, sr, BT, m, n, d, q, nt))
Q_WRAP_void(qwen3tts_wino_out,
            (const float *const *M, int64_t sr, int B, int64_t T, int64_t ldb, int C, float *y, const float *AT, const float *bias,
             int m, int n, int d, int64_t q, int nt),
            (M, sr, B, T, ldb, C, y, AT, bias, m, n, d, q, nt))
Q_WRAP_int(qwen3tts_wino_fused,
           (const float *h, int64_t Lh, int64_t ldh, const float *x, int64_t Lx, int64_t ldx, int B, int C, int Cout, const float *U,
            const float *BT, const float *AT, const float *bias, int64_t q, int64_t T, int64_t ldb, float *y, int TR, int d,
            const float *const *epi, int64_t ldr, int nt),
           (h, Lh, ldh, x, Lx, ldx, B, C, Cout, U, BT, AT, bias, q, T, ldb, y, TR, d, epi, ldr, nt))
Q_WRAP_void(qwen3tts_linear_f32, (const float *x, int M, int K, const float *w, const float *bias, int N, float *y, int nt),
            (x, M, K, w, bias, N, y, nt))
Q_WRAP_void(qwen3tts_linear_w8f,
            (const float *x, int M, int K, const int8_t *q, int64_t ldq, const float *scale, const float *bias, int N, float *y, int nt),
            (x, M, K, q, ldq, scale, bias, N, y, nt))
Q_WRAP_int(qwen3tts_linear_w16f,
           (int n, const float *x, int64_t sx, int M, int K, const int16_t *const *q, const float *const *scale, const float *bias, int N,
            float *y, int64_t sy, int nt),
           (n, x, sx, M, K, q, scale, bias, N, y, sy, nt))
Q_WRAP_void(qwen3tts_q4_gemm, (const Lin *L, const int8_t *x, const float *sx, int M, float *y, int nt), (L, x, sx, M, y, nt))
Q_WRAP_int(qwen3tts_codec_stack,
            (const int64_t *w, int n_layers, const int32_t *dims, float eps, const float *xin, float *out, int B, int N,
             const float *cos_t, const float *sin_t, int64_t cs_stride, const int64_t *pos, const int64_t *kv, int nt),
            (w, n_layers, dims, eps, xin, out, B, N, cos_t, sin_t, cs_stride, pos, kv, nt))
