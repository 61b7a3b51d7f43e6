// The S6 selective scan (Mamba, arXiv 2312.00752, Algorithm 2) on the CPU, fast: SIMD lanes own
// channels, a tile of states stays in registers, exp is a polynomial. Two ways to use the cores:
// blocks of lanes in parallel, or a chunked scan over time built on the associative operator
// (a1, b1)∘(a2, b2) = (a1·a2, a2·b1 + b2) for when batch × channels is too small.
#pragma once

#include "ssmkit/core/parallel.hpp"
#include "ssmkit/kernels/cpu/exp_approx.hpp"
#include "ssmkit/kernels/selective_scan_params.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace ssmkit::cpu {

/// How selective_scan uses the threads.
struct SelectiveScanPolicy {
  enum class Mode {
    Auto,     ///< Chunked when batch × lane blocks cannot occupy the threads and L is long.
    Blocked,  ///< Parallel over (batch, block of channels), each scanning the whole sequence.
    Chunked,  ///< Also split the time axis into chunks (reduce, combine, then rescan).
  };
  Mode mode = Mode::Auto;
  /// Time chunks of the chunked scan; 0 means one more than the threads (see selective_scan).
  Index chunks = 0;
  /// Auto chooses the chunked scan only when its chunks are at least this long.
  Index min_chunk_length = 256;
};

namespace detail {

/// States per register tile: h, the decays and the products of a tile fit in 16 registers.
inline constexpr int kStateTile = 8;
/// Time steps staged (converted, Δ and Δ·u computed) per pass over a tile.
inline constexpr Index kTimeTile = 64;

/// The pack a storage type computes in: float lanes of the widest instruction set, or doubles.
template <class T>
using scan_pack_t = std::conditional_t<std::is_same_v<accum_t<T>, double>,
                                       simd::Portable<double, 4>, simd::BestF32>;

/// The scan of one batch element over one block of up to P::width channels of one group.
template <class P, class T, class W>
class ScanLanes {
  using F = typename P::scalar;
  static constexpr int kW = P::width;

 public:
  ScanLanes(const SelectiveScanParams<T, W>& p, Index b, Index d0, Index lanes)
      : p_(p),
        b_(b),
        d0_(d0),
        lanes_(lanes),
        g_(d0 / (p.channels() / p.groups())),
        n_(p.state_size()),
        np_((n_ + kStateTile - 1) / kStateTile * kStateTile),
        a2_(static_cast<std::size_t>(np_ * kW), F(0)),
        bias_(kW, F(0)),
        dskip_(kW, F(0)),
        dt_(static_cast<std::size_t>(kTimeTile * kW)),
        du_(dt_.size()),
        u_(dt_.size()),
        y_(dt_.size()),
        b_row_(static_cast<std::size_t>(kTimeTile * np_), F(0)),
        c_row_(b_row_.size(), F(0)) {
    constexpr double kLog2e = 1.4426950408889634;
    for (Index l = 0; l < lanes_; ++l) {
      for (Index n = 0; n < n_; ++n)
        a2_[n * kW + l] = static_cast<F>(static_cast<double>(p.A(d0 + l, n)) * kLog2e);
      if (!p.delta_bias.absent())
        bias_[l] = static_cast<F>(p.delta_bias(d0 + l));
      if (!p.D_skip.absent())
        dskip_[l] = static_cast<F>(p.D_skip(d0 + l));
    }
  }

  /// Length of a state buffer: padded_states() × width, state n of lane l at n·width + l.
  Index state_buffer_size() const { return np_ * kW; }

  void load_state(const TensorView<const W, 3>& h0, F* h) const {
    std::fill(h, h + np_ * kW, F(0));
    if (!h0.absent())
      for (Index l = 0; l < lanes_; ++l)
        for (Index n = 0; n < n_; ++n)
          h[n * kW + l] = static_cast<F>(h0(b_, d0_ + l, n));
  }

  void store_state(const F* h, const TensorView<W, 3>& h_out) const {
    if (!h_out.absent())
      for (Index l = 0; l < lanes_; ++l)
        for (Index n = 0; n < n_; ++n)
          h_out(b_, d0_ + l, n) = static_cast<W>(h[n * kW + l]);
  }

  /// exp(A·s) for a per-lane sum of steps s: the decay of a chunk, in double.
  void decay(const double* dt_sum, F* out) const {
    std::fill(out, out + np_ * kW, F(1));
    for (Index l = 0; l < lanes_; ++l)
      for (Index n = 0; n < n_; ++n)
        out[n * kW + l] =
            static_cast<F>(std::exp(static_cast<double>(p_.A(d0_ + l, n)) * dt_sum[l]));
  }

  /// Scans times [t0, t1) from state h, updated in place. kOut: writes p.out; otherwise the
  /// chunk summary: the state and, per lane, dt_sum += Σ Δ.
  template <bool kOut>
  void run(Index t0, Index t1, F* h, double* dt_sum) {
    for (Index s = t0; s < t1; s += kTimeTile) {
      const Index nt = std::min(kTimeTile, t1 - s);
      stage<kOut>(s, nt);
      for (Index n0 = 0; n0 < np_; n0 += kStateTile)
        tile<kOut>(nt, n0, h);
      if constexpr (kOut) {
        finish(s, nt);
      } else {
        for (Index i = 0; i < nt; ++i)
          for (int l = 0; l < kW; ++l)
            dt_sum[l] += static_cast<double>(dt_[i * kW + l]);
      }
    }
  }

 private:
  /// Lanes d0.. of view(b, t, ·) as a pack, zero beyond the block.
  P load_lanes(const TensorView<const T, 3>& v, Index t) const {
    const T* src = &v(b_, t, d0_);
    if constexpr (std::is_same_v<T, F>)
      if (lanes_ == kW && v.stride(2) == 1)
        return P::load(src);
    F tmp[kW] = {};
    for (Index l = 0; l < lanes_; ++l)
      tmp[l] = static_cast<F>(src[l * v.stride(2)]);
    return P::load(tmp);
  }

  void store_lanes(const P& x, Index t) const {
    T* dst = &p_.out(b_, t, d0_);
    if constexpr (std::is_same_v<T, F>)
      if (lanes_ == kW && p_.out.stride(2) == 1)
        return x.store(dst);
    F tmp[kW];
    x.store(tmp);
    for (Index l = 0; l < lanes_; ++l)
      dst[l * p_.out.stride(2)] = static_cast<T>(tmp[l]);
  }

  /// Row (b, t, g, ·) of B or C into dst (the padding beyond N stays zero).
  void load_row(const TensorView<const T, 4>& v, Index t, F* dst) const {
    const T* src = &v(b_, t, g_, 0);
    const Index stride = v.stride(3);
    for (Index n = 0; n < n_; ++n)
      dst[n] = static_cast<F>(src[n * stride]);
  }

  template <bool kOut>
  void stage(Index t0, Index nt) {
    const P bias = P::load(bias_.data());
    for (Index i = 0; i < nt; ++i) {
      P dt = load_lanes(p_.delta, t0 + i) + bias;
      if (p_.delta_softplus)
        dt = simd::softplus(dt);
      const P u = load_lanes(p_.u, t0 + i);
      dt.store(&dt_[i * kW]);
      (dt * u).store(&du_[i * kW]);
      u.store(&u_[i * kW]);
      load_row(p_.B, t0 + i, &b_row_[i * np_]);
      if constexpr (kOut)
        load_row(p_.C, t0 + i, &c_row_[i * np_]);
    }
  }

  /// States n0 .. n0+kStateTile over nt staged steps: h = exp(Δ·A)·h + Δ·u·B, y += C·h.
  template <bool kOut>
  void tile(Index nt, Index n0, F* h) {
    P hr[kStateTile], a2[kStateTile];
    for (int j = 0; j < kStateTile; ++j) {
      hr[j] = P::load(h + (n0 + j) * kW);
      a2[j] = P::load(&a2_[(n0 + j) * kW]);
    }
    for (Index i = 0; i < nt; ++i) {
      const P dt = P::load(&dt_[i * kW]), du = P::load(&du_[i * kW]);
      const F* brow = &b_row_[i * np_ + n0];
      const F* crow = &c_row_[i * np_ + n0];
      P y = P::broadcast(F(0));
      for (int j = 0; j < kStateTile; ++j) {
        const P decay = simd::exp2(dt * a2[j]);
        hr[j] = fma(decay, hr[j], du * P::broadcast(brow[j]));
        if constexpr (kOut)
          y = fma(hr[j], P::broadcast(crow[j]), y);
      }
      if constexpr (kOut)
        (n0 == 0 ? y : y + P::load(&y_[i * kW])).store(&y_[i * kW]);
    }
    for (int j = 0; j < kStateTile; ++j)
      hr[j].store(h + (n0 + j) * kW);
  }

  /// out = (y + D·u)·silu(z) for the staged steps.
  void finish(Index t0, Index nt) {
    const P dskip = P::load(dskip_.data());
    for (Index i = 0; i < nt; ++i) {
      P y = P::load(&y_[i * kW]);
      if (!p_.D_skip.absent())
        y = fma(dskip, P::load(&u_[i * kW]), y);
      if (!p_.z.absent())
        y = y * simd::silu(load_lanes(p_.z, t0 + i));
      store_lanes(y, t0 + i);
    }
  }

  const SelectiveScanParams<T, W>& p_;
  Index b_, d0_, lanes_, g_, n_, np_;
  std::vector<F> a2_, bias_, dskip_;  // A·log2(e) (np_ × kW), δ_bias and D per lane
  std::vector<F> dt_, du_, u_, y_;    // staged Δ, Δ·u, u and y (kTimeTile × kW)
  std::vector<F> b_row_, c_row_;      // staged rows of B and C (kTimeTile × np_)
};

/// Chunk boundaries: chunk 0 (scanned once, from the true initial state) is 0.9 of the others'
/// length, which are scanned twice (summary, then rescan) — that balances the two phases.
inline std::vector<Index> chunk_bounds(Index L, Index chunks) {
  std::vector<Index> bounds(static_cast<std::size_t>(chunks + 1), L);
  bounds[0] = 0;
  const double unit = static_cast<double>(L) / (static_cast<double>(chunks) - 0.1);
  for (Index k = 1; k < chunks; ++k)
    bounds[k] =
        std::min(L, static_cast<Index>(std::llround(unit * (static_cast<double>(k) - 0.1))));
  return bounds;
}

}  // namespace detail

/// Computes p.out (and p.h_final when present) as selective_scan_reference does, in the
/// precision of accum_t<T> with a ~1e-7-relative exp. Any strides; channel-contiguous data is
/// read with vector loads. `Pack` picks the SIMD pack (tests use the portable one).
///
/// The chunked scan, per block of lanes with M chunks: (1) in parallel, chunk 0 is scanned from
/// h0 with outputs while chunks 1..M-2 are scanned from zero for their summaries
/// (Π Ā = exp(A·ΣΔ), end state); (2) the summaries are combined left to right with the
/// associative operator, giving each chunk's true initial state; (3) in parallel, chunks
/// 1..M-1 are rescanned from those states with outputs.
template <class Pack = void, class T, class W>
void selective_scan(const SelectiveScanParams<T, W>& p, const SelectiveScanPolicy& policy = {}) {
  validate(p, Device::CPU);
  using P = std::conditional_t<std::is_void_v<Pack>, detail::scan_pack_t<T>, Pack>;
  using F = typename P::scalar;
  static_assert(std::is_same_v<F, accum_t<T>>, "the pack must hold accum_t<T>");
  constexpr Index kW = P::width;
  const Index batch = p.batch(), L = p.length(), D = p.channels();
  const Index per_group = D / p.groups(), blocks_per_group = (per_group + kW - 1) / kW;
  const Index blocks = batch * p.groups() * blocks_per_group;
  const auto lanes_of = [&](Index i) {
    const Index b = i / (p.groups() * blocks_per_group), r = i % (p.groups() * blocks_per_group);
    const Index d0 = (r / blocks_per_group) * per_group + (r % blocks_per_group) * kW;
    return detail::ScanLanes<P, T, W>(p, b, d0,
                                      std::min(kW, (r / blocks_per_group + 1) * per_group - d0));
  };

  const Index threads = max_threads();
  const Index chunks = std::max<Index>(2, policy.chunks > 0 ? policy.chunks : threads + 1);
  const bool chunked = policy.mode == SelectiveScanPolicy::Mode::Chunked ||
                       (policy.mode == SelectiveScanPolicy::Mode::Auto && blocks < threads &&
                        L >= chunks * policy.min_chunk_length);
  if (!chunked) {
    parallel_for(0, blocks, [&](Index i) {
      auto lanes = lanes_of(i);
      std::vector<F> h(static_cast<std::size_t>(lanes.state_buffer_size()));
      lanes.load_state(p.h0, h.data());
      lanes.template run<true>(0, L, h.data(), nullptr);
      lanes.store_state(h.data(), p.h_final);
    });
    return;
  }

  const std::vector<Index> bounds = detail::chunk_bounds(L, chunks);
  const Index hsize = lanes_of(0).state_buffer_size();
  // states[(i·chunks + k)·hsize ..]: after phase 1 the end state of chunk k (from h0 for k = 0,
  // from zero otherwise); after phase 2 the true initial state of chunk k + 1.
  std::vector<F> states(static_cast<std::size_t>(blocks * chunks * hsize));
  std::vector<double> dt_sums(static_cast<std::size_t>(blocks * chunks * kW), 0.0);
  const auto state = [&](Index i, Index k) { return &states[(i * chunks + k) * hsize]; };
  parallel_for(0, blocks * (chunks - 1), [&](Index task) {
    const Index i = task / (chunks - 1), k = task % (chunks - 1);
    auto lanes = lanes_of(i);
    F* h = state(i, k);
    if (k == 0) {
      lanes.load_state(p.h0, h);
      lanes.template run<true>(bounds[0], bounds[1], h, nullptr);
    } else {
      std::fill(h, h + hsize, F(0));
      lanes.template run<false>(bounds[k], bounds[k + 1], h, &dt_sums[(i * chunks + k) * kW]);
    }
  });
  parallel_for(0, blocks, [&](Index i) {
    const auto lanes = lanes_of(i);
    std::vector<F> decay(static_cast<std::size_t>(hsize));
    for (Index k = 1; k + 1 < chunks; ++k) {
      // (decay_k, local_k) ∘ after (·, carried): carried' = decay_k·carried + local_k.
      lanes.decay(&dt_sums[(i * chunks + k) * kW], decay.data());
      const F* carried = state(i, k - 1);
      F* local = state(i, k);
      for (Index j = 0; j < hsize; ++j)
        local[j] = decay[j] * carried[j] + local[j];
    }
  });
  parallel_for(0, blocks * (chunks - 1), [&](Index task) {
    const Index i = task / (chunks - 1), k = task % (chunks - 1) + 1;
    auto lanes = lanes_of(i);
    F* h = state(i, k - 1);
    lanes.template run<true>(bounds[k], bounds[k + 1], h, nullptr);
    if (k == chunks - 1)
      lanes.store_state(h, p.h_final);
  });
}

}  // namespace ssmkit::cpu
