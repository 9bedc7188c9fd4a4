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
int qwen3tts_codec_stack(const int64_t *w, int n_layers, const int32_t *dims, float eps, const float *xin, float *out, int B, int N,
                          const float *cos_t, const float *sin_t, int64_t cs_stride, const int64_t *pos, const int64_t *kv, int nt);

enum { LM = 3, LK = 100, LKP = 128, LN = 37, LNP = 40 };                 /* w8a8 linear (LNP: whole groups of 4 rows) */
enum { SR = 5, SC = 37 };                                                /* SnakeBeta */
enum { WL = 40, WC = 12, WCO = 10, WD = 2, WT = WL - 6 * WD, WQ = 4, WROWS = WQ * WD }; /* Winograd F(4, 7) */
enum { FM = 3, FK = 40, FN = 9 };                                        /* float32 few-row linear */
enum { QM = 5, QK = 100, QKP = 128, QN = 37, QNP = 48, QG = 32 };       /* w4a8 linear (q4.c) */
/* codec transformer pass (codec.c qwen3tts_codec_stack); its table: CT_FIELDS offsets into the
 * int8 / float blobs (-1: none) or row strides (the LD fields) */
enum { CL = 2, CB = 2, CN = 3, CLAT = 8, CH = 16, CI = 16, CNH = 2, CNKV = 1, CD = 8, CW = 4, CR = 35, CT_FIELDS = CL * 20 + 9 };

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

static int exists(const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
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
    /* the codec transformer case, where the test wrote it */
    const int cs = exists("cs_sizes");
    int64_t table[CT_FIELDS];
    static float rings[CL * 2 * CB * CNKV * CR * CD];
    const float *cx = NULL, *ccos = NULL, *csin = NULL, *crings = NULL;
    const int64_t *cpos = NULL;
    if (cs) {
        const int64_t *sizes = input("cs_sizes", 16), *off = input("cs_table", 8 * CT_FIELDS);
        const int8_t *w8 = input("cs_w8", (size_t)sizes[0]);
        const float *fl = input("cs_f", 4 * (size_t)sizes[1]);
        for (int i = 0; i < CT_FIELDS; i++) {
            const int f = i < CL * 20 ? i % 20 : i - CL * 20 + 100; /* a layer's field, or 100 + a head field */
            const int ld = f == 2 || f == 6 || f == 12 || f == 16 || f == 101 || f == 106;
            const int q8 = f == 1 || f == 5 || f == 11 || f == 15 || f == 100 || f == 105;
            table[i] = ld ? off[i] : off[i] < 0 ? 0 : q8 ? (int64_t)(intptr_t)(w8 + off[i]) : (int64_t)(intptr_t)(fl + off[i]);
        }
        cx = input("cs_x", 4 * CB * CN * CLAT);
        ccos = input("cs_cos", 4 * CB * CN * CD);
        csin = input("cs_sin", 4 * CB * CN * CD);
        crings = input("cs_rings", sizeof rings);
        cpos = input("cs_pos", 8 * CB);
    }
    const int32_t cdims[8] = {CH, CI, CNH, CNKV, CD, CW, CR, CLAT};
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
        if (cs) {
            memcpy(rings, crings, sizeof rings); /* the rings as written by the test, for each set */
            int64_t kv[2 * CL];
            for (int i = 0; i < 2 * CL; i++) kv[i] = (int64_t)(intptr_t)(rings + (size_t)i * CB * CNKV * CR * CD);
            float cy[CB * CN * CLAT];
            if (qwen3tts_codec_stack(table, CL, cdims, 1e-5f, cx, cy, CB, CN, ccos, csin, CN * CD, cpos, kv, 2) != 0) return 1;
            output("cs", name, cy, sizeof cy);
            output("csr", name, rings, sizeof rings);
        }
        printf("%s\n", name);
        ran++;
    }
    return ran ? 0 : 1;
}
