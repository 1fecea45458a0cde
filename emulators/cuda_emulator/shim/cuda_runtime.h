// CUDA emulator stand-in for <cuda_runtime.h>: errors, streams, function attributes and kernel
// launches on the SIMT runtime. The front end rewrites `k<<<grid, block, smem, stream>>>(args)`
// into `k * ::cuda_emu::launch_config(grid, block, smem, stream)(args)`: the call's arguments
// are collected first, then `operator*` launches kernel `k` with them, synchronously.
#pragma once
#include <cxxabi.h>
#include <dlfcn.h>
#include <execinfo.h>
#include <signal.h>
#include <ucontext.h>

#include <map>
#include <string>
#include <tuple>
#include <utility>

#include "cuda_emu.h"
#include "cuda_emu_ptx.h"

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchFailure = 719,
};
typedef cudaError_t cudaError;
struct CUstream_st;
typedef CUstream_st* cudaStream_t;
enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};

extern "C" {
// Set from Python before each call into a compiled library (cuda_emulator/options.py).
struct cuda_emu_options {
  int32_t workers, schedule;
  uint64_t seed;
  int32_t stack_kb;
  int32_t smem_limit;  // bytes of shared memory per block on the target architecture
  char arch[16];       // "sm_80", for messages
};
}

namespace cuda_emu {

struct State {
  cuda_emu_options opt = {1, 0, 0, 256, 101376, "sm_80"};
  std::mutex m;
  cudaError_t sticky = cudaSuccess;  // a kernel hazard: every later call fails, as after a GPU fault
  cudaError_t last = cudaSuccess;    // cudaGetLastError
  cudaError_t first = cudaSuccess;   // the first error since Python last looked (cuda_emu_take_error)
  std::string first_msg, last_msg;
  std::map<const void*, int> max_dynamic_smem;
  std::map<const void*, std::string> names;
};
inline State& state() { static State s; return s; }

inline cudaError_t set_error(cudaError_t e, const std::string& msg, bool sticky) {
  State& s = state();
  std::lock_guard<std::mutex> g(s.m);
  s.last = e;
  s.last_msg = msg;
  if (sticky) s.sticky = e;
  if (s.first == cudaSuccess) {
    s.first = e;
    s.first_msg = msg;
  }
  return e;
}

// "void ns::kernel<Args>(Params)" -> "ns::kernel<Args>(Params)", from the library's symbols.
inline std::string kernel_name(const void* fn) {
  State& s = state();
  std::lock_guard<std::mutex> g(s.m);
  auto it = s.names.find(fn);
  if (it != s.names.end()) return it->second;
  std::string name = "?";
  Dl_info info;
  if (dladdr(fn, &info) && info.dli_sname) {
    int status = 0;
    char* dem = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
    name = status == 0 && dem ? dem : info.dli_sname;
    free(dem);
  }
  s.names[fn] = name;
  return name;
}

// The runtime writes call sites as "@F<n>@ line <l>" (see site_file): name the files.
inline std::string name_sites(std::string msg) {
  FileTable& t = files();
  for (int i = t.n.load() - 1; i >= 0; --i) {
    for (const std::string m : {std::string(t.marker[i]), std::string(t.marker[i]).substr(5)}) {
      size_t p;
      while ((p = msg.find(m)) != std::string::npos) msg.replace(p, m.size(), t.name[i]);
    }
  }
  return msg;
}

// Where a kernel thread faulted. The runtime's fault handler reports the address but not the
// instruction; for the source line, the first thread of each launch chains a handler in front
// of it that records the faulting pc and its callers (the runtime restores its predecessor
// after the launch).
struct FaultHook {
  static constexpr int kFrames = 12;
  std::atomic<int> installed{0}, taken{0};
  void* frames[kFrames];
  int nframes = 0;
  uintptr_t pc = 0;
  struct sigaction next_segv, next_bus;
};
inline FaultHook& fault_hook() { static FaultHook h; return h; }

inline void on_fault(int sig, siginfo_t* si, void* ctx) {
  FaultHook& h = fault_hook();
  const ucontext_t* uc = static_cast<const ucontext_t*>(ctx);
  int expected = 0;
  if (h.taken.compare_exchange_strong(expected, 1)) {
#if defined(__x86_64__)
    h.pc = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    h.pc = (uintptr_t)uc->uc_mcontext.pc;
#endif
    h.nframes = backtrace(h.frames, FaultHook::kFrames);  // through the signal frame
  }
  const struct sigaction& next = sig == SIGBUS ? h.next_bus : h.next_segv;
  if (next.sa_flags & SA_SIGINFO)
    next.sa_sigaction(sig, si, ctx);
  else
    signal(sig, SIG_DFL);  // not a handler we can chain to: the fault repeats into the default
}

inline void install_fault_hook() {
  FaultHook& h = fault_hook();
  int expected = 0;
  if (!h.installed.compare_exchange_strong(expected, 1)) return;
  void* warm[2];
  backtrace(warm, 2);  // loads the unwinder now, not inside the signal handler
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &h.next_segv);
  sigaction(SIGBUS, &sa, &h.next_bus);
}

// " [pc <library>+0x<offset> ...]": the faulting instruction and the call sites above it in this
// library, for Python to resolve into source lines (module.py).
inline std::string fault_site() {
  FaultHook& h = fault_hook();
  if (!h.taken.load() || !h.pc) return "";
  Dl_info self;
  if (!dladdr((void*)&fault_site, &self)) return "";
  std::string out = " [pc";
  bool started = false;
  for (int i = 0; i < h.nframes; ++i) {
    uintptr_t pc = (uintptr_t)h.frames[i];
    if (!started && pc != h.pc) continue;  // the handler's own frames
    Dl_info info;
    if (!dladdr((void*)pc, &info) || info.dli_fbase != self.dli_fbase) break;  // left the library
    if (started) pc -= 1;  // a return address: look up the call instruction
    started = true;
    char buf[64];
    snprintf(buf, sizeof buf, " 0x%lx", (unsigned long)(pc - (uintptr_t)info.dli_fbase));
    out += buf;
  }
  if (!started) {
    char buf[64];
    snprintf(buf, sizeof buf, " 0x%lx", (unsigned long)(h.pc - (uintptr_t)self.dli_fbase));
    out += buf;
  }
  return out + " in " + self.dli_fname + "]";
}

template <class... P> struct KernelArgs {
  void (*kernel)(P...);
  std::tuple<P...> params;
  size_t dynamic_smem;
};

// A fiber's entry: the kernel's parameters are copied into each thread, as on the GPU.
template <class... P> void thread_entry(const simt_thread_info*, const simt_buffer*, void* a) {
  KernelArgs<P...>* k = static_cast<KernelArgs<P...>*>(a);
  dynamic_smem_bytes() = k->dynamic_smem;
  install_fault_hook();
  std::apply(k->kernel, k->params);
  // cp.async writes landing after the block is gone would corrupt the next block's shared memory
  void* st = *simt_rt_thread_state();
  if (st && !static_cast<ThreadState*>(st)->pending.empty())
    fail("the thread exited with %zu cp.async copies still in flight (no cp.async.wait_group covering "
         "them before the kernel returned)", static_cast<ThreadState*>(st)->pending.size());
}

inline cudaError_t run_launch(const void* kernel, simt_kernel_fn entry, void* args, dim3 grid, dim3 block,
                              size_t smem) {
  State& st = state();
  if (st.sticky != cudaSuccess) return set_error(st.sticky, st.last_msg, true);
  const std::string name = kernel_name(kernel);
  const cuda_emu_options o = st.opt;
  char buf[512];
  const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
  if (!grid.x || !grid.y || !grid.z || !block.x || !block.y || !block.z || threads > 1024 || block.z > 64 ||
      grid.x > 0x7FFFFFFFu || grid.y > 65535 || grid.z > 65535) {
    snprintf(buf, sizeof buf, "invalid configuration argument: kernel '%s' launched with grid (%u,%u,%u), "
             "block (%u,%u,%u) (grid.x <= 2^31-1, grid.y/z <= 65535, 1..1024 threads, block.z <= 64)",
             name.c_str(), grid.x, grid.y, grid.z, block.x, block.y, block.z);
    return set_error(cudaErrorInvalidConfiguration, buf, false);
  }
  int optin;
  {
    std::lock_guard<std::mutex> g(st.m);
    auto it = st.max_dynamic_smem.find(kernel);
    optin = it == st.max_dynamic_smem.end() ? 48 * 1024 : it->second;
  }
  if (smem > (size_t)o.smem_limit || smem > (size_t)(optin > 48 * 1024 ? optin : 48 * 1024)) {
    snprintf(buf, sizeof buf, "invalid argument: kernel '%s' launched with %zu bytes of dynamic shared memory; "
             "%s allows %d bytes per block, and above 48 KB only up to the kernel's "
             "cudaFuncAttributeMaxDynamicSharedMemorySize (%d)", name.c_str(), smem, o.arch, o.smem_limit, optin);
    return set_error(cudaErrorInvalidValue, buf, false);
  }
  const unsigned long long gx = (unsigned long long)grid.x * block.x, gy = (unsigned long long)grid.y * block.y,
                           gz = (unsigned long long)grid.z * block.z;
  if (gx > 0xFFFFFFFFull || gy > 0xFFFFFFFFull || gz > 0xFFFFFFFFull) {
    snprintf(buf, sizeof buf, "kernel '%s': a grid of more than 2^32 threads in one dimension is beyond the "
             "emulator", name.c_str());
    return set_error(cudaErrorInvalidConfiguration, buf, false);
  }
  simt_launch L;
  memset(&L, 0, sizeof L);
  L.fn = entry;
  L.args = args;
  L.grid[0] = (uint32_t)gx, L.grid[1] = (uint32_t)gy, L.grid[2] = (uint32_t)gz;
  L.threadgroup[0] = block.x, L.threadgroup[1] = block.y, L.threadgroup[2] = block.z;
  L.nworkers = o.workers;
  L.schedule = o.schedule;
  L.seed = o.seed;
  L.tg_mem_limit = o.smem_limit;
  L.stack_kb = o.stack_kb;
  L.max_threads = 1024;
  L.dialect = SIMT_CUDA;
  L.kernel_name = name.c_str();
  L.op_names = op_names();
  L.n_op_names = OP_COUNT;
  L.thread_exit = free_thread_state;
  static thread_local char err[8192];
  err[0] = 0;
  L.err = err;
  L.errlen = (int32_t)sizeof err;
  fault_hook().installed = 0;
  fault_hook().taken = 0;
  fault_hook().pc = 0;
  const int rc = simt_rt_launch(&L);
  if (rc == 0) return cudaSuccess;
  const std::string msg = name_sites(err) + fault_site();
  if (rc == 2) return set_error(cudaErrorInvalidConfiguration, "invalid configuration argument: " + msg, false);
  return set_error(cudaErrorLaunchFailure, "unspecified launch failure: " + msg, true);
}

template <class... A> struct PendingLaunch {
  dim3 grid, block;
  size_t smem;
  std::tuple<A...> args;
};

struct LaunchConfig {
  dim3 grid, block;
  size_t smem;
  template <class... A> PendingLaunch<typename std::decay<A>::type...> operator()(A&&... a) const {
    return {grid, block, smem, std::tuple<typename std::decay<A>::type...>(std::forward<A>(a)...)};
  }
};
inline LaunchConfig launch_config(dim3 grid, dim3 block, size_t smem = 0, cudaStream_t = nullptr) {
  return LaunchConfig{grid, block, smem};
}

// `kernel * launch_config(...)(args...)`: the rewritten `kernel<<<...>>>(args...)`.
template <class... P, class... A> inline void operator*(void (*kernel)(P...), PendingLaunch<A...>&& pl) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  KernelArgs<P...> k{kernel, std::make_from_tuple<std::tuple<P...>>(std::move(pl.args)), pl.smem};
  run_launch(reinterpret_cast<const void*>(kernel), &thread_entry<P...>, &k, pl.grid, pl.block, pl.smem);
}

}  // namespace cuda_emu

// ---- the runtime API subset the host code uses
inline cudaError_t cudaGetLastError() {
  cuda_emu::State& s = cuda_emu::state();
  std::lock_guard<std::mutex> g(s.m);
  const cudaError_t e = s.sticky != cudaSuccess ? s.sticky : s.last;
  if (s.sticky == cudaSuccess) s.last = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() {
  cuda_emu::State& s = cuda_emu::state();
  std::lock_guard<std::mutex> g(s.m);
  return s.sticky != cudaSuccess ? s.sticky : s.last;
}
// The emulator's errors carry the whole report (kernel, hazard, source line, thread).
inline const char* cudaGetErrorString(cudaError_t e) {
  if (e == cudaSuccess) return "no error";
  cuda_emu::State& s = cuda_emu::state();
  static thread_local std::string text;
  {
    std::lock_guard<std::mutex> g(s.m);
    text = s.last_msg;
  }
  return text.empty() ? "unknown error" : text.c_str();
}
inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    default: return "cudaError";
  }
}
template <class F> inline cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value) {
  cuda_emu::State& s = cuda_emu::state();
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || value > s.opt.smem_limit) {
      char buf[256];
      snprintf(buf, sizeof buf, "invalid argument: cudaFuncSetAttribute of kernel '%s': "
               "MaxDynamicSharedMemorySize %d, but %s allows %d bytes per block",
               cuda_emu::kernel_name((const void*)kernel).c_str(), value, s.opt.arch, s.opt.smem_limit);
      return cuda_emu::set_error(cudaErrorInvalidValue, buf, false);
    }
    std::lock_guard<std::mutex> g(s.m);
    s.max_dynamic_smem[(const void*)kernel] = value;
  }
  return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() { return cudaPeekAtLastError(); }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaPeekAtLastError(); }

// ---- the library's interface to Python (cuda_emulator/module.py); one TU per library
extern "C" {
__attribute__((visibility("default"))) int cuda_emu_abi_version(void) { return 1; }
__attribute__((visibility("default"))) void cuda_emu_configure(const cuda_emu_options* o) {
  cuda_emu::state().opt = *o;
}
// The first error since the previous call (0 if none), its message in buf; clears all errors.
__attribute__((visibility("default"))) int cuda_emu_take_error(char* buf, int len) {
  cuda_emu::State& s = cuda_emu::state();
  std::lock_guard<std::mutex> g(s.m);
  const int e = (int)s.first;
  snprintf(buf, (size_t)len, "%s", s.first_msg.c_str());
  s.first = s.last = s.sticky = cudaSuccess;
  s.first_msg.clear();
  s.last_msg.clear();
  return e;
}
}
