// Portable kernels: 4-lane vectors (SSE2 on x86-64, NEON on arm64), 4 x 3 register tiles sized
// for SSE2's 16 registers. arm64 picks isa_neon.cpp; this one stays as its fallback.
#define ATTN_W 4
#define ATTN_NS generic
#define ATTN_MR 4
#define ATTN_NV 3
#define ATTN_ISA_NAME "generic"
#include "isa_table.h"
