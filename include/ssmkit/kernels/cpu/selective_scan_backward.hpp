// The S6 selective scan's backward pass on the CPU (reverse-mode derivative of Mamba's Algorithm 2,
// arXiv 2312.00752): with g_t = ∂ℓ/∂h_t = Ā_{t+1}·g_{t+1} + dy_t·C_t, every gradient is a local
// product of g_t, h_{t-1} and the step's inputs. States are recomputed chunk by chunk from states
// saved at chunk boundaries (by a walk forwards, or the forward's checkpoints):
// O((L/chunk + chunk)·N) per channel lane plus L·N per task for the dB, dC sums, never B·L·D·N.
#pragma once

#include "ssmkit/core/parallel.hpp"
#include "ssmkit/kernels/cpu/exp_approx.hpp"
#include "ssmkit/kernels/selective_scan_backward_params.hpp"
#include "ssmkit/math/activations.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace ssmkit::cpu {

/// How the backward splits its work. Results depend on these, never on the thread count.
struct SelectiveScanBackwardPolicy {
  /// Time steps recomputed at once. Each task keeps L/chunk_length saved states and one chunk of
  /// states (both times N per channel lane); about sqrt(L) minimises that. With the forward's
  /// checkpoints the chunks are their interval instead.
  Index chunk_length = 64;
  /// Channels of one group per parallel task. Each task sums its channels' dB, dC (L·N values)
  /// privately; the slices are then added in a fixed order.
  Index channels_per_task = 128;
};

namespace detail {

/// The pack the backward computes in: float lanes of the widest instruction set, or 8 doubles.
template <class W>
using backward_pack_t =
    std::conditional_t<std::is_same_v<W, double>, simd::Portable<double, 8>, simd::BestF32>;

/// σ(x) per lane; with `threshold`, 1 above softplus's threshold of 20 (softplus'(x) there).
/// Float lanes need no test: σ rounds to 1 above 17, and exp2 clamps instead of overflowing.
template <class P>
P sigmoid_lanes(P x, bool threshold) {
  using F = typename P::scalar;
  if constexpr (!simd::is_f32_pack<P>) {
    for (int i = 0; i < P::width; ++i)
      x.v[i] = threshold && x.v[i] > F(20) ? F(1) : ssmkit::sigmoid(x.v[i]);
    return x;
  } else {
    (void)threshold;
    return simd::sigmoid(x);
  }
}

/// The backward over one block of up to P::width channels, all in one group, of one batch
/// element. Buffers are laid out [.., n, lane] so that each state row is one pack.
template <class P, class T, class W>
class ScanBackwardLanes {
  using F = typename P::scalar;
  static constexpr int V = P::width;

 public:
  static constexpr int width = V;

  ScanBackwardLanes(const SelectiveScanBackwardParams<T, W>& p, Index K)
      : p_(p),
        N_(p.state_size()),
        K_(K),
        a2_(sz(N_ * V)),
        a_(sz(N_ * V)),
        h_(sz(N_ * V)),
        gh_(sz(N_ * V)),
        dA_(sz(N_ * V)),
        saved_(sz((p.length() + K - 1) / K * N_ * V)),
        hs_(sz(K * N_ * V)),
        a_bar_(sz(K * N_ * V)),
        dt_(sz(K * V)),
        dsp_(sz(K * V)),
        u_(sz(K * V)),
        sum_b_(sz(N_ * V)),
        sum_c_(sz(N_ * V)) {}

  /// Channels d0 .. d0+lanes-1 of batch b: writes du, δ, dz, dh0 there, adds their dB and dC
  /// into dB_acc, dC_acc (L, N), and writes their dA, dD, dδ_bias into dA_b (D, N), dD_b, dbias_b.
  void run(Index b, Index d0, Index lanes, F* dB_acc, F* dC_acc, W* dA_b, W* dD_b, W* dbias_b) {
    const Index L = p_.length(), N = N_;
    b_ = b, d0_ = d0, lanes_ = lanes, g_ = d0 / (p_.channels() / p_.groups());
    F bias[V] = {}, skip[V] = {};
    std::fill(a2_.begin(), a2_.end(), F(0));  // a dead lane decays by 1 and keeps h = g = 0
    std::fill(a_.begin(), a_.end(), F(0));
    std::fill(h_.begin(), h_.end(), F(0));
    std::fill(gh_.begin(), gh_.end(), F(0));
    std::fill(dA_.begin(), dA_.end(), F(0));
    for (Index j = 0; j < lanes; ++j) {
      if (!p_.delta_bias.absent())
        bias[j] = static_cast<F>(p_.delta_bias(d0 + j));
      if (!p_.D_skip.absent())
        skip[j] = static_cast<F>(p_.D_skip(d0 + j));
      for (Index n = 0; n < N; ++n) {
        a_[n * V + j] = static_cast<F>(p_.A(d0 + j, n));
        a2_[n * V + j] = static_cast<F>(static_cast<double>(p_.A(d0 + j, n)) * 1.4426950408889634);
        if (!p_.h0.absent())
          h_[n * V + j] = static_cast<F>(p_.h0(b, d0 + j, n));
        if (!p_.dh_final.absent())
          gh_[n * V + j] = static_cast<F>(p_.dh_final(b, d0 + j, n));
      }
    }
    bias_ = P::load(bias);
    skip_ = P::load(skip);
    dskip_ = dbias_ = P::broadcast(F(0));

    // The state entering each chunk: the forward's checkpoints, or a walk forwards over the
    // sequence saving them.
    if (!p_.checkpoints.absent()) {
      std::fill(saved_.begin(), saved_.end(), F(0));
      for (Index c = 0; c < (L + K_ - 1) / K_; ++c)
        for (Index n = 0; n < N; ++n)
          for (Index j = 0; j < lanes; ++j)
            saved_[sz((c * N + n) * V + j)] = static_cast<F>(p_.checkpoints(c, b, d0 + j, n));
    } else {
      for (Index t = 0; t < L; ++t) {
        if (t + kAhead < L)
          prefetch_forward(t + kAhead);
        if (t % K_ == 0)
          std::copy(h_.begin(), h_.end(), saved_.begin() + (t / K_) * N * V);
        load_step(t, 0, false);
        step(t, 0, h_.data(), h_.data(), nullptr);
      }
    }
    // Chunks in reverse: recompute their states, then run the reverse recurrence through them.
    for (Index c = (L + K_ - 1) / K_ - 1; c >= 0; --c) {
      const Index t0 = c * K_, len = std::min(K_, L - t0);
      const F* h_entry = &saved_[sz(c * N * V)];
      for (Index k = 0; k < len; ++k) {
        if (k + kAhead < len)
          prefetch_forward(t0 + k + kAhead);
        else  // the way back starts with these steps
          prefetch_back(t0 + k);
        load_step(t0 + k, k, true);
        F* hk = &hs_[sz(k * N * V)];
        step(t0 + k, k, k ? hk - N * V : h_entry, hk, &a_bar_[sz(k * N * V)]);
      }
      for (Index k = len - 1; k >= 0; --k) {
        if (k >= kAhead)
          prefetch_back(t0 + k - kAhead);
        else if (c > 0)  // the next chunk's walk forwards starts with these steps
          prefetch_forward(t0 - K_ + k);
        reverse_step(t0 + k, k, k ? &hs_[sz((k - 1) * N * V)] : h_entry);
        add_lane_sums(dB_acc + (t0 + k) * N, dC_acc + (t0 + k) * N);
      }
    }

    F dskip[V], dbias[V];
    dskip_.store(dskip);
    dbias_.store(dbias);
    for (Index j = 0; j < lanes; ++j) {
      const Index d = d0 + j;
      for (Index n = 0; n < N; ++n) {
        dA_b[d * N + n] = static_cast<W>(dA_[n * V + j]);
        if (!p_.dh0.absent())
          p_.dh0(b, d, n) = static_cast<W>(gh_[n * V + j]);
      }
      dD_b[d] = static_cast<W>(dskip[j]);
      dbias_b[d] = static_cast<W>(dbias[j]);
    }
  }

 private:
  static std::size_t sz(Index n) { return static_cast<std::size_t>(n); }

  /// Lanes d0.. of view(b, t, ·) as a pack, zero beyond the block.
  P load_lanes(const TensorView<const T, 3>& v, Index t) const {
    const T* src = &v(b_, t, d0_);
    if constexpr (std::is_same_v<T, F>)
      if (lanes_ == V && v.stride(2) == 1)
        return P::load(src);
    F tmp[V] = {};
    for (Index j = 0; j < lanes_; ++j)
      tmp[j] = static_cast<F>(src[j * v.stride(2)]);
    return P::load(tmp);
  }

  void store_lanes(const TensorView<T, 3>& v, Index t, const P& x) const {
    T* dst = &v(b_, t, d0_);
    if constexpr (std::is_same_v<T, F>)
      if (lanes_ == V && v.stride(2) == 1)
        return x.store(dst);
    F tmp[V];
    x.store(tmp);
    for (Index j = 0; j < lanes_; ++j)
      dst[j * v.stride(2)] = static_cast<T>(tmp[j]);
  }

  /// Asks for the lines of lanes d0.. of view(b, t, ·) before they are needed. A step's lanes
  /// sit a row of D channels past the last step's, a page or more apart for the usual D, and the
  /// hardware prefetchers stop at page boundaries: without this each step's loads and stores miss.
  template <bool kWrite, class View>
  void prefetch_lanes(const View& v, Index t) const {
#if defined(__GNUC__)
    if (v.absent())
      return;
    const auto* first = &v(b_, t, d0_);
    __builtin_prefetch(first, kWrite, 3);
    __builtin_prefetch(first + (lanes_ - 1) * v.stride(2), kWrite, 3);
#else
    (void)v, (void)t;
#endif
  }

  /// What a step of the walk forwards reads, and what a step of the way back reads and writes.
  /// Only a few steps ahead: the rows of all operands at one step often share cache sets (D a
  /// multiple of a large power of two), so lines asked for a chunk ahead are evicted again.
  void prefetch_forward(Index t) const {
    prefetch_lanes<false>(p_.delta, t);
    prefetch_lanes<false>(p_.u, t);
  }
  void prefetch_back(Index t) const {
    prefetch_lanes<false>(p_.dout, t);
    prefetch_lanes<false>(p_.z, t);
    prefetch_lanes<true>(p_.du, t);
    prefetch_lanes<true>(p_.ddelta, t);
    prefetch_lanes<true>(p_.dz, t);
  }

  /// Δ_t, u_t and (with derivative) softplus'(δ_t + bias) into row k of the chunk buffers.
  void load_step(Index t, Index k, bool derivative) {
    const P raw = load_lanes(p_.delta, t) + bias_;
    const bool sp = p_.delta_softplus;
    (sp ? simd::softplus(raw) : raw).store(&dt_[sz(k * V)]);
    if (derivative)
      (sp ? sigmoid_lanes(raw, true) : P::broadcast(F(1))).store(&dsp_[sz(k * V)]);
    load_lanes(p_.u, t).store(&u_[sz(k * V)]);
  }

  /// h_out = exp(Δ·A)·h_in + Δ·u·B_t with the step in row k (h_out may be h_in), keeping
  /// exp(Δ·A) in a_out when given.
  void step(Index t, Index k, const F* h_in, F* h_out, F* a_out) const {
    const P dt = P::load(&dt_[sz(k * V)]);
    const P dtu = dt * P::load(&u_[sz(k * V)]);
    const T* brow = &p_.B(b_, t, g_, 0);
    const Index bs = p_.B.stride(3);
    for (Index n = 0; n < N_; ++n) {
      const P a = simd::exp2(dt * P::load(&a2_[sz(n * V)]));
      if (a_out)
        a.store(a_out + n * V);
      fma(a, P::load(h_in + n * V), dtu * P::broadcast(static_cast<F>(brow[n * bs])))
          .store(h_out + n * V);
    }
  }

  /// One step of the reverse recurrence at time t (row k), from g = ∂ℓ/∂h_t less dy·C_t to
  /// ∂ℓ/∂h_{t-1}, writing the step's gradients; the lanes' terms of dB and dC go to sum_b_, sum_c_.
  void reverse_step(Index t, Index k, const F* h_prev) {
    const Index N = N_;
    const P dt = P::load(&dt_[sz(k * V)]), u = P::load(&u_[sz(k * V)]);
    const F* hk = &hs_[sz(k * N * V)];
    const F* a_bar = &a_bar_[sz(k * N * V)];
    const T* brow = &p_.B(b_, t, g_, 0);
    const T* crow = &p_.C(b_, t, g_, 0);
    const Index bs = p_.B.stride(3), cs = p_.C.stride(3);
    const P dout = load_lanes(p_.dout, t);
    P dy = dout;
    if (!p_.z.absent()) {
      P y = skip_ * u;
      for (Index n = 0; n < N; ++n)
        y = fma(P::load(hk + n * V), P::broadcast(static_cast<F>(crow[n * cs])), y);
      const P z = load_lanes(p_.z, t), s = sigmoid_lanes(z, false), one = P::broadcast(F(1));
      store_lanes(p_.dz, t, dout * y * s * fma(z, one - s, one));
      dy = dout * z * s;
    }
    // Σ_n g·B_n serves both du (times Δ) and dΔ (times u); Σ_n g·Ā·h_{t-1}·A_n is dΔ's rest.
    const P dtu = dt * u;
    P gB = P::broadcast(F(0)), sA = gB;
    dskip_ = fma(dy, u, dskip_);
    for (Index n = 0; n < N; ++n) {
      const P g = fma(dy, P::broadcast(static_cast<F>(crow[n * cs])),
                      P::load(&gh_[sz(n * V)]));  // ∂ℓ/∂h_t
      const P gh = g * P::load(a_bar + n * V);    // ∂ℓ/∂h_{t-1}
      const P ga = gh * P::load(h_prev + n * V);
      (dy * P::load(hk + n * V)).store(&sum_c_[sz(n * V)]);
      (g * dtu).store(&sum_b_[sz(n * V)]);
      gB = fma(g, P::broadcast(static_cast<F>(brow[n * bs])), gB);
      sA = fma(ga, P::load(&a_[sz(n * V)]), sA);
      fma(ga, dt, P::load(&dA_[sz(n * V)])).store(&dA_[sz(n * V)]);
      gh.store(&gh_[sz(n * V)]);
    }
    const P draw = fma(gB, u, sA) * P::load(&dsp_[sz(k * V)]);
    dbias_ = dbias_ + draw;
    store_lanes(p_.du, t, fma(gB, dt, dy * skip_));
    store_lanes(p_.ddelta, t, draw);
  }

  /// Adds the step's dB and dC terms summed over the lanes to db, dc (N each): a pack's width of
  /// states at once (a transpose-and-add), any remainder one by one. Summed every step, the terms
  /// stay in a buffer of N packs that the step has just written.
  void add_lane_sums(F* db, F* dc) const {
    Index n = 0;
    for (; n + V <= N_; n += V) {
      (P::load(db + n) + P::sum_rows(&sum_b_[sz(n * V)])).store(db + n);
      (P::load(dc + n) + P::sum_rows(&sum_c_[sz(n * V)])).store(dc + n);
    }
    for (; n < N_; ++n) {
      F sb = 0, sc = 0;
      for (int j = 0; j < V; ++j) {
        sb += sum_b_[sz(n * V + j)];
        sc += sum_c_[sz(n * V + j)];
      }
      db[n] += sb;
      dc[n] += sc;
    }
  }

  static constexpr Index kAhead = 4;  // steps the walks prefetch ahead

  const SelectiveScanBackwardParams<T, W>& p_;
  Index N_, K_, b_ = 0, d0_ = 0, lanes_ = 0, g_ = 0;
  std::vector<F> a2_, a_, h_, gh_, dA_, saved_, hs_, a_bar_, dt_, dsp_, u_, sum_b_, sum_c_;
  P bias_{}, skip_{}, dskip_{}, dbias_{};
};

}  // namespace detail

/// Writes every gradient view of `p` (see SelectiveScanBackwardParams), accumulating in W, in
/// parallel over batch × group × channel slices. Throws ssmkit::Error for invalid arguments.
template <class T, class W>
void selective_scan_backward(const SelectiveScanBackwardParams<T, W>& p,
                             const SelectiveScanBackwardPolicy& policy = {}) {
  validate(p, Device::CPU);
  SSMKIT_CHECK(policy.chunk_length >= 1, "policy.chunk_length", "value", ">= 1",
               policy.chunk_length);
  SSMKIT_CHECK(policy.channels_per_task >= 1, "policy.channels_per_task", "value", ">= 1",
               policy.channels_per_task);
  const Index batch = p.batch(), L = p.length(), D = p.channels(), N = p.state_size();
  const Index G = p.groups(), Dg = D / G;
  const Index K = std::min(p.checkpoints.absent() ? policy.chunk_length : p.checkpoint_interval,
                           std::max<Index>(L, 1));
  const Index slices = (Dg + policy.channels_per_task - 1) / policy.channels_per_task;
  const Index slice_width = slices ? (Dg + slices - 1) / slices : 0;
  auto sz = [](Index n) { return static_cast<std::size_t>(n); };

  using P = detail::backward_pack_t<W>;
  using F = typename P::scalar;
  constexpr Index V = P::width;

  // Private sums of the tasks: dB, dC per (batch, group, slice); dA, dD, dδ_bias per batch.
  std::vector<F> dB_part(sz(batch * G * slices * L * N)), dC_part(dB_part.size());
  std::vector<W> dA_part(sz(batch * D * N)), dD_part(sz(batch * D)), dbias_part(sz(batch * D));
  parallel_for(0, batch * G * slices, [&](Index task) {
    const Index b = task / (G * slices), g = (task / slices) % G, slice = task % slices;
    const Index begin = g * Dg + slice * slice_width;
    const Index end = std::min(begin + slice_width, (g + 1) * Dg);
    detail::ScanBackwardLanes<P, T, W> lanes(p, K);
    for (Index d0 = begin; d0 < end; d0 += V)
      lanes.run(b, d0, std::min(V, end - d0), dB_part.data() + task * L * N,
                dC_part.data() + task * L * N, dA_part.data() + b * D * N, dD_part.data() + b * D,
                dbias_part.data() + b * D);
  });

  parallel_for(0, batch * L, [&](Index bt) {
    const Index b = bt / L, t = bt % L;
    for (Index g = 0; g < G; ++g)
      for (Index n = 0; n < N; ++n) {
        F sb = 0, sc = 0;
        for (Index slice = 0; slice < slices; ++slice) {
          const Index i = ((b * G + g) * slices + slice) * L * N + t * N + n;
          sb += dB_part[sz(i)];
          sc += dC_part[sz(i)];
        }
        p.dB(b, t, g, n) = static_cast<T>(sb);
        p.dC(b, t, g, n) = static_cast<T>(sc);
      }
  });
  parallel_for(0, D, [&](Index d) {
    for (Index n = 0; n < N; ++n) {
      W sum = 0;
      for (Index b = 0; b < batch; ++b)
        sum += dA_part[sz((b * D + d) * N + n)];
      p.dA(d, n) = sum;
    }
    W sum_d = 0, sum_bias = 0;
    for (Index b = 0; b < batch; ++b) {
      sum_d += dD_part[sz(b * D + d)];
      sum_bias += dbias_part[sz(b * D + d)];
    }
    if (!p.dD_skip.absent())
      p.dD_skip(d) = sum_d;
    if (!p.ddelta_bias.absent())
      p.ddelta_bias(d) = sum_bias;
  });
}

}  // namespace ssmkit::cpu
