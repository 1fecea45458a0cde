// CUDA emulator: host semantics of the PTX instructions our kernels reach through inline asm
// (cuda_bridge/include/mlx_attn_cuda/ptx.h calls these under MLX_ATTN_CUDA_EMULATE). Layouts
// follow the PTX ISA ("Matrix fragments for mma.m16n8k16 with floating point type";
// "ldmatrix"); they are written here from the ISA, independently of the kernels' layout.h.
#pragma once
#include <float.h>

#include <vector>

#include "cuda_emu.h"
#include "cuda_emu_half.h"

namespace cuda_emu {

// ---- per-thread state: the thread's cp.async copies not yet completed by a wait_group
struct CpAsyncCopy {
  unsigned char* dst;
  uint64_t group;  // index of the commit group the copy belongs to
  unsigned char data[16];
};
struct ThreadState {
  std::vector<CpAsyncCopy> pending;
  uint64_t committed = 0;  // commit groups closed so far; the open group has this index
};
inline ThreadState& thread_state() {
  void** slot = simt_rt_thread_state();
  if (!*slot) *slot = new ThreadState;
  return *static_cast<ThreadState*>(*slot);
}
inline void free_thread_state(void* s) { delete static_cast<ThreadState*>(s); }

// cp.async.cg.shared.global [dst], [src], 16, src_bytes: the global bytes are read at issue (so
// an out-of-bounds source faults in this thread), the destination holds NaN bytes until a
// wait_group completes the copy: a missing wait reads NaN instead of silently working.
inline void cp_async_cg_16(uint32_t dst, const void* src, int src_bytes, int line, const char* file) {
  unsigned char* d = shared_ptr(dst, 16, 16, "cp.async", line, file);
  if (src_bytes < 0 || src_bytes > 16)
    fail("cp.async (%s line %d): src-size %d is not in [0, 16]", base_name(file), line, src_bytes);
  if (src_bytes > 0 && (uintptr_t)src % 16)
    fail("cp.async (%s line %d): global address %p is not 16-byte aligned", base_name(file), line, src);
  ThreadState& st = thread_state();
  CpAsyncCopy c;
  c.dst = d;
  c.group = st.committed;
  memset(c.data, 0, sizeof c.data);  // bytes past src_bytes are zero-filled, src is not read
  if (src_bytes > 0) memcpy(c.data, src, (size_t)src_bytes);
  memset(d, 0xFF, 16);
  st.pending.push_back(c);
}

inline void cp_async_commit() { thread_state().committed++; }

// cp.async.wait_group n: every commit group but the n most recent ones is complete. Copies not
// yet committed are not waited for (as in PTX).
inline void cp_async_wait(int n) {
  ThreadState& st = thread_state();
  const uint64_t limit = st.committed > (uint64_t)n ? st.committed - (uint64_t)n : 0;
  size_t keep = 0;
  for (size_t i = 0; i < st.pending.size(); ++i) {
    const CpAsyncCopy& c = st.pending[i];
    if (c.group < limit)
      memcpy(c.dst, c.data, 16);
    else
      st.pending[keep++] = c;
  }
  st.pending.resize(keep);
}

// .sync.aligned instructions need the whole warp at the same instruction.
inline void require_full_warp(uint32_t active, const char* what, int line, const char* file) {
  if (active == 0xFFFFFFFFu) return;
  char list[160];
  lane_list(~active, list, sizeof list);
  fail("%s (%s line %d) needs all 32 lanes of the warp (.sync.aligned) but lanes [%s] did not take part "
       "(they returned or wait at another call)", what, base_name(file), line, list);
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8i..8i+7 give the row addresses of
// 8x8 matrix i; lane l receives in register i, from matrix i, the elements (row l/4, columns
// 2(l%4), 2(l%4)+1), or with .trans (rows 2(l%4), 2(l%4)+1, column l/4); the lower element
// in the low 16 bits.
inline void ldmatrix_x4(bool trans, uint32_t addr, uint32_t (&r)[4], int line, const char* file) {
  const char* what = trans ? "ldmatrix.x4.trans" : "ldmatrix.x4";
  shared_ptr(addr, 16, 16, what, line, file);
  Lanes<uint32_t> s = exchange(addr, trans ? OPldmatrix_x4_trans : OPldmatrix_x4, line, file);
  require_full_warp(s.active, what, line, file);
  size_t used;
  const unsigned char* base = shared_window(&used);
  const int l = s.lane;
  for (int i = 0; i < 4; ++i) {
    if (!trans) {
      memcpy(&r[i], base + s.get(8 * i + l / 4) + 4 * (l % 4), 4);
    } else {
      uint16_t lo, hi;
      memcpy(&lo, base + s.get(8 * i + 2 * (l % 4)) + 2 * (l / 4), 2);
      memcpy(&hi, base + s.get(8 * i + 2 * (l % 4) + 1) + 2 * (l / 4), 2);
      r[i] = (uint32_t)lo | ((uint32_t)hi << 16);
    }
  }
}

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32, D = A B + C. With
// g = lane/4, t = lane%4: A (16x16) reg j holds row g + 8(j%2), columns 2t + 8(j/2) + {0,1};
// B (16x8) reg j holds rows k = 2t + 8j + {0,1}, column g; C/D element e is row g + 8(e/2),
// column 2t + e%2. Each lane computes its own four D elements. Products of two 16-bit floats
// are exact in float; they are added to C one k at a time in float (the tensor core's
// internal order and precision are not modelled).
struct MmaOperands {
  uint32_t a[4], b[2];
};
template <bool kBf16> inline float mma_elem(uint32_t reg, int half) {
  const uint16_t v = (uint16_t)(half ? reg >> 16 : reg & 0xFFFFu);
  return kBf16 ? bf16_bits_to_float(v) : half_bits_to_float(v);
}
template <bool kBf16>
inline void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, int line,
                         const char* file) {
  const char* what = kBf16 ? "mma.m16n8k16 (bf16)" : "mma.m16n8k16 (f16)";
  MmaOperands mine = {{a[0], a[1], a[2], a[3]}, {b0, b1}};
  Lanes<MmaOperands> s = exchange(mine, kBf16 ? OPmma_m16n8k16_bf16 : OPmma_m16n8k16_f16, line, file);
  require_full_warp(s.active, what, line, file);
  const int g = s.lane >> 2, t = s.lane & 3;
  float arow[2][16], bcol[2][16];
  for (int k = 0; k < 16; ++k) {
    const int src = (k & 7) >> 1, hi = k >= 8, h = k & 1;
    const MmaOperands ra = s.get(4 * g + src);  // A rows g and g + 8 come from lane 4g + (k%8)/2
    arow[0][k] = mma_elem<kBf16>(ra.a[2 * hi], h);
    arow[1][k] = mma_elem<kBf16>(ra.a[2 * hi + 1], h);
    for (int c = 0; c < 2; ++c) {                // B column n = 2t + c is held by lanes 4n..4n+3
      const MmaOperands rb = s.get(4 * (2 * t + c) + src);
      bcol[c][k] = mma_elem<kBf16>(rb.b[hi], h);
    }
  }
  for (int e = 0; e < 4; ++e) {
    float acc = d[e];
    for (int k = 0; k < 16; ++k) acc += arow[e >> 1][k] * bcol[e & 1][k];
    d[e] = acc;
  }
}

// ex2.approx.ftz.f32: 2^x with subnormal inputs and results flushed to zero (the host exp2f
// is more accurate than the GPU's ~2 ulp).
inline float ex2_approx_ftz(float x) {
  if (fabsf(x) < FLT_MIN) x = 0.f;
  const float y = exp2f(x);
  return y < FLT_MIN ? 0.f : y;
}

}  // namespace cuda_emu
