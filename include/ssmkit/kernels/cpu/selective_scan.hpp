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
  /// At most max(2, L) are used: more would be empty.
  Index chunks = 0;
  /// Auto chooses the chunked scan only when its chunks are at least this long.
  Index min_chunk_length = 256;
};

namespace detail {

/// States advanced together per time step: their h, A and products are the tile's working set,
/// kept in registers as far as the instruction set has them.
inline constexpr int kStateTile = 8;
/// Time steps staged (converted, Δ and Δ·u computed) per pass over a tile.
inline constexpr Index kTimeTile = 64;
/// Lane blocks a task walks through together, one time tile at a time: neighbouring blocks share
/// cache lines of token-major rows, which are then read once and in order.
inline constexpr Index kBlocksPerTask = 16;

/// The pack a storage type computes in: float lanes of the widest instruction set, or doubles.
template <class T>
using scan_pack_t = std::conditional_t<std::is_same_v<accum_t<T>, double>,
                                       simd::Portable<double, 4>, simd::BestF32>;

/// Per-thread buffers of one time tile: the staged Δ, Δ·u, u and y of the block being scanned,
/// and the rows of B and C of one (batch, group), shared by the blocks of that group.
template <class F>
struct ScanStaging {
  std::vector<F> dt, du, u, y, b_rows, c_rows;
  Index rows_b = -1, rows_g = -1, rows_t0 = -1;
  bool rows_have_c = false;

  ScanStaging(Index width, Index padded_states)
      : dt(static_cast<std::size_t>(kTimeTile * width)),
        du(dt.size()),
        u(dt.size()),
        y(dt.size()),
        b_rows(static_cast<std::size_t>(kTimeTile * padded_states), F(0)),
        c_rows(b_rows.size(), F(0)) {}
};

/// The scan of one batch element over one block of up to P::width channels of one group.
/// h holds its state: padded_states × width, state n of lane l at n·width + l.
template <class P, class T, class W>
class ScanLanes {
  using F = typename P::scalar;
  static constexpr int kW = P::width;

 public:
  static constexpr int width = P::width;

  ScanLanes(const SelectiveScanParams<T, W>& p, Index b, Index d0, Index lanes)
      : p_(p),
        b_(b),
        d0_(d0),
        lanes_(lanes),
        g_(d0 / (p.channels() / p.groups())),
        n_(p.state_size()),
        np_(padded_states(p.state_size())),
        a2_(static_cast<std::size_t>(np_ * kW), F(0)),
        bias_(kW, F(0)),
        dskip_(kW, F(0)),
        h(a2_.size(), F(0)) {
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

  static Index padded_states(Index n) { return (n + kStateTile - 1) / kStateTile * kStateTile; }

  void load_state(const TensorView<const W, 3>& h0) {
    std::fill(h.begin(), h.end(), F(0));
    if (!h0.absent())
      for (Index l = 0; l < lanes_; ++l)
        for (Index n = 0; n < n_; ++n)
          h[n * kW + l] = static_cast<F>(h0(b_, d0_ + l, n));
  }

  void store_state(const TensorView<W, 3>& h_out) const {
    if (!h_out.absent())
      for (Index l = 0; l < lanes_; ++l)
        for (Index n = 0; n < n_; ++n)
          h_out(b_, d0_ + l, n) = static_cast<W>(h[n * kW + l]);
  }

  /// Steps between checkpoints (SelectiveScanParams::checkpoints), 0 when none are asked for.
  Index checkpoint_interval() const { return p_.checkpoints.absent() ? 0 : p_.checkpoint_interval; }

  /// Stores h as checkpoint j, the state entering step j·checkpoint_interval().
  void store_checkpoint(Index j) const {
    for (Index l = 0; l < lanes_; ++l)
      for (Index n = 0; n < n_; ++n)
        p_.checkpoints(j, b_, d0_ + l, n) = static_cast<W>(h[n * kW + l]);
  }

  /// exp(A·s) for a per-lane sum of steps s: the decay of a chunk, in double.
  void decay(const double* dt_sum, F* out) const {
    std::fill(out, out + np_ * kW, F(1));
    for (Index l = 0; l < lanes_; ++l)
      for (Index n = 0; n < n_; ++n)
        out[n * kW + l] =
            static_cast<F>(std::exp(static_cast<double>(p_.A(d0_ + l, n)) * dt_sum[l]));
  }

  /// Advances h over the nt <= kTimeTile steps from t0. kOut: writes p.out; otherwise it is a
  /// chunk summary and dt_sum (per lane) accumulates Σ Δ.
  template <bool kOut>
  void step(Index t0, Index nt, ScanStaging<F>& st, double* dt_sum) {
    stage<kOut>(t0, nt, st);
    for (Index n0 = 0; n0 < np_; n0 += kStateTile) {
      // After softplus Δ >= 0, and A <= 0 (validated): Δ·A needs no upper clamp in exp2.
      if (p_.delta_softplus)
        tile<kOut, false>(nt, n0, st);
      else
        tile<kOut, true>(nt, n0, st);
    }
    if constexpr (kOut) {
      finish(t0, nt, st);
    } else {
      for (Index i = 0; i < nt; ++i)
        for (int l = 0; l < kW; ++l)
          dt_sum[l] += static_cast<double>(st.dt[i * kW + l]);
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

  /// Rows (b, t0.., g, ·) of B (and C) into the staging, unless they are there already.
  template <bool kOut>
  void stage_rows(Index t0, Index nt, ScanStaging<F>& st) const {
    if (st.rows_b == b_ && st.rows_g == g_ && st.rows_t0 == t0 && (st.rows_have_c || !kOut))
      return;
    st.rows_b = b_, st.rows_g = g_, st.rows_t0 = t0, st.rows_have_c = kOut;
    const auto copy = [&](const TensorView<const T, 4>& v, F* dst) {
      for (Index i = 0; i < nt; ++i) {
        const T* src = &v(b_, t0 + i, g_, 0);
        for (Index n = 0; n < n_; ++n)
          dst[i * np_ + n] = static_cast<F>(src[n * v.stride(3)]);
      }
    };
    copy(p_.B, st.b_rows.data());
    if constexpr (kOut)
      copy(p_.C, st.c_rows.data());
  }

  template <bool kOut>
  void stage(Index t0, Index nt, ScanStaging<F>& st) const {
    stage_rows<kOut>(t0, nt, st);
    const P bias = P::load(bias_.data());
    for (Index i = 0; i < nt; ++i) {
      P dt = load_lanes(p_.delta, t0 + i) + bias;
      if (p_.delta_softplus)
        dt = simd::softplus(dt);
      const P u = load_lanes(p_.u, t0 + i);
      dt.store(&st.dt[i * kW]);
      (dt * u).store(&st.du[i * kW]);
      if constexpr (kOut)
        u.store(&st.u[i * kW]);
    }
  }

  /// States n0 .. n0+kStateTile over nt staged steps: h = exp(Δ·A)·h + Δ·u·B, y += C·h.
  template <bool kOut, bool kClampHigh>
  void tile(Index nt, Index n0, ScanStaging<F>& st) {
    P hr[kStateTile], a2[kStateTile];
    for (int j = 0; j < kStateTile; ++j) {
      hr[j] = P::load(&h[(n0 + j) * kW]);
      a2[j] = P::load(&a2_[(n0 + j) * kW]);
    }
    for (Index i = 0; i < nt; ++i) {
      const P dt = P::load(&st.dt[i * kW]), du = P::load(&st.du[i * kW]);
      const F* brow = &st.b_rows[i * np_ + n0];
      const F* crow = &st.c_rows[i * np_ + n0];
      P y = P::broadcast(F(0));
      for (int j = 0; j < kStateTile; ++j) {
        const P decay = simd::exp2<P, kClampHigh>(dt * a2[j]);
        hr[j] = fma(decay, hr[j], du * P::broadcast(brow[j]));
        if constexpr (kOut)
          y = fma(hr[j], P::broadcast(crow[j]), y);
      }
      if constexpr (kOut)
        (n0 == 0 ? y : y + P::load(&st.y[i * kW])).store(&st.y[i * kW]);
    }
    for (int j = 0; j < kStateTile; ++j)
      hr[j].store(&h[(n0 + j) * kW]);
  }

  /// out = (y + D·u)·silu(z) for the staged steps.
  void finish(Index t0, Index nt, const ScanStaging<F>& st) const {
    const P dskip = P::load(dskip_.data());
    for (Index i = 0; i < nt; ++i) {
      P y = P::load(&st.y[i * kW]);
      if (!p_.D_skip.absent())
        y = fma(dskip, P::load(&st.u[i * kW]), y);
      if (!p_.z.absent())
        y = y * simd::silu(load_lanes(p_.z, t0 + i));
      store_lanes(y, t0 + i);
    }
  }

  const SelectiveScanParams<T, W>& p_;
  Index b_, d0_, lanes_, g_, n_, np_;
  std::vector<F> a2_, bias_, dskip_;  // A·log2(e) (np_ × kW), δ_bias and D per lane

 public:
  std::vector<F> h;
};

/// Scans times [t0, t1) for every block of `blocks`, one time tile at a time across all of them.
/// kOut: also stores the checkpoints that fall in [t0, t1), tiles ending at each.
template <bool kOut, class Lanes, class F>
void scan_blocks(std::vector<Lanes>& blocks, Index t0, Index t1, ScanStaging<F>& st,
                 double* dt_sums) {
  Index every = 0;
  if constexpr (kOut)
    every = blocks.empty() ? 0 : blocks[0].checkpoint_interval();
  Index nt = 0;
  for (Index s = t0; s < t1; s += nt) {
    nt = std::min(kTimeTile, t1 - s);
    if (every > 0) {
      if (s % every == 0)
        for (const Lanes& lanes : blocks)
          lanes.store_checkpoint(s / every);
      nt = std::min(nt, (s / every + 1) * every - s);
    }
    for (std::size_t i = 0; i < blocks.size(); ++i)
      blocks[i].template step<kOut>(s, nt, st, kOut ? nullptr : dt_sums + i * Lanes::width);
  }
}

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
  SSMKIT_CHECK(policy.chunks >= 0, "policy.chunks", "value", ">= 0 (0: one more than the threads)",
               policy.chunks);
  SSMKIT_CHECK(policy.min_chunk_length >= 1, "policy.min_chunk_length", "value", ">= 1",
               policy.min_chunk_length);
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

  using Lanes = detail::ScanLanes<P, T, W>;
  const Index np = Lanes::padded_states(p.state_size());
  const Index threads = max_threads();
  const Index chunks =
      std::clamp<Index>(policy.chunks > 0 ? policy.chunks : threads + 1, 2, std::max<Index>(2, L));
  const bool chunked = policy.mode == SelectiveScanPolicy::Mode::Chunked ||
                       (policy.mode == SelectiveScanPolicy::Mode::Auto && blocks < threads &&
                        L / chunks >= policy.min_chunk_length);
  if (!chunked) {
    const Index tasks = (blocks + detail::kBlocksPerTask - 1) / detail::kBlocksPerTask;
    parallel_for(0, tasks, [&](Index task) {
      std::vector<Lanes> group;
      for (Index i = task * detail::kBlocksPerTask;
           i < std::min(blocks, (task + 1) * detail::kBlocksPerTask); ++i) {
        group.push_back(lanes_of(i));
        group.back().load_state(p.h0);
      }
      detail::ScanStaging<F> st(kW, np);
      detail::scan_blocks<true>(group, 0, L, st, nullptr);
      for (const Lanes& lanes : group)
        lanes.store_state(p.h_final);
    });
    return;
  }

  const std::vector<Index> bounds = detail::chunk_bounds(L, chunks);
  const Index hsize = np * kW;
  // states[(i·chunks + k)·hsize ..]: after phase 1 the end state of chunk k (from h0 for k = 0,
  // from zero otherwise); after phase 2 the true initial state of chunk k + 1.
  std::vector<F> states(static_cast<std::size_t>(blocks * chunks * hsize));
  std::vector<double> dt_sums(static_cast<std::size_t>(blocks * chunks * kW), 0.0);
  const auto state = [&](Index i, Index k) { return &states[(i * chunks + k) * hsize]; };
  parallel_for(0, blocks * (chunks - 1), [&](Index task) {
    const Index i = task / (chunks - 1), k = task % (chunks - 1);
    std::vector<Lanes> one{lanes_of(i)};
    detail::ScanStaging<F> st(kW, np);
    if (k == 0) {
      one[0].load_state(p.h0);
      detail::scan_blocks<true>(one, bounds[0], bounds[1], st, nullptr);
    } else {
      detail::scan_blocks<false>(one, bounds[k], bounds[k + 1], st,
                                 &dt_sums[(i * chunks + k) * kW]);
    }
    std::copy(one[0].h.begin(), one[0].h.end(), state(i, k));
  });
  parallel_for(0, blocks, [&](Index i) {
    const Lanes lanes = lanes_of(i);
    std::vector<F> decay(static_cast<std::size_t>(hsize));
    for (Index k = 1; k + 1 < chunks; ++k) {
      // (·, carried) ∘ (decay_k, local_k): the state after chunk k is decay_k·carried + local_k.
      lanes.decay(&dt_sums[(i * chunks + k) * kW], decay.data());
      const F* carried = state(i, k - 1);
      F* local = state(i, k);
      for (Index j = 0; j < hsize; ++j)
        local[j] = decay[j] * carried[j] + local[j];
    }
  });
  parallel_for(0, blocks * (chunks - 1), [&](Index task) {
    const Index i = task / (chunks - 1), k = task % (chunks - 1) + 1;
    std::vector<Lanes> one{lanes_of(i)};
    std::copy(state(i, k - 1), state(i, k - 1) + hsize, one[0].h.begin());
    detail::ScanStaging<F> st(kW, np);
    detail::scan_blocks<true>(one, bounds[k], bounds[k + 1], st, nullptr);
    if (k == chunks - 1)
      one[0].store_state(p.h_final);
  });
}

}  // namespace ssmkit::cpu
