// One step of a channel as the backward passes use it: δ, u, dout, z loaded (a sub-chunk ahead)
// and turned into Δ = softplus(δ + bias), its derivative, dy and the gate's factor fz.
#pragma once

#include "ssmkit/kernels/cuda/selective_scan_backward/args.cuh"

#include <cstdint>
#include <cstring>

namespace ssmkit::cuda::detail {

/// What one step of a channel needs besides the states: Δ, u, softplus'(δ + bias), dy = ∂ℓ/∂y,
/// and the factor fz with ∂ℓ/∂z = y·fz.
struct StepValues {
  float dt, u, dsp, dy, fz;
};

/// The stored inputs of one step of a channel: δ, u, and for dy, dout and z.
template <class T>
struct RawStep {
  T delta, u, dout, z;
};

/// base + t time steps of `stride_bytes` bytes: one 32 x 32 -> 64-bit multiply-add (IMAD.WIDE)
/// per address, where a 64-bit stride in elements cost three to six instructions. The product is
/// PTX: from C++ the compiler multiplied the two sign-extended operands in 64 bits (five to seven
/// instructions) wherever the stride was loaded under a predicate (dout, z).
template <class T>
__device__ __forceinline__ T* at_step(T* base, int t, int stride_bytes) {
  long long offset;
  asm("mul.wide.s32 %0, %1, %2;" : "=l"(offset) : "r"(t), "r"(stride_bytes));
  using Byte = std::conditional_t<std::is_const_v<T>, const char, char>;
  return reinterpret_cast<T*>(reinterpret_cast<Byte*>(base) + offset);
}

/// Where one channel's inputs start: (b, 0, d) of δ, u, dout and z (z null when absent), worked
/// out once per channel so that a step's loads cost one product each (pass 1, which has the
/// registers to keep them).
template <class T>
struct ChannelRows {
  const T *delta, *u, *dout, *z;

  __device__ __forceinline__ ChannelRows(const ScanBackwardArgs<T>& a, int b, int d)
      : delta(a.delta + b * a.delta_s[0] + d * a.delta_s[2]),
        u(a.u + b * a.u_s[0] + d * a.u_s[2]),
        dout(a.dout + b * a.dout_s[0] + d * a.dout_s[2]),
        z(a.z != nullptr ? a.z + b * a.z_s[0] + d * a.z_s[2] : nullptr) {}

  /// Step t; dout (zero when !live) and z only if kDy.
  template <bool kDy>
  __device__ __forceinline__ RawStep<T> load(const ScanBackwardArgs<T>& a, int t, bool live) const {
    RawStep<T> r;
    r.delta = __ldg(at_step(delta, t, a.delta_tb));
    r.u = __ldg(at_step(u, t, a.u_tb));
    r.dout = r.z = from_float<T>(0.f);
    if (kDy) {
      if (live)
        r.dout = __ldg(at_step(dout, t, a.dout_tb));
      if (z != nullptr)
        r.z = __ldg(at_step(z, t, a.z_tb));
    }
    return r;
  }
};

/// The same loads from the channel's coordinates, every address worked out at the load (pass 3:
/// four pointers held across its loops made it spill).
template <class T>
struct ChannelCoords {
  int b, d;

  template <bool kDy>
  __device__ __forceinline__ RawStep<T> load(const ScanBackwardArgs<T>& a, int t, bool live) const {
    RawStep<T> r;
    r.delta = __ldg(a.delta + b * a.delta_s[0] + t * a.delta_s[1] + d * a.delta_s[2]);
    r.u = __ldg(a.u + b * a.u_s[0] + t * a.u_s[1] + d * a.u_s[2]);
    r.dout = r.z = from_float<T>(0.f);
    if (kDy) {
      if (live)
        r.dout = __ldg(a.dout + b * a.dout_s[0] + t * a.dout_s[1] + d * a.dout_s[2]);
      if (a.z != nullptr)
        r.z = __ldg(a.z + b * a.z_s[0] + t * a.z_s[1] + d * a.z_s[2]);
    }
    return r;
  }
};

/// The StepValues of a step's δ, u, dout and z (zero when absent); dy only if kDy, dsp and fz only
/// if kGrad.
template <bool kDy, bool kGrad, class T>
__device__ __forceinline__ StepValues step_values(const ScanBackwardArgs<T>& a, float delta,
                                                  float u, float dout, float z, float bias) {
  // Both sides of each flag are computed and selected (select_f), which keeps a sub-chunk's
  // steps in one basic block.
  StepValues v{0.f, 0.f, 1.f, 0.f, 0.f};
  const float raw = delta + bias;
  v.dt = select_f(a.softplus, softplus_f(raw), raw);
  v.u = u;
  if (kGrad)
    v.dsp = select_f(a.softplus, raw > 20.f ? 1.f : sigmoid_f(raw), 1.f);
  if (kDy) {
    const float s = sigmoid_f(z);
    const bool gated = a.z != nullptr;
    v.dy = select_f(gated, dout * z * s, dout);
    if (kGrad)
      v.fz = select_f(gated, dout * s * fmaf(z, 1.f - s, 1.f), 0.f);
  }
  return v;
}

/// The same for a loaded step.
template <bool kDy, bool kGrad, class T>
__device__ __forceinline__ StepValues step_values(const ScanBackwardArgs<T>& a, const RawStep<T>& r,
                                                  float bias) {
  return step_values<kDy, kGrad>(a, to_float(r.delta), to_float(r.u), to_float(r.dout),
                                 to_float(r.z), bias);
}

/// The same loads where every (batch, time, channel) operand has u's batch and channel strides but
/// z and dz, which share theirs (a Mamba block's z is the second half of in_proj's output): the
/// channel's place is one offset for each group (pass 3's usual case).
template <class T>
struct ChannelOffset {
  Index off, z_off;

  template <bool kDy>
  __device__ __forceinline__ RawStep<T> load(const ScanBackwardArgs<T>& a, int t, bool live) const {
    RawStep<T> r;
    r.delta = __ldg(at_step(a.delta + off, t, a.delta_tb));
    r.u = __ldg(at_step(a.u + off, t, a.u_tb));
    r.dout = r.z = from_float<T>(0.f);
    if (kDy) {
      if (live)
        r.dout = __ldg(at_step(a.dout + off, t, a.dout_tb));
      if (a.z != nullptr)
        r.z = __ldg(at_step(a.z + z_off, t, a.z_tb));
    }
    return r;
  }
};

/// The StepValues of step t of a channel (ChannelRows, ChannelCoords or ChannelOffset), loaded
/// now.
template <bool kDy, bool kGrad, class T, class Rows>
__device__ __forceinline__ StepValues step_values(const ScanBackwardArgs<T>& a, const Rows& c,
                                                  int t, float bias, bool live) {
  return step_values<kDy, kGrad>(a, c.template load<kDy>(a, t, live), bias);
}

/// The inputs of the steps one lane prepares in a sub-chunk (steps lane + r·lanes, r < R), loaded
/// a sub-chunk ahead so that their latency hides behind the current sub-chunk's arithmetic.
template <int R, bool kDy, class T>
struct StepPrefetch {
  RawStep<T> raw[R];

  template <class Rows>
  __device__ __forceinline__ void load(const ScanBackwardArgs<T>& a, const Rows& c, int t0,
                                       int steps, int lane, int lanes, bool live) {
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (lane + r * lanes < steps)
        raw[r] = c.template load<kDy>(a, t0 + lane + r * lanes, live);
  }

  /// Calls put(k, values) for each step k of the lane's share of the sub-chunk at t0: the
  /// prefetched ones, then any beyond R·lanes loaded now.
  template <bool kGrad, class Rows, class Put>
  __device__ __forceinline__ void prepare(const ScanBackwardArgs<T>& a, const Rows& c, int t0,
                                          int steps, int lane, int lanes, bool live, float bias,
                                          Put&& put) const {
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (lane + r * lanes < steps)
        put(lane + r * lanes, step_values<kDy, kGrad>(a, raw[r], bias));
    for (int k = lane + R * lanes; k < steps; k += lanes)
      put(k, step_values<kDy, kGrad>(a, c, t0 + k, bias, live));
  }

  /// As prepare, and puts a no-op step (Δ = u = dy = 0 and softplus' = 0: the state and the
  /// adjoint pass through unchanged, every gradient term is zero) at each step of the lane's
  /// share from `steps` to K, so that the sub-chunk's loops need no bound.
  template <int K, bool kGrad, class Rows, class Put>
  __device__ __forceinline__ void prepare_padded(const ScanBackwardArgs<T>& a, const Rows& c,
                                                 int t0, int steps, int lane, int lanes, bool live,
                                                 float bias, Put&& put) const {
    prepare<kGrad>(a, c, t0, steps, lane, lanes, live, bias, put);
    for (int k = lane + (steps - lane + lanes - 1) / lanes * lanes; k < K; k += lanes)
      put(k, StepValues{0.f, 0.f, 0.f, 0.f, 0.f});
  }
};

/// Stores x0, x1 at steps t, t + 1 of a row with unit time stride at p (pointing at step t) as one
/// vector.
template <class T>
__device__ __forceinline__ void store_step_pair(T* p, float x0, float x1) {
  if constexpr (sizeof(T) == 4) {
    *reinterpret_cast<float2*>(p) = make_float2(x0, x1);
  } else {
    const T v[2] = {from_float<T>(x0), from_float<T>(x1)};
    unsigned w;
    std::memcpy(&w, v, sizeof(w));
    *reinterpret_cast<unsigned*>(p) = w;
  }
}

/// StepPrefetch where every activation has unit time stride (channel-major; ScanBackwardArgs::
/// rows_vec): a lane prepares two consecutive steps of a sub-chunk, 2·lane and 2·lane + 1, loaded
/// a sub-chunk ahead as one vector per operand and held as loaded until prepared. Lanes taking
/// steps lane and lane + 4 made every warp request touch 8 rows for 16 bytes each, twice per
/// sector.
template <class T>
struct StepPairPrefetch {
  StepRegs<2, T, true> delta, u, dout, z;

  __device__ __forceinline__ void load(const ScanBackwardArgs<T>& a, const ChannelOffset<T>& c,
                                       int t0, int steps, int lane, int, bool live) {
    // Both steps as one vector when both are before `steps`, else the first alone if it is.
    const int k = 2 * lane, t = t0 + k;
    load_steps(a.delta + c.off + t, 1, k, steps, delta);
    load_steps(a.u + c.off + t, 1, k, steps, u);
    if (live)
      load_steps(a.dout + c.off + t, 1, k, steps, dout);
    if (a.z != nullptr)
      load_steps(a.z + c.z_off + t, 1, k, steps, z);
  }

  /// As StepPrefetch::prepare_padded.
  template <int K, bool kGrad, class Put>
  __device__ __forceinline__ void prepare_padded(const ScanBackwardArgs<T>& a,
                                                 const ChannelOffset<T>&, int, int steps, int lane,
                                                 int, bool live, float bias, Put&& put) const {
    static_assert(K % 2 == 0, "whole pairs of steps");
    const auto values = [&](int r) {
      return step_values<true, kGrad>(a, delta.get(r), u.get(r), live ? dout.get(r) : 0.f,
                                      a.z != nullptr ? z.get(r) : 0.f, bias);
    };
    // A whole sub-chunk (all but a sequence's last) in a branch of its own: with both puts in
    // one path the compiler predicates them, and the no-op step's stores, though predicated off,
    // took an issue slot each (ncu: 10 more shared stores per warp and sub-chunk).
    if (steps >= K) {
#pragma unroll
      for (int r = 0; r < 2; ++r)
        put(2 * lane + r, values(r));
      return;
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int k = 2 * lane + r;
      if (k < steps)
        put(k, values(r));
      else
        put(k, StepValues{0.f, 0.f, 0.f, 0.f, 0.f});
    }
  }
};

}  // namespace ssmkit::cuda::detail
