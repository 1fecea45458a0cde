// Backward kernels for head-dim bucket 192, fp16.
#include "mlx_attn_cuda/bwd_launch.cuh"

MA_DEFINE_BWD(__half, fp16, 192)
