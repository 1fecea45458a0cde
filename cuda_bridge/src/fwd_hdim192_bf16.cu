// Forward kernels for head-dim bucket 192, bf16 (prefill and split-KV configurations).
#include "mlx_attn_cuda/launch.cuh"

MA_DEFINE_FWD(__nv_bfloat16, bf16, 192)
