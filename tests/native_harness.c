/* A command-line harness of the native kernels for architectures this host only emulates
 * (tests/test_native_cross.py: aarch64 under qemu-user). It reads the inputs of each case from
 * DIR (raw little-endian arrays written by the test), runs the case under every instruction set
 * the CPU supports and writes each output to DIR/<case>_y_<isa>; the test checks them against
 * torch on the host. Sizes are fixed here and in the test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common.h"

int qwen3tts_set_isa(int isa);
const char *qwen3tts_isa_name(int isa);
void qwen3tts_linear(const Lin *L, const float *x, int M, float *y, int nt);
void qwen3tts_snake(const float *x, float *y, const float *alpha, const float *inv_beta, int64_t rows, int C, int nt);
void qwen3tts_wino_in(const float *h, int64_t Lh, int64_t ldh, const float *x, int64_t Lx, int64_t ldx, int64_t off, int B, int C,
                      float *V, int64_t si, int64_t sr, const float *BT, int m, int n, int d, int64_t q, int nt);
void qwen3tts_wino_out(const float *const *M, int64_t sr, int B, int64_t T, int64_t ldb, int C, float *y, const float *AT,
                       const float *bias, int m, int n, int d, int64_t q, int nt);
void qwen3tts_linear_f32(const float *x, int M, int K, const float *w, const float *bias, int N, float *y, int nt);
void qwen3tts_q4_gemm(const Lin *L, const int8_t *x, const float *sx, int M, float *y, int nt);

enum { LM = 3, LK = 100, LKP = 128, LN = 37, LNP = 40 };                 /* w8a8 linear (LNP: whole groups of 4 rows) */
enum { SR = 5, SC = 37 };                                                /* SnakeBeta */
enum { WL = 40, WC = 12, WCO = 10, WD = 2, WT = WL - 6 * WD, WQ = 4, WROWS = WQ * WD }; /* Winograd F(4, 7) */
enum { FM = 3, FK = 40, FN = 9 };                                        /* float32 few-row linear */
enum { QM = 5, QK = 100, QKP = 128, QN = 37, QNP = 48, QG = 32 };       /* w4a8 linear (q4.c) */

static const char *dir;

static void *input(const char *name, size_t bytes) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    void *p = malloc(bytes);
    if (!f || !p || fread(p, 1, bytes, f) != bytes) {
        fprintf(stderr, "cannot read %zu bytes from %s\n", bytes, path);
        exit(2);
    }
    fclose(f);
    return p;
}

static void output(const char *name, const char *isa, const void *p, size_t bytes) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s_y_%s", dir, name, isa);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, bytes, f) != bytes) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    Lin L = {input("lin_w", LNP * LKP), input("lin_scale", 4 * LN), input("lin_wsum", 4 * LN), input("lin_bias", 4 * LN), LN, LK, LKP};
    const float *lx = input("lin_x", 4 * LM * LK);
    const float *sx = input("sn_x", 4 * SR * SC), *sa = input("sn_a", 4 * SC), *sib = input("sn_ib", 4 * SC);
    const float *wx = input("wi_x", 4 * WL * WC), *wU = input("wi_U", 4 * 10 * WC * WCO), *wBT = input("wi_BT", 4 * 100),
                *wAT = input("wi_AT", 4 * 40), *wb = input("wi_b", 4 * WCO);
    const float *fx = input("lf_x", 4 * FM * FK), *fw = input("lf_w", 4 * FN * FK), *fb = input("lf_b", 4 * FN);
    Lin Q = {input("q4_w", QNP * QKP / 2), input("q4_s", 2 * QNP * (QKP / QG)), NULL, input("q4_bias", 4 * QN), QN, QK, QKP, 4, QG};
    const int8_t *qxq = input("q4_xq", QM * QKP);
    const float *qsx = input("q4_sx", 4 * QM), *qx = input("q4_x", 4 * QM * QK);
    int ran = 0;
    for (int isa = 0; isa < Q_NISA; isa++) {
        if (qwen3tts_set_isa(isa) != 0) continue;
        const char *name = qwen3tts_isa_name(isa);
        float ly[LM * LN], sy[SR * SC], wy[WT * WCO], fy[FM * FN];
        qwen3tts_linear(&L, lx, LM, ly, 2);
        output("lin", name, ly, sizeof ly);
        qwen3tts_snake(sx, sy, sa, sib, SR, SC, 2);
        output("sn", name, sy, sizeof sy);
        static float V[10 * WROWS * WC], Mx[10 * WROWS * WCO];
        qwen3tts_wino_in(NULL, 0, 0, wx, WL, WL, 0, 1, WC, V, WROWS * WC, WC, wBT, 4, 10, WD, WQ, 2);
        for (int i = 0; i < 10; i++) /* the channel mixes M[i] = V[i] @ U[i], k in order */
            for (int r = 0; r < WROWS; r++)
                for (int o = 0; o < WCO; o++) {
                    float s = 0.f;
                    for (int c = 0; c < WC; c++) s += V[(i * WROWS + r) * WC + c] * wU[(i * WC + c) * WCO + o];
                    Mx[(i * WROWS + r) * WCO + o] = s;
                }
        const float *Mp[10];
        for (int i = 0; i < 10; i++) Mp[i] = Mx + i * WROWS * WCO;
        qwen3tts_wino_out(Mp, WCO, 1, WT, WT, WCO, wy, wAT, wb, 4, 10, WD, WQ, 2);
        output("wi", name, wy, sizeof wy);
        qwen3tts_linear_f32(fx, FM, FK, fw, fb, FN, fy, 2);
        output("lf", name, fy, sizeof fy);
        float qy[QM * QN];
        qwen3tts_q4_gemm(&Q, qxq, qsx, QM, qy, 2);
        output("q4g", name, qy, sizeof qy);
        qwen3tts_linear(&Q, qx, QM, qy, 2);
        output("q4l", name, qy, sizeof qy);
        printf("%s\n", name);
        ran++;
    }
    return ran ? 0 : 1;
}
