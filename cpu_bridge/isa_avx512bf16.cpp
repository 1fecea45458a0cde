// AVX-512 kernels plus AVX512-BF16 dot products for the backward pass of bf16 problems
// (bwd_bf16.h); everything else is the avx512 code. Built with -mavx512bf16 on top of the avx512
// flags; only called after the driver has checked the CPU supports them.
#define ATTN_W 16
#define ATTN_NS avx512bf16
#define ATTN_MR 6
#define ATTN_NV 4
#define ATTN_BF16DOT 1
#define ATTN_ISA_NAME "avx512bf16"
#include "isa_table.h"
