// A small persistent thread pool of our own (no OpenMP: Apple clang lacks it).
#pragma once
#include <functional>

namespace mlx_attn_cpu {

// Runs fn(item, tid) for every item in [0, n) on up to `threads` threads; the caller is tid 0.
// Items are handed out dynamically in order. If the pool is busy with another caller's job,
// runs everything on the calling thread. Rethrows the first exception thrown by fn.
void parallel_for(int n, int threads, const std::function<void(int, int)>& fn);

}  // namespace mlx_attn_cpu
