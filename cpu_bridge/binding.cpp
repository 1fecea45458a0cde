// nanobind module mlx_attn.backends.cpu._kernel: the kernel on raw pointers + element strides, for numpy
// and torch CPU arrays (the Python glue in mlx_attn/backends/cpu/ passes data pointers, never copies).
//
// forward() and backward() take every field of the problem as a keyword argument, none of them
// defaulted: a missing, misspelled or extra argument is a TypeError naming it (see `diagnose`),
// and None is accepted only for the optional arrays (lse in forward, mask, cu_q / cu_k, dlse).
// An array argument is either
//   - a tuple (data pointer, element strides...) with one stride per dim in (b, h, l, d) order
//     (torch tensors: `t.data_ptr()` and `t.stride()` cost ~0.1 us each, where a DLPack export,
//     i.e. an nb::ndarray argument, costs microseconds per tensor), or
//   - an object with the buffer protocol (numpy) of exactly that rank, read in place here; a
//     size-1 dim gets stride 0 (broadcast), so masks of any broadcastable shape are read in place.
// cu_q / cu_k are (data pointer,) or a contiguous 1-d int32 buffer.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "attn.h"
#include "peak.h"
#include "pool.h"

namespace nb = nanobind;
using namespace mlx_attn_cpu;

namespace {

// An array argument: data pointer + element strides (b, h, l, d) or (b, h, l). N = 0: a pointer to
// a contiguous int32 vector (cu_seqlens). Writable: a buffer must be writable (an output).
template <int N, bool Writable> struct Arr {
  const void* ptr = nullptr;
  int64_t s[N > 0 ? N : 1] = {};
};
using In4 = Arr<4, false>;
using In3 = Arr<3, false>;
using Out4 = Arr<4, true>;
using Out3 = Arr<3, true>;
using Cu = Arr<0, false>;
template <class T> using Opt = std::optional<T>;

// A scalar argument converted as nb::cast converts (a numpy integer for an int, an int for a
// float), also in nanobind's first, non-converting pass over the overloads: there the second
// overload below, which takes anything, would otherwise get such a call.
template <class T> struct Conv { T v; };

// A (pointer, n strides) tuple of Python ints; false (no Python error set) when `src` is not one.
bool read_tuple(PyObject* src, int n, const void** ptr, int64_t* s) {
  if (!PyTuple_CheckExact(src) || PyTuple_GET_SIZE(src) != n + 1) return false;
  for (int i = 0; i <= n; ++i)
    if (!PyLong_Check(PyTuple_GET_ITEM(src, i))) return false;
  unsigned long long p = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(src, 0));
  bool ok = !PyErr_Occurred();
  for (int i = 0; ok && i < n; ++i) {
    s[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(src, i + 1));
    ok = !PyErr_Occurred();
  }
  if (!ok) { PyErr_Clear(); return false; }
  *ptr = reinterpret_cast<const void*>(uintptr_t(p));
  return true;
}

// A buffer-protocol array of rank n (n = 0: contiguous 1-d with 4-byte items); size-1 dims get
// stride 0.
bool read_buffer(PyObject* src, int n, bool writable, const void** ptr, int64_t* s) {
  if (!PyObject_CheckBuffer(src)) return false;
  Py_buffer view;
  if (PyObject_GetBuffer(src, &view, writable ? PyBUF_RECORDS : PyBUF_RECORDS_RO) != 0) {
    PyErr_Clear();
    return false;
  }
  bool ok = view.itemsize > 0;
  if (n == 0) {
    const char kind = view.format ? view.format[std::strlen(view.format) - 1] : 'B';
    ok = ok && view.ndim == 1 && view.itemsize == 4 && (kind == 'i' || kind == 'l') &&
         (view.shape[0] <= 1 || view.strides[0] == 4);
  } else {
    ok = ok && view.ndim == n;
    for (int i = 0; ok && i < n; ++i) {
      ok = view.strides[i] % view.itemsize == 0;
      s[i] = view.shape[i] == 1 ? 0 : view.strides[i] / view.itemsize;
    }
  }
  *ptr = view.buf;
  PyBuffer_Release(&view);
  return ok;
}

}  // namespace

namespace nanobind::detail {
template <int N, bool W> struct type_caster<Arr<N, W>> {
  using Self = Arr<N, W>;
  NB_TYPE_CASTER(Self, (const_name<W>("out", "in") + const_name("_array") + const_name<N>()))
  bool from_python(handle src, uint8_t, cleanup_list*) noexcept {
    return read_tuple(src.ptr(), N, &value.ptr, value.s) ||
           read_buffer(src.ptr(), N, W, &value.ptr, value.s);
  }
};
template <class T> struct type_caster<Conv<T>> {
  NB_TYPE_CASTER(Conv<T>, make_caster<T>::Name)
  bool from_python(handle src, uint8_t flags, cleanup_list* cleanup) noexcept {
    make_caster<T> c;
    if (!c.from_python(src, flags | uint8_t(cast_flags::convert), cleanup)) return false;
    value.v = c.value;
    return true;
  }
};
}  // namespace nanobind::detail

namespace {

using Int = Conv<int>;
using Int64 = Conv<int64_t>;
using Float = Conv<float>;
using Bool = Conv<bool>;

template <int N, bool W> void* set(const Arr<N, W>& a, int64_t* strides) {
  for (int i = 0; i < N; ++i) strides[i] = a.s[i];
  return const_cast<void*>(a.ptr);
}
template <int N, bool W> void* set(const Opt<Arr<N, W>>& a, int64_t* strides) {
  return a ? set(*a, strides) : nullptr;
}

Problem common(Int dtype, Int B, Int Hq, Int Hkv, Int Lq, Int Lk, Int D, Int Dv, Float scale,
               Float softcap, Bool causal, Int64 wl, Int64 wr, const In4& q, const In4& k,
               const In4& v, Bool out_f32, const Opt<In4>& mask, Int mask_kind, Int mask_type,
               const Opt<Cu>& cu_q, const Opt<Cu>& cu_k) {
  Problem p;
  p.dtype = dtype.v;
  p.B = B.v; p.Hq = Hq.v; p.Hkv = Hkv.v; p.Lq = Lq.v; p.Lk = Lk.v; p.D = D.v; p.Dv = Dv.v;
  p.scale = scale.v;
  p.softcap = softcap.v;
  p.wl = window_side(wl.v);
  p.wr = fold_causal(causal.v, window_side(wr.v));
  p.q = set(q, p.qs);
  p.k = set(k, p.ks);
  p.v = set(v, p.vs);
  p.out_f32 = out_f32.v;
  p.mask = set(mask, p.ms);
  if (p.mask) {  // mask_kind and mask_type are required, but read only with a mask
    p.mask_kind = mask_kind.v;
    p.mask_type = mask_type.v;
  }
  int64_t unused[1];
  p.cu_q = static_cast<const int32_t*>(set(cu_q, unused));
  p.cu_k = static_cast<const int32_t*>(set(cu_k, unused));
  return p;
}

// The names of the parameters of forward_args / backward_args, in their order: one list serves
// the typed binding (nb::arg) and the diagnosis of a call that does not bind.
constexpr std::array<const char*, 25> kForwardNames = {
    "dtype", "B", "Hq", "Hkv", "Lq", "Lk", "D", "Dv", "scale", "softcap", "causal", "wl", "wr",
    "q", "k", "v", "o", "out_f32", "lse", "mask", "mask_kind", "mask_type", "cu_q", "cu_k",
    "openmp"};
constexpr std::array<const char*, 30> kBackwardNames = {
    "dtype", "B", "Hq", "Hkv", "Lq", "Lk", "D", "Dv", "scale", "softcap", "causal", "wl", "wr",
    "q", "k", "v", "o", "out_f32", "lse", "mask", "mask_kind", "mask_type", "cu_q", "cu_k",
    "dout", "dlse", "dq", "dk", "dv", "openmp"};

void forward_args(Int dtype, Int B, Int Hq, Int Hkv, Int Lq, Int Lk, Int D, Int Dv, Float scale,
                  Float softcap, Bool causal, Int64 wl, Int64 wr, const In4& q, const In4& k,
                  const In4& v, const Out4& o, Bool out_f32, const Opt<Out3>& lse,
                  const Opt<In4>& mask, Int mask_kind, Int mask_type, const Opt<Cu>& cu_q,
                  const Opt<Cu>& cu_k, Bool openmp) {
  Problem p = common(dtype, B, Hq, Hkv, Lq, Lk, D, Dv, scale, softcap, causal, wl, wr, q, k, v,
                     out_f32, mask, mask_kind, mask_type, cu_q, cu_k);
  p.o = set(o, p.os);
  p.lse = static_cast<float*>(set(lse, p.ls));
  nb::gil_scoped_release release;
  OpenMPScope scope(openmp.v);
  forward(p);
}

void backward_args(Int dtype, Int B, Int Hq, Int Hkv, Int Lq, Int Lk, Int D, Int Dv,
                   Float scale, Float softcap, Bool causal, Int64 wl, Int64 wr, const In4& q,
                   const In4& k, const In4& v, const In4& o, Bool out_f32, const In3& lse,
                   const Opt<In4>& mask, Int mask_kind, Int mask_type, const Opt<Cu>& cu_q,
                   const Opt<Cu>& cu_k, const In4& dout, const Opt<In3>& dlse, const Out4& dq,
                   const Out4& dk, const Out4& dv, Bool openmp) {
  Problem p = common(dtype, B, Hq, Hkv, Lq, Lk, D, Dv, scale, softcap, causal, wl, wr, q, k, v,
                     out_f32, mask, mask_kind, mask_type, cu_q, cu_k);
  p.o = set(o, p.os);
  p.lse = static_cast<float*>(set(lse, p.ls));
  p.dout = set(dout, p.dos);
  p.dlse = static_cast<const float*>(set(dlse, p.dls));
  p.dq = set(dq, p.dqs);
  p.dk = set(dk, p.dks);
  p.dv = set(dv, p.dvs);
  nb::gil_scoped_release release;
  OpenMPScope scope(openmp.v);
  backward(p);
}

[[noreturn]] void type_error(const std::string& msg) { throw nb::type_error(msg.c_str()); }

// What an argument of each type must be, for the diagnosis.
template <class T> struct tag {};
std::string describe(tag<Int>) { return "an int in the int32 range"; }
std::string describe(tag<Int64>) { return "an int in the int64 range"; }
std::string describe(tag<Float>) { return "a float"; }
std::string describe(tag<Bool>) { return "a bool"; }
template <int N, bool W> std::string describe(tag<Arr<N, W>>) {
  if (N == 0) return "(data pointer,) or a contiguous 1-d int32 buffer";
  const std::string n = std::to_string(N);
  return "(data pointer, " + n + " element strides) or a " + (W ? "writable " : "") + "rank-" + n +
         " buffer with strides a multiple of the item size";
}
template <class T> std::string describe(tag<Opt<T>>) { return describe(tag<T>{}) + ", or None"; }

// The second overload of forward / backward: reached only by a call the typed one rejects (never
// by a valid call: the casters are the same, and nanobind interns keyword names built at run
// time). Names the first wrong argument (positional, unknown, missing, or a value that does not
// convert) in a TypeError; should every argument convert after all, the call runs.
template <class... A, size_t... I>
void diagnose(const char* fname, const std::array<const char*, sizeof...(A)>& names,
              void (*fn)(A...), const nb::args& args, const nb::kwargs& kwargs,
              std::index_sequence<I...>) {
  const std::string f = std::string(fname) + "(): ";
  if (args.size())
    type_error(f + "takes keyword arguments only, got " + std::to_string(args.size()) +
               " positional");
  for (auto [key, value] : kwargs) {
    std::string k = nb::cast<std::string>(nb::str(key));
    bool known = false;
    for (const char* n : names) known = known || k == n;
    if (!known) type_error(f + "unexpected argument '" + k + "'");
  }
  for (const char* n : names)
    if (!kwargs.contains(n)) type_error(f + "missing argument '" + n + "'");
  std::tuple<nb::detail::make_caster<std::decay_t<A>>...> casters;
  auto check = [&](auto& caster, const char* name, std::string type) {
    nb::handle value = kwargs[name];
    if (caster.from_python(value, uint8_t(nb::detail::cast_flags::convert), nullptr)) return;
    // an array by its type and shape, not its (long) repr
    std::string shown = nb::hasattr(value, "shape")
        ? nb::cast<std::string>(nb::str("<{} of shape {}>").attr("format")(
              nb::type_name(value.type()), nb::str(value.attr("shape"))))
        : nb::cast<std::string>(nb::repr(value));
    type_error(f + "argument '" + name + "' = " + shown + " is not " + type);
  };
  (check(std::get<I>(casters), names[I], describe(tag<std::decay_t<A>>{})), ...);
  fn(std::get<I>(casters).value...);
}

// (std::optional parameters accept None without .none())
template <class F, size_t N, size_t... I>
void def_typed(nb::module_& m, const char* name, F fn, const std::array<const char*, N>& names,
               const char* doc, std::index_sequence<I...>) {
  m.def(name, fn, nb::kw_only(), nb::arg(names[I])..., doc);
}

// forward / backward: `fn` with one required keyword argument per name, then the overload that
// diagnoses a call `fn` does not take.
template <class... A, size_t N>
void def_strict(nb::module_& m, const char* name, void (*fn)(A...),
                const std::array<const char*, N>& names, const char* doc) {
  static_assert(sizeof...(A) == N, "one name per parameter");
  auto seq = std::make_index_sequence<N>{};
  def_typed(m, name, fn, names, doc, seq);
  m.def(name, [name, fn, &names, seq](nb::args args, nb::kwargs kwargs) {
    diagnose(name, names, fn, args, kwargs, seq);
  });
}

// fp32 GFLOP/s of `isa`'s register-resident FMA loop (peak.h) on `threads` threads (0: the
// kernel's), the best of three runs of about `seconds` each: the limit the kernels are measured
// against. The work is many items of about a millisecond, so the dynamic schedule keeps every
// thread busy until the end.
double fma_peak(const std::string& name, double seconds, int threads) {
  using FmaLoop = double (*)(int64_t, float*);
  FmaLoop fn = nullptr;
  if (name == "generic") fn = fma_loop_generic;
#if defined(__x86_64__) || defined(_M_X64)
  if (name == "avx2") fn = fma_loop_avx2;
  if (name == "avx512") fn = fma_loop_avx512;
  if (name == "avx512bf16") fn = fma_loop_avx512bf16;
#ifdef MLX_ATTN_AMX
  if (name == "avx512amx") fn = fma_loop_avx512amx;
#endif
#endif
#if defined(__aarch64__)
  if (name == "neon") fn = fma_loop_neon;
  if (name == "neonbf16") fn = fma_loop_neonbf16;
#endif
  if (!fn || !isa_supported(name.c_str()))
    throw std::invalid_argument("ISA '" + name + "' is not supported on this CPU (or unknown)");
  if (!(seconds > 0.0 && seconds <= 60.0)) throw std::invalid_argument("seconds must be in (0, 60]");
  if (threads < 0) throw std::invalid_argument("threads must be >= 0 (0 = the kernel's)");
  const int T = threads > 0 ? threads : num_threads();
  using clock = std::chrono::steady_clock;
  auto since = [](clock::time_point t) {
    return std::chrono::duration<double>(clock::now() - t).count();
  };
  float sink = 0.0f;
  int64_t iters = 1 << 10;
  double item_s = 0.0;
  for (;; iters *= 2) {
    const auto t0 = clock::now();
    fn(iters, &sink);
    item_s = since(t0);
    if (item_s >= 1e-3 || iters >= (int64_t(1) << 32)) break;
  }
  const double item_flops = fn(iters, &sink);
  const int items = int(std::clamp(seconds / item_s * T, 4.0 * T, 1e6));
  std::vector<float> sinks(size_t(items), 0.0f);
  double best = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = clock::now();
    parallel_for(items, T, [&](int i, int) { fn(iters, &sinks[size_t(i)]); });
    best = std::max(best, item_flops * items / since(t0) / 1e9);
  }
  return best;
}

}  // namespace

NB_MODULE(_kernel, m) {
  m.doc() = "mlx_attn native CPU flash-attention kernel (raw pointer interface)";
  // openmp=True: run on the OpenMP runtime attached with attach_openmp (torch's), if any
  def_strict(m, "forward", &forward_args, kForwardNames,
             "Fills o (and lse unless None). Every argument is a required keyword; an array is "
             "(data pointer, element strides...) in (b, h, l, d) order or a buffer of that rank.");
  def_strict(m, "backward", &backward_args, kBackwardNames,
             "Fills dq, dk, dv. Every argument is a required keyword; see forward.");
  m.def("attach_openmp", &attach_openmp, nb::arg("path"),
        "Use the OpenMP runtime loaded from `path` for calls made with openmp=True; returns '' "
        "or why it cannot.");
  m.def("openmp_attached", &openmp_attached);
  m.def("num_threads", &num_threads);
  m.def("set_num_threads", &set_num_threads, nb::arg("n"));
  m.def("isa", []() { return std::string(isa_name()); });
  m.def("set_isa", [](const std::string& n) { set_isa(n.c_str()); }, nb::arg("name"));
  m.def("fma_peak", [](const std::string& isa, double seconds, int threads) {
          nb::gil_scoped_release release;
          return fma_peak(isa, seconds, threads);
        }, nb::arg("isa"), nb::arg("seconds") = 0.5, nb::arg("threads") = 0,
        "fp32 GFLOP/s of a register-resident FMA loop of `isa` on `threads` threads (0: the "
        "kernel's), best of three runs of about `seconds`: this machine's peak for that ISA.");
#ifdef MLX_ATTN_MLX_VERSION
  m.attr("MLX_BUILT_VERSION") = MLX_ATTN_MLX_VERSION;
#else
  m.attr("MLX_BUILT_VERSION") = "";
#endif
}
