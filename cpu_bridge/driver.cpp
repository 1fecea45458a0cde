// ISA-independent driver: checks a Problem, splits it into work items (row blocks x key splits
// for the forward pass, key ranges for the backward pass), runs them on the pool and merges.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "kernel_api.h"
#include "peak.h"
#include "pool.h"

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP2_BF16
#define HWCAP2_BF16 (1UL << 14)  // the kernel's value (older libc headers lack it)
#endif
#elif defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace mlx_attn_cpu {
namespace {

std::atomic<int> g_threads{0};
std::atomic<const IsaKernels*> g_isa{nullptr};

#ifdef MLX_ATTN_AMX
// Linux hands out the AMX tile state (8 KB per thread) only on request, once per process; a tile
// instruction without it is SIGILL. Other systems: no AMX path.
bool amx_permitted() {
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__linux__)
  static const bool ok = [] {
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;  // asm/prctl.h values
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
#else
  return false;
#endif
}
#endif

bool cpu_has(const char* what) {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (!std::strcmp(what, "avx512"))
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (!std::strcmp(what, "avx512bf16"))
    return cpu_has("avx512") && __builtin_cpu_supports("avx512bf16");
#ifdef MLX_ATTN_AMX
  if (!std::strcmp(what, "avx512amx"))
    return cpu_has("avx512bf16") && __builtin_cpu_supports("amx-tile") &&
           __builtin_cpu_supports("amx-bf16") && amx_permitted();
#endif
  if (!std::strcmp(what, "avx2"))
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
#endif
#if defined(__aarch64__)
  // Advanced SIMD (with FMA and fp16 <-> fp32 conversion) is part of every AArch64 CPU
  if (!std::strcmp(what, "neon")) return true;
  if (!std::strcmp(what, "neonbf16")) {  // BF16 is optional: ask the OS
#if defined(__linux__)
    return (getauxval(AT_HWCAP2) & HWCAP2_BF16) != 0;
#elif defined(__APPLE__)
    int has = 0;
    size_t len = sizeof has;
    return sysctlbyname("hw.optional.arm.FEAT_BF16", &has, &len, nullptr, 0) == 0 && has;
#else
    return false;
#endif
  }
#endif
  return !std::strcmp(what, "generic");
}

const IsaKernels* isa_by_name(const std::string& name) {
#if defined(__x86_64__) || defined(_M_X64)
  if (name == "avx512bf16" && cpu_has("avx512bf16")) return &kernels_avx512bf16();
#ifdef MLX_ATTN_AMX  // built with a compiler that has the AMX flags (CMakeLists.txt)
  if (name == "avx512amx" && cpu_has("avx512amx")) return &kernels_avx512amx();
#endif
  if (name == "avx512" && cpu_has("avx512")) return &kernels_avx512();
  if (name == "avx2" && cpu_has("avx2")) return &kernels_avx2();
#endif
#if defined(__aarch64__)
  if (name == "neonbf16" && cpu_has("neonbf16")) return &kernels_neonbf16();
  if (name == "neon" && cpu_has("neon")) return &kernels_neon();
#endif
  if (name == "generic") return &kernels_generic();
  return nullptr;
}

const IsaKernels* best_isa() {
  for (const char* n : {"avx512amx", "avx512bf16", "avx512", "avx2", "neonbf16", "neon", "generic"})
    if (auto* k = isa_by_name(n)) return k;
  return &kernels_generic();
}

const IsaKernels& isa() {
  const IsaKernels* k = g_isa.load();
  if (!k) {
    const char* env = std::getenv("MLX_ATTN_CPU_ISA");
    if (env && *env && std::string(env) != "auto") k = isa_by_name(env);
    if (!k) k = best_isa();
    g_isa.store(k);
  }
  return *k;
}

struct Buffer {  // 64-byte aligned float buffer
  float* p = nullptr;
  explicit Buffer(size_t n) {
    const size_t bytes = ((n * sizeof(float)) + 63) / 64 * 64 + 64;
    p = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (!p) throw std::bad_alloc();
  }
  ~Buffer() { std::free(p); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

void check(const Problem& p, bool backward) {
  auto bad = [](const std::string& why) { throw std::invalid_argument("mlx_attn cpu kernel: " + why); };
  if (p.dtype < F32 || p.dtype > BF16) bad("dtype code must be 0, 1 or 2");
  if (p.B < 0 || p.Hq <= 0 || p.Hkv <= 0 || p.Lq < 0 || p.Lk < 0 || p.D <= 0 || p.Dv <= 0)
    bad("dimensions must be positive");
  if (p.Hq % p.Hkv) bad("Hq must be a multiple of Hkv");
  // empty arrays may have null data pointers (torch, MLX): only non-empty ones are required
  const bool any_q = p.B > 0 && p.Lq > 0, any_k = p.B > 0 && p.Lk > 0;
  if ((any_q && !p.q) || (any_k && (!p.k || !p.v))) bad("q, k and v are required");
  if (p.mask_kind != MASK_NONE && (!p.mask || p.mask_type < MT_BOOL || p.mask_type > MT_BF16))
    bad("mask pointer or type missing");
  if (p.mask_kind != MASK_NONE && p.cu_q) bad("varlen takes no mask");
  if (p.wl < -1 || p.wr < -1) bad("window sides must be >= 0, or -1 for unbounded");
  if (!backward && any_q && !p.o) bad("out is required");
  if (backward && ((any_q && (!p.o || !p.lse || !p.dout || !p.dq)) || (any_k && (!p.dk || !p.dv))))
    bad("backward needs o, lse, dout, dq, dk and dv");
  if ((p.cu_q == nullptr) != (p.cu_k == nullptr)) bad("varlen needs both cu_seqlens");
  if (p.cu_q) {
    for (int b = 0; b < p.B; ++b) {
      if (p.cu_q[b + 1] < p.cu_q[b] || p.cu_k[b + 1] < p.cu_k[b]) bad("cu_seqlens must be non-decreasing");
    }
    if (p.cu_q[0] != 0 || p.cu_k[0] != 0 || p.cu_q[p.B] != p.Lq || p.cu_k[p.B] != p.Lk)
      bad("cu_seqlens must start at 0 and end at the totals");
  }
}

// A window side that reaches past every sequence is unbounded (-1): the kernels' int arithmetic on
// i + off +- side then cannot overflow, whatever the caller passed (the front end does the same).
Problem with_window_canonical(const Problem& p) {
  Problem q = p;
  const int reach = std::max(p.Lq, p.Lk);  // totals bound every sequence, varlen included
  if (q.wl > reach) q.wl = -1;
  if (q.wr > reach) q.wr = -1;
  return q;
}

// Below this many multiply-adds (a few microseconds on one core) a call runs on the calling thread
// alone: waking a worker costs about as much as it would save, and a tiny call (decode of a small
// model, per-layer, per-token) would pay the wake-up latency every time.
constexpr int64_t kMinParallelWork = int64_t(1) << 19;

// Multiply-adds of the problem's two matmuls, over every sequence (no causal / window discount).
int64_t work_of(const Problem& p) {
  int64_t work = 0;
  for (int b = 0; b < p.B; ++b) {
    const Seq s = seq_of(p, b);
    work += int64_t(p.Hq) * s.Lq * s.Lk * (p.D + p.Dv);
    if (work >= kMinParallelWork) break;
  }
  return work;
}

int threads_for(int64_t work_items, const Problem& p) {
  if (work_of(p) < kMinParallelWork) return 1;
  int t = num_threads();
  if (work_items < t) t = int(std::max<int64_t>(work_items, 1));
  return t;
}

int hardware_threads() { return int(std::max(1u, std::thread::hardware_concurrency())); }
// More threads than this only add switching: the kernel is compute-bound. (A few more than the
// cores are allowed, for tests and for containers whose CPU quota the count does not show.)
int max_threads() { return 4 * hardware_threads(); }

// MLX_ATTN_THREADS: unset or empty = the hardware threads; else a positive integer (capped).
int threads_from_env() {
  const char* env = std::getenv("MLX_ATTN_THREADS");
  if (!env || !*env) return hardware_threads();
  char* end = nullptr;
  errno = 0;
  const long n = std::strtol(env, &end, 10);
  while (end && (*end == ' ' || *end == '\t' || *end == '\n')) ++end;
  if (end == env || *end || errno == ERANGE || n <= 0)
    throw std::invalid_argument(std::string("MLX_ATTN_THREADS must be a positive integer (threads "
                                            "of the cpu kernel), got '") + env + "'");
  return int(std::min<long>(n, max_threads()));
}

// Whether lse can stand in for the softmax statistics in the backward: P = exp2(S - lse2) loses
// log2(l) to rounding once |lse2| passes 2^8 (its float32 ulp is then 2^-15 or coarser): rows
// whose every key carries a large finite mask (-1e4, -1e9, finfo.min).
bool lse_is_coarse(const Problem& p) {
  if (!p.lse) return false;
  for (int b = 0; b < p.B; ++b) {
    const Seq s = seq_of(p, b);
    for (int h = 0; h < p.Hq; ++h)
      for (int i = 0; i < s.Lq; ++i) {
        const float lse = p.lse[b * p.ls[0] + h * p.ls[1] + (s.qo + i) * p.ls[2]];
        if (std::isfinite(lse) && std::fabs(lse) * 1.4426950408889634f > 256.0f) return true;
      }
  }
  return false;
}

}  // namespace

int num_threads() {
  int t = g_threads.load();
  if (t <= 0) {
    t = threads_from_env();
    g_threads.store(t);
  }
  return t;
}

void set_num_threads(int n) {
  if (n < 0) throw std::invalid_argument("threads must be >= 0 (0 = default), got " + std::to_string(n));
  g_threads.store(std::min(n, max_threads()));
}

const char* isa_name() { return isa().name; }

bool isa_supported(const char* name) { return name && isa_by_name(name) != nullptr; }

void set_isa(const char* name) {
  const std::string n = name ? name : "auto";
  if (n == "auto") { g_isa.store(best_isa()); return; }
  const IsaKernels* k = isa_by_name(n);
  if (!k) throw std::invalid_argument("ISA '" + n + "' is not supported on this CPU (or unknown)");
  g_isa.store(k);
}

void forward(const Problem& p_in) {
  check(p_in, false);
  const Problem p = with_window_canonical(p_in);
  const int G = p.Hq / p.Hkv;
  // Decode-sized row blocks (<= 8 rows) waste most of a vector in fwd_rows, whose lanes are
  // query rows: the ISA's fwd_small (head dim across the lanes; AVX-512, AVX2, NEON) takes them.
  const IsaKernels& K = isa();
  bool use_small = K.fwd_small != nullptr;
  for (int b = 0; b < p.B && use_small; ++b) {
    const int Lq = seq_of(p, b).Lq;
    use_small = (G > 1 && Lq <= 8) ? G * Lq <= 8 : Lq <= 8;
  }
  const int BQ = K.rows;
  std::vector<Rows> blocks;
  std::vector<int64_t> est;
  int maxLk = 0;
  for (int b = 0; b < p.B; ++b) {
    const Seq s = seq_of(p, b);
    if (s.Lq == 0) continue;
    maxLk = std::max(maxLk, s.Lk);
    auto keys = [&](int ifirst, int ilast) -> int64_t {
      const Span k = keys_seen(ifirst, ilast, s.Lq, s.Lk, p.wl, p.wr);
      return std::max<int64_t>(int64_t(k.hi) + 1 - k.lo, 0) + 1;
    };
    if (G > 1 && s.Lq <= 8) {  // decode: pack the group's heads into one row block
      for (int hk = 0; hk < p.Hkv; ++hk) {
        Rows R; R.b = b; R.n = 0;
        for (int g = 0; g < G; ++g)
          for (int i = 0; i < s.Lq; ++i) {
            R.h[R.n] = hk * G + g; R.i[R.n] = i; ++R.n;
            if (R.n == BQ) { blocks.push_back(R); est.push_back(keys(0, s.Lq - 1) * BQ); R.n = 0; }
          }
        if (R.n) { blocks.push_back(R); est.push_back(keys(0, s.Lq - 1) * R.n); }
      }
    } else {
      for (int h = 0; h < p.Hq; ++h)
        for (int i0 = 0; i0 < s.Lq; i0 += BQ) {
          Rows R; R.b = b; R.n = std::min(BQ, s.Lq - i0);
          for (int r = 0; r < R.n; ++r) { R.h[r] = h; R.i[r] = i0 + r; }
          blocks.push_back(R);
          est.push_back(keys(i0, i0 + R.n - 1) * R.n);
        }
    }
  }
  const int nb = int(blocks.size());
  if (nb == 0) return;
  // Work items: runs of up to kRowGroup consecutive row blocks of one (sequence, head), which
  // read each key block once for the run, when a head's K and V outgrow a core's L2 cache (each
  // row block otherwise streams them from L3 or memory: fp32 D=128 at L=16k ran ~7% slower than
  // at 8k); single blocks otherwise, which balance better.
  const int64_t kv_bytes = int64_t(maxLk) * (p.D + p.Dv) * (p.dtype == F32 ? 4 : 2);
  const bool shared_packs = K.bf16_packs_keys && p.dtype == BF16;
  const int per_item =
      use_small || (kv_bytes <= (int64_t(1) << 20) && !shared_packs) ? 1 : kRowGroup;
  struct Item { int first, n; int64_t est; };
  std::vector<Item> items;
  for (int i = 0; i < nb;) {
    Item it{i, 1, est[i]};
    while (it.n < per_item && i + it.n < nb && blocks[i + it.n].b == blocks[i].b &&
           blocks[i + it.n].h[0] == blocks[i].h[0]) {
      it.est += est[i + it.n];
      ++it.n;
    }
    items.push_back(it);
    i += it.n;
  }
  // Heaviest first within each (sequence, head), heads one after another: both threads then
  // stream the same head's K / V, which stays in the shared L3; a global heaviest-first order
  // cycles through every head and re-reads K / V from memory (causal L=8k: ~25% slower). The
  // tail stays light either way, so the dynamic schedule still balances.
  std::stable_sort(items.begin(), items.end(), [&](const Item& a, const Item& c) {
    const Rows &ra = blocks[a.first], &rc = blocks[c.first];
    if (ra.b != rc.b || ra.h[0] != rc.h[0]) return ra.b != rc.b ? ra.b < rc.b : ra.h[0] < rc.h[0];
    return a.est > c.est;
  });
  const int ni = int(items.size());

  const int T = num_threads();
  int nsplit = 1;
  if (ni < 2 * T && maxLk >= 512) {
    nsplit = (4 * T + ni - 1) / ni;
    nsplit = std::min({nsplit, maxLk / 256, 64});
    nsplit = std::max(nsplit, 1);
  }
  const int nthreads = threads_for(int64_t(ni) * nsplit, p);
  const size_t wsz = use_small ? K.fwd_small_ws(p) : K.fwd_ws(p);
  std::vector<std::unique_ptr<Buffer>> ws;
  for (int t = 0; t < nthreads; ++t) ws.emplace_back(new Buffer(wsz));
  // one item against keys [k0, k1); partials: one per row block, or null
  auto run = [&](const Item& it, int k0, int k1, float* wsp, float* const* partials) {
    if (use_small) K.fwd_small(p, blocks[it.first], k0, k1, wsp, partials ? partials[0] : nullptr);
    else K.fwd_rows(p, &blocks[it.first], it.n, k0, k1, wsp, partials);
  };
  if (nsplit == 1) {
    parallel_for(ni, nthreads, [&](int item, int tid) {
      const Item& it = items[item];
      run(it, 0, seq_of(p, blocks[it.first].b).Lk, ws[tid]->p, nullptr);
    });
    return;
  }
  const size_t psz = K.fwd_partial(p);
  Buffer parts(psz * size_t(nb) * nsplit);
  parallel_for(ni * nsplit, nthreads, [&](int item, int tid) {
    const Item& it = items[item / nsplit];
    const int sp = item % nsplit;
    const int Lk = seq_of(p, blocks[it.first].b).Lk;
    const int chunk = (Lk + nsplit - 1) / nsplit;
    const int k0 = std::min(Lk, sp * chunk), k1 = std::min(Lk, k0 + chunk);
    float* partials[kRowGroup];
    for (int g = 0; g < it.n; ++g) partials[g] = parts.p + (size_t(it.first + g) * nsplit + sp) * psz;
    run(it, k0, k1, ws[tid]->p, partials);
  });
  parallel_for(nb, nthreads, [&](int blk, int) {
    K.fwd_merge(p, blocks[blk], nsplit, parts.p + size_t(blk) * nsplit * psz);
  });
}


void backward(const Problem& p_in) {
  check(p_in, true);
  const Problem p = with_window_canonical(p_in);
  const bool half = p.dtype != F32 && !p.out_f32;
  if (!p.stats && p.B > 0 && p.Lq > 0 && p.Lk > 0 && (half || lse_is_coarse(p))) {
    // One extra forward (O(Lq * Dv) memory) for what the backward recomputes P and delta from:
    // - the softmax statistics (row max, log2 row sum) instead of lse, always for fp16 / bf16
    //   (the forward runs anyway) and for float32 when lse is too coarse (lse_is_coarse);
    // - fp16 / bf16: o in float32, so that delta = rowsum(dout * o) is exact to float32; the
    //   caller's rounded o loses the small differences dp - delta when the softmax peaks
    //   (FlashAttention 2 uses the rounded o).
    const int64_t rows = int64_t(p.cu_q ? 1 : p.B) * p.Hq * p.Lq;
    Buffer o32(size_t(rows) * p.Dv), stats(size_t(rows) * 2);
    Problem f = p;
    f.o = o32.p; f.out_f32 = true; f.lse = nullptr;
    f.os[0] = p.cu_q ? 0 : int64_t(p.Hq) * p.Lq * p.Dv;  // [B, Hq, Lq, Dv]; varlen [Hq, total, Dv]
    f.os[1] = int64_t(p.Lq) * p.Dv; f.os[2] = p.Dv; f.os[3] = 1;
    f.stats = stats.p;
    f.ss[0] = p.cu_q ? 0 : int64_t(p.Hq) * p.Lq * 2; f.ss[1] = int64_t(p.Lq) * 2; f.ss[2] = 2;
    forward(f);
    f.lse = p.lse;
    if (!half) {  // float32: the caller's o is exact
      f.o = p.o; f.out_f32 = p.out_f32;
      for (int d = 0; d < 4; ++d) f.os[d] = p.os[d];
    }
    backward(f);
    return;
  }
  const IsaKernels& K = isa();
  const int T = num_threads();
  const int pairs = p.B * p.Hkv;
  if (pairs == 0) return;
  int maxLq = 0, maxLk = 0;
  for (int b = 0; b < p.B; ++b) {
    const Seq s = seq_of(p, b);
    maxLq = std::max(maxLq, s.Lq); maxLk = std::max(maxLk, s.Lk);
  }
  int nsplit = 1;
  if (pairs < 2 * T) nsplit = std::max(1, std::min((2 * T + pairs - 1) / pairs, maxLk / 128));
  std::vector<KeyRange> items;
  for (int b = 0; b < p.B; ++b) {
    const int Lk = seq_of(p, b).Lk;
    for (int hk = 0; hk < p.Hkv; ++hk) {
      const int chunk = ((Lk + nsplit - 1) / nsplit + 63) / 64 * 64;
      for (int sp = 0; sp < nsplit; ++sp) {
        KeyRange kr; kr.b = b; kr.hk = hk;
        kr.k0 = std::min(Lk, sp * chunk); kr.k1 = std::min(Lk, kr.k0 + chunk);
        items.push_back(kr);
      }
    }
  }
  const int n = int(items.size());
  const int nthreads = threads_for(n, p);
  const size_t wsz = K.bwd_ws(p);
  std::vector<std::unique_ptr<Buffer>> ws;
  for (int t = 0; t < nthreads; ++t) ws.emplace_back(new Buffer(wsz));
  // per (sequence, kv head): the ISA's own layout for the longest sequence (bwd.h)
  const size_t acc_sz = std::max<size_t>(K.bwd_dq_layout(p, maxLq).floats, 1);
  if (nsplit == 1) {
    std::vector<std::unique_ptr<Buffer>> acc;
    for (int t = 0; t < nthreads; ++t) acc.emplace_back(new Buffer(acc_sz));
    parallel_for(n, nthreads, [&](int item, int tid) {
      KeyRange kr = items[item];
      kr.dq_acc = acc[tid]->p;
      kr.dq_acc_floats = acc_sz;
      std::memset(kr.dq_acc, 0, acc_sz * sizeof(float));
      K.bwd_keys(p, kr, ws[tid]->p);
      K.bwd_dq(p, kr.b, kr.hk, kr.dq_acc, 1, 0);
    });
    return;
  }
  Buffer acc(acc_sz * size_t(n));
  std::memset(acc.p, 0, acc_sz * size_t(n) * sizeof(float));
  parallel_for(n, nthreads, [&](int item, int tid) {
    KeyRange kr = items[item];
    kr.dq_acc = acc.p + size_t(item) * acc_sz;
    kr.dq_acc_floats = acc_sz;
    K.bwd_keys(p, kr, ws[tid]->p);
  });
  parallel_for(pairs, nthreads, [&](int pr, int) {
    const int first = pr * nsplit;
    K.bwd_dq(p, items[first].b, items[first].hk, acc.p + size_t(first) * acc_sz, nsplit, acc_sz);
  });
}

}  // namespace mlx_attn_cpu
