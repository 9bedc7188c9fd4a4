/* Shared by the native library's sources (decode.c, codec.c): headers and the vector switch.
 * Q_VNNI: AVX-512 with VNNI and BW; without it every function takes its plain-C path. */
#ifndef QWEN3TTS_COMMON_H
#define QWEN3TTS_COMMON_H
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
#include <immintrin.h>
#define Q_VNNI 1
#endif
#endif
