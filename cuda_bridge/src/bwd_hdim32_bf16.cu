// Backward kernels for head-dim bucket 32, bf16.
#include "mlx_attn_cuda/bwd_launch.cuh"

MA_DEFINE_BWD(__nv_bfloat16, bf16, 32)
