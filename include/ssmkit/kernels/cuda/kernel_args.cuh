// Host helpers that turn validated views into kernel arguments: pointers and strides copied, the
// inputs the scan's forward and backward share set alike, 32-bit time strides checked, 16-byte
// vectors tested.
#pragma once

#include "ssmkit/core/error.hpp"
#include "ssmkit/core/tensor_view.hpp"

#include <cstddef>
#include <cstdint>
#include <string>

namespace ssmkit::cuda::detail {

template <class V, std::size_t R>
void copy_strides(const V& v, Index (&s)[R]) {
  for (std::size_t i = 0; i < R; ++i)
    s[i] = v.absent() ? 0 : v.stride(static_cast<int>(i));
}

/// `ptr` and `s` from `v`: its data and strides, null and zeros when it is absent.
template <class V, class P, std::size_t R>
void set_view(const V& v, P& ptr, Index (&s)[R]) {
  ptr = v.absent() ? nullptr : v.data();
  copy_strides(v, s);
}

/// As above for a rank-1 view and its one stride.
template <class V, class P>
void set_view(const V& v, P& ptr, Index& s) {
  ptr = v.absent() ? nullptr : v.data();
  s = v.absent() ? 0 : v.stride(0);
}

/// The operands the forward's and the backward's arguments share (u, δ, z, B, C, A, D, δ_bias, h0
/// and their strides), from validated parameters `p`.
template <class Params, class Args>
void set_scan_inputs(const Params& p, Args& a) {
  set_view(p.u, a.u, a.u_s);
  set_view(p.delta, a.delta, a.delta_s);
  set_view(p.z, a.z, a.z_s);
  set_view(p.B, a.B, a.B_s);
  set_view(p.C, a.C, a.C_s);
  set_view(p.A, a.A, a.A_s);
  set_view(p.D_skip, a.D_skip, a.D_skip_s);
  set_view(p.delta_bias, a.delta_bias, a.delta_bias_s);
  set_view(p.h0, a.h0, a.h0_s);
}

inline bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

/// Whether (count, batch, D, N) states at `p` with strides `s` load as 16-byte vectors: aligned,
/// N contiguous, every other stride a multiple of 4 floats.
inline bool states_vec(const float* p, const Index (&s)[4]) {
  return aligned16(p) && s[3] == 1 && s[0] % 4 == 0 && s[1] % 4 == 0 && s[2] % 4 == 0;
}

/// Throws unless |stride(1)| of `v` (absent or a (batch, time, …) view) is at most `limit`: the
/// kernels step through time with 32-bit offsets.
template <class View>
void check_time_stride(const View& v, const char* name, Index limit) {
  const Index s = v.absent() ? 0 : v.stride(1);
  SSMKIT_CHECK(s <= limit && s >= -limit, name, "time stride (stride(1))",
               "|stride| <= " + std::to_string(limit) + " on CUDA", s);
}

}  // namespace ssmkit::cuda::detail
