// AArch64 kernels with NEON intrinsics: 4 lanes, 6 x 4-vector register tiles.
//
// Tile: AArch64 has 32 128-bit registers (twice SSE2's 16, which sized the generic 4 x 3). A
// 6 x 4 tile keeps 24 accumulators, loads 4 B vectors per k step and multiplies by each A
// element with fmla by element (the scalar in a register of its own, no broadcast copy): 28
// registers plus one or two scalars; 24 FMAs per 4 vector and 6 scalar loads (generic 4 x 3: 12
// per 3 + 4). The 4 vectors are also the forward's 16 query rows per block (BQ = NV x W), so K
// and V are streamed once per 16 rows instead of 12. 8 x 3 (also 24 accumulators) would make
// 12-row blocks and more row tails.
// exp2 by frintn + polynomial, fp16 by fcvtl, bf16 by ushll #16 (vec.h); decode.h's head-dim-
// across-lanes kernel with faddp reductions for decode. bf16 inputs are widened to float32 like
// fp16 here; isa_neonbf16.cpp adds bfdot for CPUs with BF16.
#if defined(__aarch64__)
#define ATTN_W 4
#define ATTN_NS neon
#define ATTN_MR 6
#define ATTN_NV 4
#define ATTN_NEON 1
#define ATTN_ISA_NAME "neon"
#include "isa_table.h"
#endif
