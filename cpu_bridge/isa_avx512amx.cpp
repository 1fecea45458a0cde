// AVX-512 + AVX512-BF16 kernels with AMX tiles for the forward products of bf16 problems
// (gemm_amx.h: S = Q K^T and O += P V, P rounded to bf16 as on GPUs); everything else is the
// avx512bf16 code. Built with -mamx-tile -mamx-bf16 on top of its flags; only called after the
// driver has checked the CPU and asked Linux for the AMX tile state (driver.cpp).
#define ATTN_W 16
#define ATTN_NS avx512amx
#define ATTN_MR 6
#define ATTN_NV 4
#define ATTN_BF16DOT 1
#define ATTN_AMX 1
#define ATTN_BK 128  // longer key blocks: each O^T tile is loaded and stored once per block
#define ATTN_ISA_NAME "avx512amx"
#include "isa_table.h"
