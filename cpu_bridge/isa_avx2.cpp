// AVX2 + FMA kernels (8 lanes, 4 x 3-vector register tiles for 16 ymm registers).
#define ATTN_W 8
#define ATTN_NS avx2
#define ATTN_MR 4
#define ATTN_NV 3
#define ATTN_ISA_NAME "avx2"
#include "isa_table.h"
