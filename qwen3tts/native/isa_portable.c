/* The kernels in plain C (see common.h), for the architecture's baseline: the reference path
 * of every CPU, and the one a CPU runs when it lacks the vector extensions of the others. */
#define Q_ISA Q_PORTABLE
#define Q_SFX portable
#include "q4.c"
#include "decode.c"
#include "codec.c"
#include "rows.c"
