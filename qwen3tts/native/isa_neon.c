/* The kernels for aarch64 with Advanced SIMD (see common.h): the int8 products in NEON, the
 * rest in plain C (which the compiler vectorizes for the baseline's NEON). */
#define Q_ISA Q_NEON
#define Q_SFX neon
#include "q4.c"
#include "decode.c"
#include "codec.c"
#include "rows.c"
