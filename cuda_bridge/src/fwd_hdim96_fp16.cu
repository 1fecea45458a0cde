// Forward kernels for head-dim bucket 96, fp16 (prefill and split-KV configurations).
#include "mlx_attn_cuda/launch.cuh"

MA_DEFINE_FWD(__half, fp16, 96)
