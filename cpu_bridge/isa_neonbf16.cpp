// The neon kernels plus BF16 dot products (bfdot, Armv8.6 BF16, optional from Armv8.2) for the
// scores S = Q K^T of bf16 forward passes (gemm_bf16.h); everything else, the backward included,
// is the neon code. Built with BF16 enabled for this file alone; the driver calls it only after
// the OS has reported BF16 (getauxval HWCAP2_BF16 on Linux, hw.optional.arm.FEAT_BF16 on macOS).
#if defined(__aarch64__)
#define ATTN_W 4
#define ATTN_NS neonbf16
#define ATTN_MR 6
#define ATTN_NV 4
#define ATTN_NEON 1
#define ATTN_BF16DOT_FWD 1
#define ATTN_ISA_NAME "neonbf16"
#include "isa_table.h"
#endif
