/* Shared by the native library's sources: headers, the structures of decode.c (also read by the
 * dispatcher for qwen3tts_abi) and the instruction-set switch.
 *
 * The kernels (decode.c, codec.c) are compiled once per instruction set, by isa_<name>.c, which
 * sets Q_ISA and the compiler's target for the whole translation unit, then includes them; every
 * exported kernel is named Q_FN(name) = name_<isa>. dispatch.c exports the public names and calls
 * the variant chosen at run time (qwen3tts_set_isa). One build serves every CPU of its
 * architecture: only the variant the CPU supports ever runs. */
#ifndef QWEN3TTS_COMMON_H
#define QWEN3TTS_COMMON_H
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#define Q_PORTABLE 0
#define Q_AVX2 1   /* AVX2 + FMA */
#define Q_AVX512 2 /* AVX-512 F/BW/VL/DQ + VNNI */
#define Q_NEON 3   /* aarch64 Advanced SIMD */
#define Q_NISA 4

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define Q_X86 1
#elif defined(__aarch64__)
#include <arm_neon.h>
#define Q_ARM64 1
#endif

typedef struct {
    const int8_t *w;    /* int8: rows in interleaved groups of 4 (decode.c W8_NR); bits == 4: the packed int4 blocks of q4.c */
    const float *scale; /* (N,); bits == 4: the bfloat16 group scales of q4.c */
    const int32_t *wsum; /* (N,) sum_k w_nk (int8 only) */
    const float *bias;  /* (N,) or NULL */
    int32_t n, k, kp;
    int32_t bits, group; /* 4: int4 weights in groups of `group` inputs (q4.c); else int8 per channel */
} Lin;

typedef struct {
    const float *in_norm, *post_norm, *qk_norm; /* (H,), (H,), ((nh + nkv) * D,) */
    Lin qkv, o, gate_up, down;
} Layer;

typedef struct {
    int32_t n_layers, hidden, n_heads, n_kv, head_dim, inter;
    float eps;
    const Layer *layers;
    const float *final_norm; /* (H,) or NULL */
} Stack;

#define Q_CAT2(a, b) a##_##b
#define Q_CAT(a, b) Q_CAT2(a, b)
#define Q_HIDDEN __attribute__((visibility("hidden")))

/* The kernels, one declaration per instruction set (defined in decode.c / codec.c / q4.c). */
#define Q_KERNELS(X, sfx)                                                                                                          \
    X(void, qwen3tts_linear, sfx, (const Lin *L, const float *x, int M, float *y, int nt))                                       \
    X(void, qwen3tts_stack_decode, sfx, (const Stack *S, int M, float *x, float *out, const float *cos_t, const float *sin_t,    \
                                         const int64_t *pos, int npos, const int64_t *kp, const int64_t *vp, const int64_t *smax, \
                                         int nt))                                                                                  \
    X(void, qwen3tts_snake, sfx, (const float *x, float *y, const float *alpha, const float *inv_beta, int64_t rows, int C, int nt)) \
    X(void, qwen3tts_snake_ncw, sfx, (const float *x, float *y, const float *alpha, const float *inv_beta, int64_t rows, int C,   \
                                      int64_t T, int nt))                                                                          \
    X(void, qwen3tts_dwconv, sfx, (const float *h, int64_t Lh, int64_t ldh, const float *x, int64_t Lx, int64_t ldx, int B, int C, \
                                   const float *wt, int k, int d, const float *bias, float *y, int nt))                            \
    X(void, qwen3tts_overlap_add, sfx, (const float *z, int B, int64_t N, int k, int s, int C, float *tail, int64_t ldt,         \
                                        const float *bias, float *y, int nt))                                                      \
    X(void, qwen3tts_wino_in, sfx, (const float *h, int64_t Lh, int64_t ldh, const float *x, int64_t Lx, int64_t ldx, int64_t off, \
                                    int B, int C, float *V, int64_t si, int64_t sr, const float *BT, int m, int n, int d, int64_t q, \
                                    int nt))                                                                                       \
    X(void, qwen3tts_wino_out, sfx, (const float *const *M, int64_t sr, int B, int64_t T, int64_t ldb, int C, float *y,          \
                                     const float *AT, const float *bias, int m, int n, int d, int64_t q, int nt))                  \
    X(int, qwen3tts_wino_fused, sfx, (const float *h, int64_t Lh, int64_t ldh, const float *x, int64_t Lx, int64_t ldx, int B,    \
                                      int C, int Cout, const float *U, const float *BT, const float *AT, const float *bias,       \
                                      int64_t q, int64_t T, int64_t ldb, float *y, int TR, int d, const float *const *epi,        \
                                      int64_t ldr, int nt))                                                                        \
    X(void, qwen3tts_linear_f32, sfx, (const float *x, int M, int K, const float *w, const float *bias, int N, float *y, int nt))  \
    X(void, qwen3tts_linear_w8f, sfx, (const float *x, int M, int K, const int8_t *q, int64_t ldq, const float *scale,           \
                                       const float *bias, int N, float *y, int nt))                                                \
    X(int, qwen3tts_linear_w16f, sfx, (int n, const float *x, int64_t sx, int M, int K, const int16_t *const *q,                \
                                       const float *const *scale, const float *bias, int N, float *y, int64_t sy, int nt))                                                \
    X(void, qwen3tts_q4_gemm, sfx, (const Lin *L, const int8_t *x, const float *sx, int M, float *y, int nt))                    \
    X(int, qwen3tts_codec_stack, sfx, (const int64_t *w, int n_layers, const int32_t *dims, float eps, const float *xin,         \
                                        float *out, int B, int N, const float *cos_t, const float *sin_t, int64_t cs_stride,        \
                                        const int64_t *pos, const int64_t *kv, int nt))

#define Q_DECLARE(ret, name, sfx, args) Q_HIDDEN ret Q_CAT(name, sfx) args;
Q_KERNELS(Q_DECLARE, portable)
#ifdef Q_X86
Q_KERNELS(Q_DECLARE, avx2)
Q_KERNELS(Q_DECLARE, avx512)
#endif
#ifdef Q_ARM64
Q_KERNELS(Q_DECLARE, neon)
#endif

#ifdef Q_ISA /* inside an isa_<name>.c */
#define Q_FN(name) Q_CAT(name, Q_SFX)
#endif
#endif
