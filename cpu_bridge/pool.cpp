#include "pool.h"

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>
#define ATTN_HAVE_DLFCN 1
#define ATTN_HAVE_FORK_HOOK 1
#endif

namespace mlx_attn_cpu {
namespace {

// Items 0 .. n-1 of one parallel_for, handed out in order to whichever thread asks next; the
// first exception thrown by fn is kept (and the remaining items dropped) for the caller.
struct Handout {
  const std::function<void(int, int)>* fn = nullptr;
  int n = 0;
  std::atomic<int> next{0};
  std::mutex m;
  std::exception_ptr error;

  void reset(const std::function<void(int, int)>* f, int count) {
    fn = f; n = count; next.store(0); error = nullptr;
  }
  void drain(int tid) {
    for (;;) {
      const int item = next.fetch_add(1);
      if (item >= n) return;
      try {
        (*fn)(item, tid);
      } catch (...) {  // never let it leave a worker (or an OpenMP region)
        std::lock_guard<std::mutex> lk(m);
        if (!error) error = std::current_exception();
        next.store(n);
      }
    }
  }
};

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
      ++gen_;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  std::mutex& call_mutex() { return call_; }

  // Called with call_ held.
  void run(int n, int threads, const std::function<void(int, int)>& fn) {
    while (int(workers_.size()) < threads - 1) {
      const int id = int(workers_.size()) + 1;
      workers_.emplace_back([this, id] { loop(id); });
    }
    {
      std::lock_guard<std::mutex> lk(m_);
      job_.reset(&fn, n);
      helpers_ = threads - 1;
      pending_ = threads - 1;
      ++gen_;
    }
    cv_.notify_all();
    job_.drain(0);
    std::unique_lock<std::mutex> lk(m_);
    done_cv_.wait(lk, [this] { return pending_ == 0; });
    if (job_.error) std::rethrow_exception(job_.error);
  }

 private:
  void loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return gen_ != seen; });
        seen = gen_;
        if (stop_) return;
        if (id > helpers_) continue;
      }
      job_.drain(id);
      std::lock_guard<std::mutex> lk(m_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }

  std::mutex call_;
  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  Handout job_;
  int helpers_ = 0, pending_ = 0;
  uint64_t gen_ = 0;
  bool stop_ = false;
};

// Leaked on purpose: joining threads during interpreter shutdown can deadlock.
std::atomic<Pool*> g_pool{nullptr};

#ifdef ATTN_HAVE_FORK_HOOK
// A forked child has none of its parent's threads: it gets a fresh pool (the parent's copy, whose
// workers it would wait for forever, is leaked) and stops using the OpenMP runtime, whose team
// is in the same state (see parallel_for).
void after_fork_in_child() { g_pool.store(new Pool()); }
#endif

Pool& pool() {
  static std::once_flag once;
  std::call_once(once, [] {
    g_pool.store(new Pool());
#ifdef ATTN_HAVE_FORK_HOOK
    pthread_atfork(nullptr, nullptr, after_fork_in_child);
#endif
  });
  return *g_pool.load();
}

// ---- an already loaded OpenMP runtime, through libgomp's ABI ----
using GompParallel = void (*)(void (*)(void*), void*, unsigned, unsigned);
using OmpThreadNum = int (*)();
std::atomic<GompParallel> g_gomp_parallel{nullptr};
std::atomic<OmpThreadNum> g_omp_thread_num{nullptr};
std::atomic<long> g_openmp_pid{0};  // the process that attached it (not a forked child)

long this_pid() {
#ifdef ATTN_HAVE_FORK_HOOK
  return long(getpid());
#else
  return 0;
#endif
}
thread_local bool tl_use_openmp = false;

struct OpenMPJob {
  Handout items;
  OmpThreadNum thread_num;
};

// The body every thread of the OpenMP team runs: the same hand-out as our pool's workers.
void openmp_body(void* data) {
  auto* job = static_cast<OpenMPJob*>(data);
  job->items.drain(job->thread_num());
}

}  // namespace

std::string attach_openmp(const std::string& path) {
#ifdef ATTN_HAVE_DLFCN
  if (g_gomp_parallel.load()) return "";
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD | RTLD_LOCAL);
  if (!lib) return "not loaded in this process: " + path;
  auto par = reinterpret_cast<GompParallel>(dlsym(lib, "GOMP_parallel"));
  auto num = reinterpret_cast<OmpThreadNum>(dlsym(lib, "omp_get_thread_num"));
  if (!par || !num) return "no GOMP_parallel / omp_get_thread_num in " + path;
  g_omp_thread_num.store(num);
  g_openmp_pid.store(this_pid());
  g_gomp_parallel.store(par);  // the library stays loaded: the handle is never closed
  return "";
#else
  return "no dlopen on this platform";
#endif
}

bool openmp_attached() { return g_gomp_parallel.load() != nullptr; }

OpenMPScope::OpenMPScope(bool on) : prev_(tl_use_openmp) { tl_use_openmp = on; }
OpenMPScope::~OpenMPScope() { tl_use_openmp = prev_; }

void parallel_for(int n, int threads, const std::function<void(int, int)>& fn) {
  if (n <= 0) return;
  if (threads > n) threads = n;
  if (threads <= 1) {
    for (int i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  if (tl_use_openmp) {
    GompParallel par = g_gomp_parallel.load();
    // not in a forked child: its OpenMP team would wait for the parent's threads
    if (par && g_openmp_pid.load() == this_pid()) {
      // team threads are numbered 0 .. (at most) threads - 1, the caller being 0
      OpenMPJob job;
      job.items.reset(&fn, n);
      job.thread_num = g_omp_thread_num.load();
      par(openmp_body, &job, unsigned(threads), 0);
      if (job.items.error) std::rethrow_exception(job.items.error);
      return;
    }
  }
  Pool& p = pool();
  std::unique_lock<std::mutex> lk(p.call_mutex(), std::try_to_lock);
  if (!lk.owns_lock()) {
    for (int i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  p.run(n, threads, fn);
}

}  // namespace mlx_attn_cpu
