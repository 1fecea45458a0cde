// SIMT runtime: runs a compiled kernel over a grid for the emulators' front ends (MSL, CUDA).
// Every thread of a block (threadgroup) is a cooperative fiber; fibers switch only at barriers
// and warp (SIMD-group) collectives. Blocks are spread over a few OS threads. Built once per
// runtime version into a shared library loaded with RTLD_GLOBAL.
#include "simt_abi.h"

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if !defined(__x86_64__) || defined(SIMT_EMU_UCONTEXT)
#define SIMT_USE_UCONTEXT 1
#include <ucontext.h>
#endif

namespace {

enum { F_RUNNABLE, F_BARRIER, F_SIMD, F_DONE };
constexpr int kMaxSlots = 256;
constexpr int kCanary = 32;
constexpr unsigned char kCanaryByte = 0xA7;

struct Fiber {
  void* sp;
  char* stack_lo;
  char* stack_hi;
  char* guard_lo;
  int state, wait_op, wait_line, wait_gen;
  const char* wait_file;
  int sg, lane;
  uint32_t tid;
  simt_thread_info info;
  void* state_slot;  // the front end's per-thread state (simt_rt_thread_state)
#ifdef SIMT_USE_UCONTEXT
  ucontext_t uc;
#endif
};

struct SimdGroup {
  int live, arrived, at_barrier, gen;
  uint32_t arrived_mask;
  uint32_t lane_masks[2][SIMT_WARP];
  alignas(64) unsigned char data[2][SIMT_WARP][SIMT_SLOT_BYTES];
};

struct Slot { long off, size; const char* name; long gen; };

struct Shared {
  const simt_launch* L;
  std::atomic<long> next{0};
  std::atomic<bool> stop{false};
  std::mutex m;
  long err_tg = -1;
  std::string err;
};

struct Worker {
  Shared* sh = nullptr;
  const simt_launch* L = nullptr;
  std::vector<Fiber> fibers;
  std::vector<SimdGroup> sgs;
  char* stack_mem = nullptr;
  size_t stack_map = 0, stack_stride = 0;
  // state of the threadgroup being run
  int n = 0, live = 0, exited = 0, arrived = 0, barrier_line = -1, barrier_first = -1;
  const char* barrier_file = "";
  uint32_t tgpos[3] = {0, 0, 0};
  unsigned char* arena = nullptr;
  long arena_cap = 0, arena_used = 0, tg_bytes = 0, slot_gen = 0;
  Slot slots[kMaxSlots];
  std::vector<std::pair<long, long>> canaries;
  std::vector<int> order;
  uint64_t rng = 0;
  void* sched_sp = nullptr;
#ifdef SIMT_USE_UCONTEXT
  ucontext_t sched_uc;
#endif
  Fiber* cur = nullptr;
  bool failed = false;
  std::string err;
  char* altstack = nullptr;
};

thread_local Worker* tl_w = nullptr;
struct sigaction g_old_segv, g_old_bus, g_old_fpe;  // handlers to restore / chain to

}  // namespace

#include "simt_fiber_switch.h"

// ------------------------------------------------------------------ messages
static std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

// The front end's words for its barrier, block, shared memory and collectives.
struct Words { const char *barrier, *block, *shared, *shared_array, *collective; };
static const Words kWords[2] = {
    {"threadgroup_barrier", "threadgroup", "threadgroup memory", "threadgroup array", "SIMD-group function"},
    {"__syncthreads", "block", "shared memory", "__shared__ array", "warp collective"}};
static const Words& words(const Worker* w) { return kWords[w->L->dialect == SIMT_CUDA ? 1 : 0]; }

static const char* op_name(const simt_launch* L, int op) {
  return (op >= 0 && op < L->n_op_names && L->op_names) ? L->op_names[op] : "?";
}

// "source line 4" / "header line 2": the kernel source carries #line markers.
static std::string site(const char* file, int line) {
  const char* dot = file ? strrchr(file, '.') : nullptr;
  return fmt("%s line %d", dot ? dot + 1 : "source", line);
}

static bool same_site(const char* f1, int l1, const char* f2, int l2) {
  return l1 == l2 && (f1 == f2 || (f1 && f2 && strcmp(f1, f2) == 0));
}

static std::string pos3(const uint32_t* p) { return fmt("(%u,%u,%u)", p[0], p[1], p[2]); }

static std::string where(const Worker* w, const Fiber* f) {
  const simt_thread_info& i = f->info;
  if (w->L->dialect == SIMT_CUDA)
    return fmt("blockIdx=%s threadIdx=%s (warp %u lane %u)", pos3(i.threadgroup_position_in_grid).c_str(),
               pos3(i.thread_position_in_threadgroup).c_str(), i.simdgroup_index_in_threadgroup,
               i.thread_index_in_simdgroup);
  return fmt("threadgroup_position_in_grid=%s thread_position_in_threadgroup=%s "
             "(thread_position_in_grid=%s, thread_index_in_threadgroup=%u, simdgroup %u lane %u)",
             pos3(i.threadgroup_position_in_grid).c_str(), pos3(i.thread_position_in_threadgroup).c_str(),
             pos3(i.thread_position_in_grid).c_str(), i.thread_index_in_threadgroup,
             i.simdgroup_index_in_threadgroup, i.thread_index_in_simdgroup);
}

// Lists thread_position_in_threadgroup of the fibers matching `pred`.
template <class P> static std::string thread_list(Worker* w, P pred) {
  std::string s;
  int count = 0;
  for (int i = 0; i < w->n; ++i) {
    if (!pred(w->fibers[i])) continue;
    if (count < 8) s += (count ? ", " : "") + pos3(w->fibers[i].info.thread_position_in_threadgroup);
    ++count;
  }
  if (count > 8) s += fmt(", ... (%d threads)", count);
  return "[" + s + "]";
}

static void report(Worker* w, Fiber* f, const std::string& what) {
  if (w->failed) return;
  w->failed = true;
  w->err = fmt("kernel '%s': ", w->L->kernel_name) + what;
  if (f) w->err += "\n  at " + where(w, f);
}

// Fails from inside a fiber: records the hazard and never resumes the fiber.
__attribute__((noreturn)) static void fail_here(const std::string& what) {
  Worker* w = tl_w;
  if (!w || !w->cur) {
    fprintf(stderr, "simt runtime: %s (outside of a kernel thread)\n", what.c_str());
    abort();
  }
  Fiber* f = w->cur;
  report(w, f, what);
  f->state = F_DONE;
  to_scheduler(w, f);
  __builtin_unreachable();
}

// ------------------------------------------------------------------ synchronisation
// A SIMD-group function completes once every live lane of the simdgroup is
// blocked (in a SIMD-group function or at a threadgroup barrier). Lanes waiting
// at the same call site form one active set, as a GPU running the branches of
// divergent control flow one after another with partial masks would: lanes
// elsewhere (another branch, a barrier after reconvergence, or returned) are
// inactive for that call.
static void resolve_simd(Worker* w, SimdGroup& s, int sgi) {
  if (s.arrived == 0 || s.arrived + s.at_barrier < s.live) return;
  uint32_t pending = s.arrived_mask;
  Fiber* lanes = &w->fibers[(size_t)sgi * SIMT_WARP];
  while (pending) {
    const Fiber& lead = lanes[__builtin_ctz(pending)];
    uint32_t group = 0;
    for (uint32_t m = pending; m; m &= m - 1) {
      const Fiber& f = lanes[__builtin_ctz(m)];
      if (f.wait_op == lead.wait_op && same_site(f.wait_file, f.wait_line, lead.wait_file, lead.wait_line))
        group |= 1u << f.lane;
    }
    for (uint32_t m = group; m; m &= m - 1) {
      int l = __builtin_ctz(m);
      s.lane_masks[s.gen & 1][l] = group;
      lanes[l].state = F_RUNNABLE;
    }
    pending &= ~group;
  }
  s.gen++;
  s.arrived = 0;
  s.arrived_mask = 0;
}

extern "C" const unsigned char* simt_rt_exchange(const void* value, int nbytes, int op, int line,
                                                     const char* file, uint32_t* active, int* lane) {
  Worker* w = tl_w;
  Fiber* f = w->cur;
  SimdGroup& s = w->sgs[f->sg];
  int g = s.gen;
  if (nbytes > 0) memcpy(s.data[g & 1][f->lane], value, (size_t)nbytes);
  s.arrived++;
  s.arrived_mask |= 1u << f->lane;
  f->state = F_SIMD;
  f->wait_op = op;
  f->wait_line = line;
  f->wait_file = file;
  f->wait_gen = g;
  resolve_simd(w, s, f->sg);
  if (f->state != F_RUNNABLE) to_scheduler(w, f);
  *active = s.lane_masks[g & 1][f->lane];
  *lane = f->lane;
  return &s.data[g & 1][0][0];
}

extern "C" void simt_rt_barrier(int line, const char* file) {
  Worker* w = tl_w;
  Fiber* f = w->cur;
  if (w->exited > 0)
    fail_here(fmt("%s (%s) is not reached by every thread of the %s: threads %s "
                  "already returned (a barrier in divergent control flow deadlocks or is undefined on the GPU)",
                  words(w).barrier, site(file, line).c_str(), words(w).block, thread_list(w, [](const Fiber& x) { return x.state == F_DONE; }).c_str()));
  if (w->arrived == 0) {
    w->barrier_line = line;
    w->barrier_file = file;
    w->barrier_first = (int)f->tid;
  } else if (!same_site(file, line, w->barrier_file, w->barrier_line)) {
    fail_here(fmt("divergent %s barriers: threads %s wait at the %s on %s but this "
                  "thread reached the one on %s", words(w).block,
                  thread_list(w, [](const Fiber& x) { return x.state == F_BARRIER; }).c_str(), words(w).barrier,
                  site(w->barrier_file, w->barrier_line).c_str(), site(file, line).c_str()));
  }
  w->arrived++;
  f->state = F_BARRIER;
  f->wait_line = line;
  f->wait_file = file;
  SimdGroup& s = w->sgs[f->sg];
  s.at_barrier++;
  resolve_simd(w, s, f->sg);
  if (w->arrived == w->live) {
    for (int i = 0; i < w->n; ++i)
      if (w->fibers[i].state == F_BARRIER) w->fibers[i].state = F_RUNNABLE;
    for (auto& g : w->sgs) g.at_barrier = 0;
    w->arrived = 0;
    return;
  }
  to_scheduler(w, f);
}

static void on_thread_exit(Worker* w, Fiber* f) {
  w->live--;
  w->exited++;
  SimdGroup& s = w->sgs[f->sg];
  s.live--;
  f->state = F_DONE;
  if (w->arrived > 0)
    fail_here(fmt("thread returned without reaching the %s (%s) that threads %s wait at "
                  "(divergent barrier: this deadlocks or is undefined on the GPU)", words(w).barrier,
                  site(w->barrier_file, w->barrier_line).c_str(), thread_list(w, [](const Fiber& x) { return x.state == F_BARRIER; }).c_str()));
  resolve_simd(w, s, f->sg);
}

extern "C" void simt_fiber_main(Fiber* f) {
  Worker* w = tl_w;
  w->L->fn(&f->info, w->L->bufs, w->L->args);
  on_thread_exit(w, f);
  if (w->L->thread_exit && f->state_slot) w->L->thread_exit(f->state_slot);
  f->state_slot = nullptr;
  to_scheduler(w, f);
  __builtin_trap();
}

// ------------------------------------------------------------------ block-shared memory
extern "C" void* simt_rt_shared_alloc(int slot, size_t size, size_t align, const char* name) {
  Worker* w = tl_w;
  if (slot < 0 || slot >= kMaxSlots) fail_here(fmt("too many %s variables", words(w).block));
  Slot& sl = w->slots[slot];
  if (sl.gen == w->slot_gen) return w->arena + sl.off;
  long a = (long)std::max<size_t>(align, 16);
  long off = (w->arena_used + kCanary + a - 1) / a * a;
  w->tg_bytes += (long)((size + 15) / 16 * 16);
  if (w->tg_bytes > w->L->tg_mem_limit || off + (long)size + kCanary > w->arena_cap) {
    std::string list;
    for (int i = 0; i < kMaxSlots; ++i)
      if (w->slots[i].gen == w->slot_gen) list += fmt("%s'%s' %ld B", list.empty() ? "" : ", ", w->slots[i].name, w->slots[i].size);
    list += fmt("%s'%s' %zu B", list.empty() ? "" : ", ", name, size);
    fail_here(fmt("%s exceeds the %d-byte limit: %ld bytes declared (%s)", words(w).shared, w->L->tg_mem_limit,
                  w->tg_bytes, list.c_str()));
  }
  memset(w->arena + w->arena_used, kCanaryByte, (size_t)(off - w->arena_used));
  memset(w->arena + off, 0xFF, size);  // uninitialised shared memory reads as NaN / -1
  memset(w->arena + off + size, kCanaryByte, kCanary);
  w->canaries.push_back({w->arena_used, off - w->arena_used});
  w->canaries.push_back({off + (long)size, kCanary});
  w->arena_used = off + (long)size + kCanary;
  sl = Slot{off, (long)size, name, w->slot_gen};
  return w->arena + off;
}

extern "C" unsigned char* simt_rt_shared_arena(size_t* used) {
  Worker* w = tl_w;
  if (used) *used = (size_t)w->arena_used;
  return w->arena;
}

static void check_canaries(Worker* w, Fiber* f) {
  for (auto& c : w->canaries) {
    for (long i = 0; i < c.second; ++i) {
      if (w->arena[c.first + i] == kCanaryByte) continue;
      long addr = c.first + i;
      std::string near = "?";
      for (int s = 0; s < kMaxSlots; ++s) {
        const Slot& sl = w->slots[s];
        if (sl.gen != w->slot_gen) continue;
        if (addr >= sl.off + sl.size && addr < sl.off + sl.size + kCanary)
          near = fmt("past the end of %s '%s' (%ld bytes)", words(w).shared_array, sl.name, sl.size);
        else if (addr < sl.off && addr >= sl.off - kCanary)
          near = fmt("before the start of %s '%s'", words(w).shared_array, sl.name);
      }
      report(w, f, fmt("out-of-bounds write to %s ", words(w).shared) + near +
                       fmt(" (detected after this thread ran; the write happened since its previous barrier or "
                           "%s)", words(w).collective));
      return;
    }
  }
}

// ------------------------------------------------------------------ device buffers
extern "C" void simt_rt_oob(const simt_buffer* b, const void* lo, const void* hi, const void* addr, int nbytes,
                           int is_const) {
  long off = (long)((const char*)addr - (const char*)(b ? b->ptr : lo));
  long size = (long)((const char*)hi - (const char*)lo);
  const char* kind = is_const ? "read of" : "access (read or write) to";
  std::string bname = b ? fmt("%s '%s' (%s)", b->is_const ? "input" : "output", b->name, b->type) : "a constant array";
  long elem = b && b->elem_size ? b->elem_size : 1;
  fail_here(fmt("out-of-bounds %s device buffer %s: %d bytes at byte offset %ld (element %ld) but the buffer "
                "holds %ld bytes (%ld elements)",
                kind, bname.c_str(), nbytes, off, off / elem, size, size / elem));
}

extern "C" void simt_rt_misaligned(const simt_buffer* b, const void* addr, int align) {
  fail_here(fmt("misaligned access to device buffer '%s': address %% %d == %d (a vector pointer cast needs an "
                "aligned address)",
                b ? b->name : "?", align, (int)((uintptr_t)addr % (uintptr_t)align)));
}

extern "C" void simt_rt_fail(const char* what) { fail_here(what); }
extern "C" int simt_rt_lane(void) { return tl_w->cur->lane; }
extern "C" const simt_thread_info* simt_rt_thread(void) { return &tl_w->cur->info; }
extern "C" void** simt_rt_thread_state(void) { return &tl_w->cur->state_slot; }
extern "C" int simt_rt_abi_version(void) { return SIMT_ABI_VERSION; }

// ------------------------------------------------------------------ faults
static void on_fault(int sig, siginfo_t* si, void* ctx) {
  Worker* w = tl_w;
  if (w && w->cur) {
    Fiber* f = w->cur;
    char* a = (char*)si->si_addr;
    std::string what;
    if (sig == SIGFPE)
      what = "arithmetic exception in kernel code (integer division by zero?)";
    else if (a >= f->guard_lo && a < f->stack_lo)
      what = fmt("stack overflow: the thread used more than %d KB of stack (large thread-local arrays?)",
                 w->L->stack_kb);
    else
      what = fmt("invalid memory access at address %p (a raw thread/threadgroup pointer went out of range)", a);
    fail_here(what);
  }
  (void)ctx;
  // Not a kernel thread: put the previous handler back; the fault repeats into it.
  sigaction(sig, sig == SIGSEGV ? &g_old_segv : sig == SIGBUS ? &g_old_bus : &g_old_fpe, nullptr);
}

// ------------------------------------------------------------------ scheduling
static uint64_t next_rand(uint64_t& s) {
  s ^= s << 13; s ^= s >> 7; s ^= s << 17;
  return s;
}

static void setup_tg(Worker* w, long t) {
  const simt_launch* L = w->L;
  uint32_t ntg[3], dims[3];
  for (int d = 0; d < 3; ++d) ntg[d] = (L->grid[d] + L->threadgroup[d] - 1) / L->threadgroup[d];
  w->tgpos[0] = (uint32_t)(t % ntg[0]);
  w->tgpos[1] = (uint32_t)((t / ntg[0]) % ntg[1]);
  w->tgpos[2] = (uint32_t)(t / ((long)ntg[0] * ntg[1]));
  for (int d = 0; d < 3; ++d) dims[d] = std::min(L->threadgroup[d], L->grid[d] - w->tgpos[d] * L->threadgroup[d]);
  int n = (int)(dims[0] * dims[1] * dims[2]);
  int dispatch_n = (int)(L->threadgroup[0] * L->threadgroup[1] * L->threadgroup[2]);
  w->n = w->live = n;
  w->exited = w->arrived = 0;
  w->barrier_line = -1;
  int nsg = (n + SIMT_WARP - 1) / SIMT_WARP;
  for (int s = 0; s < nsg; ++s) {
    SimdGroup& g = w->sgs[s];
    g.live = std::min(SIMT_WARP, n - s * SIMT_WARP);
    g.arrived = g.at_barrier = g.gen = 0;
    g.arrived_mask = 0;
  }
  for (int i = 0; i < n; ++i) {
    Fiber& f = w->fibers[i];
    simt_thread_info& in = f.info;
    uint32_t p[3] = {(uint32_t)(i % dims[0]), (uint32_t)((i / dims[0]) % dims[1]), (uint32_t)(i / (dims[0] * dims[1]))};
    for (int d = 0; d < 3; ++d) {
      in.thread_position_in_threadgroup[d] = p[d];
      in.threadgroup_position_in_grid[d] = w->tgpos[d];
      in.thread_position_in_grid[d] = w->tgpos[d] * L->threadgroup[d] + p[d];
      in.threads_per_threadgroup[d] = dims[d];
      in.dispatch_threads_per_threadgroup[d] = L->threadgroup[d];
      in.threads_per_grid[d] = L->grid[d];
      in.threadgroups_per_grid[d] = ntg[d];
      in.grid_origin[d] = 0;
      in.grid_size[d] = L->grid[d];
    }
    in.thread_index_in_threadgroup = (uint32_t)i;
    in.thread_index_in_simdgroup = (uint32_t)(i % SIMT_WARP);
    in.simdgroup_index_in_threadgroup = (uint32_t)(i / SIMT_WARP);
    in.simdgroups_per_threadgroup = (uint32_t)nsg;
    in.dispatch_simdgroups_per_threadgroup = (uint32_t)((dispatch_n + SIMT_WARP - 1) / SIMT_WARP);
    in.thread_index_in_quadgroup = (uint32_t)(i % 4);
    in.quadgroup_index_in_threadgroup = (uint32_t)(i / 4);
    in.quadgroups_per_threadgroup = (uint32_t)((n + 3) / 4);
    in.dispatch_quadgroups_per_threadgroup = (uint32_t)((dispatch_n + 3) / 4);
    in.thread_execution_width = SIMT_WARP;
    in.threads_per_simdgroup = SIMT_WARP;
    f.tid = (uint32_t)i;
    f.sg = i / SIMT_WARP;
    f.lane = i % SIMT_WARP;
    f.state = F_RUNNABLE;
    if (f.state_slot && L->thread_exit) L->thread_exit(f.state_slot);  // a thread that failed
    f.state_slot = nullptr;
    fiber_prepare(&f);
  }
  w->slot_gen++;
  w->arena_used = 0;
  w->tg_bytes = 0;
  w->canaries.clear();
}

static std::string deadlock_message(Worker* w) {
  std::string op;
  for (int i = 0; i < w->n; ++i)
    if (w->fibers[i].state == F_SIMD) {
      const Fiber& f = w->fibers[i];
      op = fmt(" (%s, %s)", op_name(w->L, f.wait_op), site(f.wait_file, f.wait_line).c_str());
      break;
    }
  return fmt("deadlock: no thread can make progress; waiting at a barrier: %s; waiting in a %s%s: %s; "
             "returned: %s",
             thread_list(w, [](const Fiber& f) { return f.state == F_BARRIER; }).c_str(), words(w).collective, op.c_str(),
             thread_list(w, [](const Fiber& f) { return f.state == F_SIMD; }).c_str(),
             thread_list(w, [](const Fiber& f) { return f.state == F_DONE; }).c_str());
}

static bool run_tg(Worker* w, long t) {
  setup_tg(w, t);
  int n = w->n;
  w->order.resize(n);
  for (int i = 0; i < n; ++i) w->order[i] = w->L->schedule == 1 ? n - 1 - i : i;
  while (w->live > 0 && !w->failed) {
    if (w->L->schedule == 2)
      for (int i = n - 1; i > 0; --i) std::swap(w->order[i], w->order[next_rand(w->rng) % (uint64_t)(i + 1)]);
    bool progressed = false;
    for (int k = 0; k < n && !w->failed; ++k) {
      Fiber* f = &w->fibers[w->order[k]];
      if (f->state != F_RUNNABLE) continue;
      progressed = true;
      w->cur = f;
      to_fiber(w, f);
      w->cur = nullptr;
      if (!w->failed && !w->canaries.empty()) check_canaries(w, f);
    }
    if (!progressed && !w->failed && w->live > 0) report(w, nullptr, deadlock_message(w));
  }
  return !w->failed;
}

static bool worker_init(Worker* w, std::string& err) {
  const simt_launch* L = w->L;
  int nmax = (int)(L->threadgroup[0] * L->threadgroup[1] * L->threadgroup[2]);
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t stack = ((size_t)L->stack_kb * 1024 + page - 1) / page * page;
  w->stack_stride = stack + page;  // one guard page below each stack
  w->stack_map = w->stack_stride * (size_t)nmax;
  void* m = mmap(nullptr, w->stack_map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) { err = "cannot map fiber stacks"; return false; }
  w->stack_mem = (char*)m;
  w->fibers.assign((size_t)nmax, Fiber());
  for (int i = 0; i < nmax; ++i) {
    Fiber& f = w->fibers[i];
    f.guard_lo = w->stack_mem + (size_t)i * w->stack_stride;
    f.stack_lo = f.guard_lo + page;
    f.stack_hi = f.stack_lo + stack;
    mprotect(f.guard_lo, page, PROT_NONE);
  }
  w->sgs.resize((size_t)(nmax + SIMT_WARP - 1) / SIMT_WARP);
  w->arena_cap = (long)L->tg_mem_limit * 2 + kMaxSlots * 2 * kCanary + 4096;
  w->arena = (unsigned char*)aligned_alloc(64, (size_t)w->arena_cap);
  for (auto& s : w->slots) s.gen = -1;
  w->altstack = (char*)malloc(1 << 16);
  return w->arena != nullptr && w->altstack != nullptr;
}

static void worker_free(Worker* w) {
  for (auto& f : w->fibers)
    if (f.state_slot && w->L->thread_exit) w->L->thread_exit(f.state_slot);
  if (w->stack_mem) munmap(w->stack_mem, w->stack_map);
  free(w->arena);
  free(w->altstack);
}

static void worker_run(Shared* sh, int index) {
  Worker w;
  w.sh = sh;
  w.L = sh->L;
  w.rng = sh->L->seed * 0x9E3779B97F4A7C15ull + (uint64_t)index * 0xBF58476D1CE4E5B9ull + 1;
  std::string err;
  stack_t ss, old_ss;
  bool ok = worker_init(&w, err);
  if (ok) {
    ss.ss_sp = w.altstack;
    ss.ss_size = 1 << 16;
    ss.ss_flags = 0;
    sigaltstack(&ss, &old_ss);
  }
  tl_w = &w;
  const simt_launch* L = sh->L;
  long ntg = 1;
  for (int d = 0; d < 3; ++d) ntg *= (L->grid[d] + L->threadgroup[d] - 1) / L->threadgroup[d];
  while (ok && !sh->stop.load()) {
    long t = sh->next.fetch_add(1);
    if (t >= ntg) break;
    if (!run_tg(&w, t)) {
      std::lock_guard<std::mutex> g(sh->m);
      if (sh->err_tg < 0 || t < sh->err_tg) { sh->err_tg = t; sh->err = w.err; }
      sh->stop.store(true);
    }
  }
  if (!ok) {
    std::lock_guard<std::mutex> g(sh->m);
    sh->err_tg = 0;
    sh->err = err;
    sh->stop.store(true);
  }
  tl_w = nullptr;
  if (ok) sigaltstack(&old_ss, nullptr);
  worker_free(&w);
}

extern "C" int simt_rt_launch(const simt_launch* L) {
  auto set_err = [&](const std::string& s) { snprintf(L->err, (size_t)L->errlen, "%s", s.c_str()); };
  long ntg = 1, tg_threads = 1;
  for (int d = 0; d < 3; ++d) {
    if (L->grid[d] == 0) return 0;
    if (L->threadgroup[d] == 0) { set_err("threadgroup dimensions must be positive"); return 2; }
    ntg *= (L->grid[d] + L->threadgroup[d] - 1) / L->threadgroup[d];
    tg_threads *= L->threadgroup[d];
  }
  if (tg_threads > L->max_threads) {
    set_err(fmt("Thread group size (%ld) is greater than the maximum allowed threads per threadgroup (%d).",
                tg_threads, L->max_threads));
    return 2;
  }
  Shared sh;
  sh.L = L;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_old_segv);
  sigaction(SIGBUS, &sa, &g_old_bus);
  sigaction(SIGFPE, &sa, &g_old_fpe);
  int nw = (int)std::max(1L, std::min((long)L->nworkers, ntg));
  std::vector<std::thread> threads;
  for (int i = 1; i < nw; ++i) threads.emplace_back(worker_run, &sh, i);
  worker_run(&sh, 0);
  for (auto& t : threads) t.join();
  sigaction(SIGSEGV, &g_old_segv, nullptr);
  sigaction(SIGBUS, &g_old_bus, nullptr);
  sigaction(SIGFPE, &g_old_fpe, nullptr);
  if (sh.err_tg >= 0) {
    set_err(sh.err);
    return 1;
  }
  return 0;
}
