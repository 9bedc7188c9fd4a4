/* A command-line harness of the int4 kernels (q4.c) for architectures this host only emulates
 * (tests/test_q4.py: aarch64 under qemu-user). It reads the packed weights, scales and
 * activations written by the test from DIR, runs qwen3tts_q4_gemm (int8 activations) and
 * qwen3tts_linear (float activations) under every instruction set the CPU supports and writes
 * each output to DIR/q4_<case>_<isa>. Sizes are fixed here and in the test. */
#include <stdio.h>
#include <stdlib.h>
#include "common.h"

int qwen3tts_set_isa(int isa);
const char *qwen3tts_isa_name(int isa);
void qwen3tts_linear(const Lin *L, const float *x, int M, float *y, int nt);
void qwen3tts_q4_gemm(const Lin *L, const int8_t *x, const float *sx, int M, float *y, int nt);

enum { M = 5, K = 100, KP = 128, N = 37, NP = 48, G = 32 };

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
    snprintf(path, sizeof path, "%s/q4_%s_%s", dir, name, isa);
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
    Lin L = {input("w", NP * KP / 2), input("s", 2 * NP * (KP / G)), NULL, input("bias", 4 * N), N, K, KP, 4, G};
    const int8_t *xq = input("xq", M * KP);
    const float *sx = input("sx", 4 * M), *x = input("x", 4 * M * K);
    int ran = 0;
    for (int isa = 0; isa < Q_NISA; isa++) {
        if (qwen3tts_set_isa(isa) != 0) continue;
        const char *name = qwen3tts_isa_name(isa);
        float y[M * N];
        qwen3tts_q4_gemm(&L, xq, sx, M, y, 2);
        output("gemm", name, y, sizeof y);
        qwen3tts_linear(&L, x, M, y, 2);
        output("linear", name, y, sizeof y);
        printf("%s\n", name);
        ran++;
    }
    return ran ? 0 : 1;
}
