// The S6 selective scan's backward pass on the CPU (reverse-mode derivative of Mamba's Algorithm 2,
// arXiv 2312.00752): with g_t = ∂ℓ/∂h_t = Ā_{t+1}·g_{t+1} + dy_t·C_t, every gradient is a local
// product of g_t, h_{t-1} and the step's inputs. States are recomputed chunk by chunk from states
// saved at chunk boundaries, so memory is O((L/chunk + chunk)·N) per channel, never B·L·D·N.
#pragma once

#include "ssmkit/core/parallel.hpp"
#include "ssmkit/kernels/selective_scan_backward_params.hpp"
#include "ssmkit/math/activations.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <new>
#include <vector>

namespace ssmkit::cpu {

/// How the backward splits its work. Results depend on these, never on the thread count.
struct SelectiveScanBackwardPolicy {
  /// Time steps recomputed at once. Each task keeps L/chunk_length saved states and one chunk of
  /// states (both times N per channel lane); about sqrt(L) minimises that.
  Index chunk_length = 64;
  /// Channels of one group per parallel task. Each task sums its channels' dB, dC (L·N values)
  /// privately; the slices are then added in a fixed order.
  Index channels_per_task = 128;
};

namespace detail {

/// Channels processed side by side: one 512-bit register of W, so the lane loops vectorise.
template <class W>
inline constexpr int kScanBackwardLanes = static_cast<int>(64 / sizeof(W));

/// Per-task scratch, laid out [.., n, lane] so the inner loops run over lanes.
template <class W>
struct ScanBackwardScratch {
  static constexpr int V = kScanBackwardLanes<W>;
  std::vector<W> A, h, gh, dA, saved, hs, a_bar, dt, dsp, u, dy, ddt, du, sum_b, sum_c;
  ScanBackwardScratch(Index N, Index chunks, Index K)
      : A(sz(N * V)),
        h(sz(N * V)),
        gh(sz(N * V)),
        dA(sz(N * V)),
        saved(sz(chunks * N * V)),
        hs(sz(K * N * V)),
        a_bar(sz(K * N * V)),
        dt(sz(K * V)),
        dsp(sz(K * V)),
        u(sz(K * V)),
        dy(sz(V)),
        ddt(sz(V)),
        du(sz(V)),
        sum_b(sz(N * V)),
        sum_c(sz(N * V)) {}
  static std::size_t sz(Index n) { return static_cast<std::size_t>(n); }
};

/// Sums each row of rows × V lanes into lane 0, halving the width: a fixed order that vectorises.
template <class W>
inline void sum_lanes(W* x, Index rows) {
  constexpr int V = kScanBackwardLanes<W>;
  for (int w = V / 2; w >= 1; w /= 2)
    for (Index r = 0; r < rows; ++r)
      for (int j = 0; j < w; ++j)
        x[r * V + j] += x[r * V + j + w];
}

/// The gradients of channels d0 .. d0+lanes-1 (all in group g) of batch b. dB and dC of this
/// task's slice are added into dB_acc, dC_acc (L, N); dA, dD and dδ_bias of batch b are written
/// to dA_b (D, N), dD_b (D), dbias_b (D).
template <class T, class W>
void scan_backward_lanes(const SelectiveScanBackwardParams<T, W>& p, Index b, Index g, Index d0,
                         int lanes, Index K, ScanBackwardScratch<W>& s, W* dB_acc, W* dC_acc,
                         W* dA_b, W* dD_b, W* dbias_b) {
  constexpr int V = kScanBackwardLanes<W>;
  const Index L = p.length(), N = p.state_size();
  const bool softplus_on = p.delta_softplus, has_z = !p.z.absent(), has_D = !p.D_skip.absent();
  W bias[V], skip[V], dskip[V], dbias[V];
  for (int j = 0; j < V; ++j) {
    const bool live = j < lanes;
    bias[j] = live && !p.delta_bias.absent() ? p.delta_bias(d0 + j) : W(0);
    skip[j] = live && has_D ? p.D_skip(d0 + j) : W(0);
    dskip[j] = dbias[j] = W(0);
    for (Index n = 0; n < N; ++n) {
      s.A[n * V + j] = live ? p.A(d0 + j, n) : W(0);  // a dead lane keeps h = 0 and g = 0
      s.h[n * V + j] = live && !p.h0.absent() ? p.h0(b, d0 + j, n) : W(0);
      s.gh[n * V + j] = live && !p.dh_final.absent() ? p.dh_final(b, d0 + j, n) : W(0);
      s.dA[n * V + j] = W(0);
    }
  }
  // Δ_t, softplus'(δ_t + bias) and u_t of every lane into row k of the chunk buffers.
  auto load_step = [&](Index t, Index k) {
    for (int j = 0; j < V; ++j) {
      W dt = 0, dsp = 0, u = 0;
      if (j < lanes) {
        const W raw = static_cast<W>(p.delta(b, t, d0 + j)) + bias[j];
        dt = softplus_on ? softplus(raw) : raw;
        dsp = softplus_on && raw <= W(20) ? sigmoid(raw) : W(1);
        u = static_cast<W>(p.u(b, t, d0 + j));
      }
      s.dt[k * V + j] = dt;
      s.dsp[k * V + j] = dsp;
      s.u[k * V + j] = u;
    }
  };
  // One recurrence step from `h`, keeping Ā in row k when asked.
  auto step = [&](Index t, Index k, W* h, W* a_out) {
    const W* dt = &s.dt[k * V];
    const W* u = &s.u[k * V];
    for (Index n = 0; n < N; ++n) {
      const W Bn = static_cast<W>(p.B(b, t, g, n));
      W* hn = h + n * V;
      const W* An = &s.A[n * V];
      for (int j = 0; j < V; ++j) {
        const W a = std::exp(dt[j] * An[j]);
        if (a_out)
          a_out[n * V + j] = a;
        hn[j] = a * hn[j] + dt[j] * Bn * u[j];
      }
    }
  };

  // Forward over the whole sequence, saving the state entering each chunk.
  const Index chunks = (L + K - 1) / K;
  for (Index t = 0; t < L; ++t) {
    if (t % K == 0)
      std::copy(s.h.begin(), s.h.end(), s.saved.begin() + (t / K) * N * V);
    load_step(t, 0);
    step(t, 0, s.h.data(), nullptr);
  }

  // Chunks in reverse: recompute their states, then run the reverse recurrence through them.
  for (Index c = chunks - 1; c >= 0; --c) {
    const Index t0 = c * K, len = std::min(K, L - t0);
    const W* h_entry = &s.saved[c * N * V];
    for (Index k = 0; k < len; ++k) {
      load_step(t0 + k, k);
      W* hk = &s.hs[k * N * V];
      std::copy(k ? hk - N * V : h_entry, (k ? hk - N * V : h_entry) + N * V, hk);
      step(t0 + k, k, hk, &s.a_bar[k * N * V]);
    }
    for (Index k = len - 1; k >= 0; --k) {
      const Index t = t0 + k;
      const W* dt = &s.dt[k * V];
      const W* u = &s.u[k * V];
      const W* hk = &s.hs[k * N * V];
      const W* h_prev = k ? hk - N * V : h_entry;
      const W* a_bar = &s.a_bar[k * N * V];
      W zv[V];
      for (int j = 0; j < V; ++j) {
        s.dy[j] = j < lanes ? static_cast<W>(p.dout(b, t, d0 + j)) : W(0);
        zv[j] = j < lanes && has_z ? static_cast<W>(p.z(b, t, d0 + j)) : W(0);
      }
      if (has_z) {
        W y[V];
        for (int j = 0; j < V; ++j)
          y[j] = skip[j] * u[j];
        for (Index n = 0; n < N; ++n) {
          const W Cn = static_cast<W>(p.C(b, t, g, n));
          for (int j = 0; j < V; ++j)
            y[j] += Cn * hk[n * V + j];
        }
        for (int j = 0; j < lanes; ++j) {
          const W sg = sigmoid(zv[j]), dout = s.dy[j];
          p.dz(b, t, d0 + j) = static_cast<T>(dout * y[j] * sg * (W(1) + zv[j] * (W(1) - sg)));
          s.dy[j] = dout * zv[j] * sg;
        }
      }
      for (int j = 0; j < V; ++j) {
        s.du[j] = s.dy[j] * skip[j];
        dskip[j] += s.dy[j] * u[j];
        s.ddt[j] = W(0);
      }
      for (Index n = 0; n < N; ++n) {
        const W Bn = static_cast<W>(p.B(b, t, g, n)), Cn = static_cast<W>(p.C(b, t, g, n));
        const W* An = &s.A[n * V];
        W* gn = &s.gh[n * V];
        W* dAn = &s.dA[n * V];
        W* sb = &s.sum_b[n * V];
        W* sc = &s.sum_c[n * V];
        for (int j = 0; j < V; ++j) {
          const W gj = gn[j] + s.dy[j] * Cn;  // ∂ℓ/∂h_t
          const W ga = gj * a_bar[n * V + j] * h_prev[n * V + j];
          const W gdt = gj * dt[j];
          sc[j] = s.dy[j] * hk[n * V + j];
          sb[j] = gdt * u[j];
          s.ddt[j] += ga * An[j] + gj * Bn * u[j];
          dAn[j] += ga * dt[j];
          s.du[j] += gdt * Bn;
          gn[j] = gj * a_bar[n * V + j];  // ∂ℓ/∂h_{t-1}
        }
      }
      sum_lanes(s.sum_b.data(), N);
      sum_lanes(s.sum_c.data(), N);
      for (Index n = 0; n < N; ++n) {
        dB_acc[t * N + n] += s.sum_b[n * V];
        dC_acc[t * N + n] += s.sum_c[n * V];
      }
      for (int j = 0; j < lanes; ++j) {
        const W draw = s.ddt[j] * s.dsp[k * V + j];
        dbias[j] += draw;
        p.du(b, t, d0 + j) = static_cast<T>(s.du[j]);
        p.ddelta(b, t, d0 + j) = static_cast<T>(draw);
      }
    }
  }

  for (int j = 0; j < lanes; ++j) {
    const Index d = d0 + j;
    for (Index n = 0; n < N; ++n) {
      dA_b[d * N + n] = s.dA[n * V + j];
      if (!p.dh0.absent())
        p.dh0(b, d, n) = s.gh[n * V + j];
    }
    dD_b[d] = dskip[j];
    dbias_b[d] = dbias[j];
  }
}

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
  const Index K = std::min(policy.chunk_length, std::max<Index>(L, 1));
  const Index chunks = (L + K - 1) / K;
  const Index slices = (Dg + policy.channels_per_task - 1) / policy.channels_per_task;
  const Index slice_width = slices ? (Dg + slices - 1) / slices : 0;
  constexpr int V = detail::kScanBackwardLanes<W>;
  auto sz = [](Index n) { return static_cast<std::size_t>(n); };

  // Private sums of the tasks: dB, dC per (batch, group, slice); dA, dD, dδ_bias per batch.
  std::vector<W> dB_part(sz(batch * G * slices * L * N)), dC_part(dB_part.size());
  std::vector<W> dA_part(sz(batch * D * N)), dD_part(sz(batch * D)), dbias_part(sz(batch * D));
  std::atomic<bool> out_of_memory{false};
  parallel_for(0, batch * G * slices, [&](Index task) {
    const Index b = task / (G * slices), g = (task / slices) % G, slice = task % slices;
    const Index begin = g * Dg + slice * slice_width,
                end = std::min(begin + slice_width, (g + 1) * Dg);
    W* dB_acc = dB_part.data() + task * L * N;
    W* dC_acc = dC_part.data() + task * L * N;
    try {
      detail::ScanBackwardScratch<W> scratch(N, chunks, K);
      for (Index d0 = begin; d0 < end; d0 += V)
        detail::scan_backward_lanes(p, b, g, d0, static_cast<int>(std::min<Index>(V, end - d0)), K,
                                    scratch, dB_acc, dC_acc, dA_part.data() + b * D * N,
                                    dD_part.data() + b * D, dbias_part.data() + b * D);
    } catch (const std::bad_alloc&) {
      out_of_memory = true;  // an exception may not leave a parallel region
    }
  });
  if (out_of_memory)
    throw std::bad_alloc();

  parallel_for(0, batch * L, [&](Index bt) {
    const Index b = bt / L, t = bt % L;
    for (Index g = 0; g < G; ++g)
      for (Index n = 0; n < N; ++n) {
        W sb = 0, sc = 0;
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
