// Runs the CPU kernel on problems described in files, for tests of builds that cannot be loaded
// into this Python: the AArch64 build run under qemu-aarch64 (tests/test_cpu_arm64_qemu.py).
//
//   neon_check ISA DIR...    ISA: "auto" or a name for set_isa; prints "isa NAME" first
//                            (exit status 3: this CPU does not run ISA)
//
// Each DIR holds spec.txt ("key value" lines: dtype B Hq Hkv Lq Lk D Dv scale softcap wl wr
// mask_kind mask_type backward) and the inputs as raw little-endian arrays, contiguous
// [B, H, L, D]: q.bin k.bin v.bin (float32, or fp16 / bf16 bits), mask.bin ([Lq, Lk], bytes or
// float32, broadcast over B and heads), dout.bin (dtype) and dlse.bin (float32) for the backward.
// Writes out.bin (dtype), lse.bin (float32) and, for the backward, dq.bin dk.bin dv.bin (dtype).
// wl / wr are the kernel's window sides with causal already folded in (-1: unbounded).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernel_api.h"

namespace {

using mlx_attn_cpu::Problem;

std::vector<char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const void* data, size_t bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(static_cast<const char*>(data), std::streamsize(bytes));
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::map<std::string, double> read_spec(const std::string& path) {
  std::map<std::string, double> spec;
  const std::vector<char> text = read_file(path);
  std::istringstream in(std::string(text.begin(), text.end()));
  std::string key;
  double value;
  while (in >> key >> value) spec[key] = value;
  return spec;
}

// Element strides of a contiguous [B, H, L, D] array.
void contiguous(int64_t* s, int H, int L, int D) {
  s[3] = 1; s[2] = D; s[1] = int64_t(L) * D; s[0] = int64_t(H) * L * D;
}

// Reads `name` and checks it holds `elems` elements of `size` bytes.
std::vector<char> input(const std::string& dir, const char* name, size_t elems, size_t size) {
  std::vector<char> data = read_file(dir + "/" + name);
  if (data.size() != elems * size) throw std::runtime_error(dir + "/" + name + ": wrong size");
  return data;
}

void run_case(const std::string& dir) {
  std::map<std::string, double> s = read_spec(dir + "/spec.txt");
  auto geti = [&](const char* k) {
    if (!s.count(k)) throw std::runtime_error(dir + "/spec.txt: no " + k);
    return int(s[k]);
  };
  Problem p;
  p.dtype = geti("dtype");
  p.B = geti("B"); p.Hq = geti("Hq"); p.Hkv = geti("Hkv");
  p.Lq = geti("Lq"); p.Lk = geti("Lk"); p.D = geti("D"); p.Dv = geti("Dv");
  p.scale = float(s["scale"]); p.softcap = float(s["softcap"]);
  p.wl = geti("wl"); p.wr = geti("wr");
  p.mask_kind = geti("mask_kind"); p.mask_type = geti("mask_type");
  const bool backward = geti("backward") != 0;
  const size_t es = p.dtype == mlx_attn_cpu::F32 ? 4 : 2;
  const size_t nq = size_t(p.B) * p.Hq * p.Lq * p.D, nk = size_t(p.B) * p.Hkv * p.Lk * p.D;
  const size_t nv = size_t(p.B) * p.Hkv * p.Lk * p.Dv, no = size_t(p.B) * p.Hq * p.Lq * p.Dv;
  const size_t nl = size_t(p.B) * p.Hq * p.Lq;
  std::vector<char> q = input(dir, "q.bin", nq, es), k = input(dir, "k.bin", nk, es);
  std::vector<char> v = input(dir, "v.bin", nv, es), mask;
  p.q = q.data(); contiguous(p.qs, p.Hq, p.Lq, p.D);
  p.k = k.data(); contiguous(p.ks, p.Hkv, p.Lk, p.D);
  p.v = v.data(); contiguous(p.vs, p.Hkv, p.Lk, p.Dv);
  if (p.mask_kind != mlx_attn_cpu::MASK_NONE) {
    const size_t mask_bytes = p.mask_type == mlx_attn_cpu::MT_BOOL ? 1 : 4;
    mask = input(dir, "mask.bin", size_t(p.Lq) * p.Lk, mask_bytes);
    p.mask = mask.data();
    p.ms[0] = 0; p.ms[1] = 0; p.ms[2] = p.Lk; p.ms[3] = 1;
  }
  std::vector<char> out(no * es);
  std::vector<float> lse(nl);
  p.o = out.data(); contiguous(p.os, p.Hq, p.Lq, p.Dv);
  p.lse = lse.data(); p.ls[0] = int64_t(p.Hq) * p.Lq; p.ls[1] = p.Lq; p.ls[2] = 1;
  mlx_attn_cpu::forward(p);
  write_file(dir + "/out.bin", out.data(), out.size());
  write_file(dir + "/lse.bin", lse.data(), lse.size() * 4);
  if (!backward) return;
  std::vector<char> dout = input(dir, "dout.bin", no, es), dlse = input(dir, "dlse.bin", nl, 4);
  std::vector<char> dq(nq * es), dk(nk * es), dv(nv * es);
  p.dout = dout.data(); contiguous(p.dos, p.Hq, p.Lq, p.Dv);
  p.dlse = reinterpret_cast<const float*>(dlse.data());
  for (int d = 0; d < 3; ++d) p.dls[d] = p.ls[d];
  p.dq = dq.data(); contiguous(p.dqs, p.Hq, p.Lq, p.D);
  p.dk = dk.data(); contiguous(p.dks, p.Hkv, p.Lk, p.D);
  p.dv = dv.data(); contiguous(p.dvs, p.Hkv, p.Lk, p.Dv);
  mlx_attn_cpu::backward(p);
  write_file(dir + "/dq.bin", dq.data(), dq.size());
  write_file(dir + "/dk.bin", dk.data(), dk.size());
  write_file(dir + "/dv.bin", dv.data(), dv.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s ISA DIR...\n", argv[0]);
    return 2;
  }
  try {
    mlx_attn_cpu::set_isa(argv[1]);
  } catch (const std::exception& e) {
    std::printf("unsupported %s\n", argv[1]);
    return 3;
  }
  try {
    std::printf("isa %s\n", mlx_attn_cpu::isa_name());
    for (int i = 2; i < argc; ++i) {
      run_case(argv[i]);
      std::printf("done %s\n", argv[i]);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "neon_check: %s\n", e.what());
    return 1;
  }
  return 0;
}
