// AVX-512 kernels (16 lanes, 6 x 4-vector register tiles). Built with -mavx512f and friends;
// only called after the driver has checked the CPU supports them.
#define ATTN_W 16
#define ATTN_NS avx512
#define ATTN_MR 6
#define ATTN_NV 4
#define ATTN_ISA_NAME "avx512"
#include "isa_table.h"
