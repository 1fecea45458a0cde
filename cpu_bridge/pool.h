// A small persistent thread pool of our own (no OpenMP: Apple clang lacks it), or the threads of
// an OpenMP runtime that is already loaded in the process (torch's), entered through libgomp's
// ABI (GOMP_parallel, which LLVM's and Intel's runtimes also export). The latter matters when
// torch calls us: its OpenMP workers spin-wait for a while after each torch op, and our own
// threads would share the cores with them (measured on 2 cores: a bf16 backward 58 ms after a
// torch copy, 50 ms with OMP_WAIT_POLICY=PASSIVE).
#pragma once
#include <functional>
#include <string>

namespace mlx_attn_cpu {

// Runs fn(item, tid) for every item in [0, n) on up to `threads` threads; the caller is tid 0.
// Items are handed out dynamically in order. If the pool is busy with another caller's job,
// runs everything on the calling thread. Rethrows the first exception thrown by fn.
void parallel_for(int n, int threads, const std::function<void(int, int)>& fn);

// Finds the OpenMP runtime at `path` among the libraries already loaded (never loads one) and
// keeps its entry points; returns "" on success, else why not. Idempotent.
std::string attach_openmp(const std::string& path);
bool openmp_attached();

// While alive, parallel_for calls on this thread use the attached OpenMP runtime (if any).
class OpenMPScope {
 public:
  explicit OpenMPScope(bool on);
  ~OpenMPScope();
  OpenMPScope(const OpenMPScope&) = delete;
  OpenMPScope& operator=(const OpenMPScope&) = delete;

 private:
  bool prev_;
};

}  // namespace mlx_attn_cpu
