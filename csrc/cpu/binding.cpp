// nanobind module mlx_attn.cpu._kernel: the kernel on raw pointers + element strides, for numpy
// and torch CPU arrays (the Python glue in mlx_attn/cpu/ passes data pointers, never copies).
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <string>

#include "attn.h"
#include "pool.h"

namespace nb = nanobind;
using namespace mlx_attn_cpu;

namespace {

template <class T> T get(const nb::dict& d, const char* key, T fallback) {
  if (!d.contains(key)) return fallback;
  T out;
  if (!nb::try_cast<T>(d[key], out))  // e.g. an int beyond int32: a clear error, not bad_cast
    throw std::invalid_argument(std::string("mlx_attn cpu kernel: '") + key + "' = " +
                                nb::cast<std::string>(nb::repr(d[key])) +
                                " is out of range or of the wrong type");
  return out;
}

// A window side: any Python int (beyond int64 fails in get with a clear error).
int window_of(const nb::dict& d, const char* key) {
  return window_side(get<int64_t>(d, key, -1));
}

// spec[name] = (pointer, stride0, stride1, ...) ; pointer 0 or missing = absent
template <int N>
const void* array_of(const nb::dict& d, const char* key, int64_t* strides) {
  if (!d.contains(key)) return nullptr;
  nb::tuple t = nb::cast<nb::tuple>(d[key]);
  if (t.size() != size_t(N + 1))
    throw std::invalid_argument(std::string(key) + ": expected (pointer, " + std::to_string(N) + " strides)");
  for (int i = 0; i < N; ++i) strides[i] = nb::cast<int64_t>(t[i + 1]);
  return reinterpret_cast<const void*>(nb::cast<uintptr_t>(t[0]));
}

// (pointer, element strides...) of a buffer-protocol array (numpy): what the spec's array entries
// hold, read in C++ because numpy's own `a.ctypes.data` costs about a microsecond per array.
nb::tuple buffer_desc(nb::handle a) {
  Py_buffer view;
  if (PyObject_GetBuffer(a.ptr(), &view, PyBUF_RECORDS_RO) != 0) throw nb::python_error();
  nb::list out;
  out.append(reinterpret_cast<uintptr_t>(view.buf));
  bool ok = view.itemsize > 0;
  for (int i = 0; ok && i < view.ndim; ++i) {
    ok = view.strides[i] % view.itemsize == 0;
    if (ok) out.append(int64_t(view.strides[i] / view.itemsize));
  }
  PyBuffer_Release(&view);
  if (!ok) throw std::invalid_argument("strides not a multiple of the item size");
  return nb::tuple(out);
}

Problem problem_of(const nb::dict& d) {
  Problem p;
  p.dtype = get<int>(d, "dtype", F32);
  p.B = get<int>(d, "B", 0); p.Hq = get<int>(d, "Hq", 0); p.Hkv = get<int>(d, "Hkv", 0);
  p.Lq = get<int>(d, "Lq", 0); p.Lk = get<int>(d, "Lk", 0);
  p.D = get<int>(d, "D", 0); p.Dv = get<int>(d, "Dv", 0);
  p.scale = get<float>(d, "scale", 1.0f);
  p.softcap = get<float>(d, "softcap", 0.0f);
  p.wl = window_of(d, "wl");
  p.wr = fold_causal(get<bool>(d, "causal", false), window_of(d, "wr"));
  p.q = array_of<4>(d, "q", p.qs);
  p.k = array_of<4>(d, "k", p.ks);
  p.v = array_of<4>(d, "v", p.vs);
  p.o = const_cast<void*>(array_of<4>(d, "o", p.os));
  p.o_f32 = get<bool>(d, "o_f32", false);
  p.lse = static_cast<float*>(const_cast<void*>(array_of<3>(d, "lse", p.ls)));
  p.mask = array_of<4>(d, "mask", p.ms);
  if (p.mask) {
    p.mask_kind = get<int>(d, "mask_kind", MASK_ADD);
    p.mask_type = get<int>(d, "mask_type", MT_F32);
  }
  int64_t unused[1];
  p.cu_q = static_cast<const int32_t*>(array_of<0>(d, "cu_q", unused));
  p.cu_k = static_cast<const int32_t*>(array_of<0>(d, "cu_k", unused));
  p.dout = array_of<4>(d, "dout", p.dos);
  p.dlse = static_cast<const float*>(array_of<3>(d, "dlse", p.dls));
  p.dq = const_cast<void*>(array_of<4>(d, "dq", p.dqs));
  p.dk = const_cast<void*>(array_of<4>(d, "dk", p.dks));
  p.dv = const_cast<void*>(array_of<4>(d, "dv", p.dvs));
  return p;
}

}  // namespace

NB_MODULE(_kernel, m) {
  m.doc() = "mlx_attn native CPU flash-attention kernel (raw pointer interface)";
  // openmp=True: run on the OpenMP runtime attached with attach_openmp (torch's), if any
  m.def("forward", [](const nb::dict& spec, bool openmp) {
    Problem p = problem_of(spec);
    nb::gil_scoped_release release;
    OpenMPScope scope(openmp);
    forward(p);
  }, nb::arg("spec"), nb::arg("openmp") = false);
  m.def("backward", [](const nb::dict& spec, bool openmp) {
    Problem p = problem_of(spec);
    nb::gil_scoped_release release;
    OpenMPScope scope(openmp);
    backward(p);
  }, nb::arg("spec"), nb::arg("openmp") = false);
  m.def("buffer_desc", &buffer_desc, nb::arg("array"),
        "(data pointer, element strides...) of a buffer-protocol array such as a numpy array");
  m.def("attach_openmp", &attach_openmp, nb::arg("path"),
        "Use the OpenMP runtime loaded from `path` for calls made with openmp=True; returns '' "
        "or why it cannot.");
  m.def("openmp_attached", &openmp_attached);
  m.def("num_threads", &num_threads);
  m.def("set_num_threads", &set_num_threads, nb::arg("n"));
  m.def("isa", []() { return std::string(isa_name()); });
  m.def("set_isa", [](const std::string& n) { set_isa(n.c_str()); }, nb::arg("name"));
#ifdef MLX_ATTN_MLX_VERSION
  m.attr("MLX_BUILT_VERSION") = MLX_ATTN_MLX_VERSION;
#else
  m.attr("MLX_BUILT_VERSION") = "";
#endif
}
