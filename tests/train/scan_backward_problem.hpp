// A random selective-scan problem with its gradient buffers, for the backward tests: inputs in
// token-major or channel-major memory, every optional argument switchable, outputs poisoned.
#pragma once

#include "testing.hpp"

#include <ssmkit/kernels/selective_scan_backward_params.hpp>

#include <limits>
#include <string>
#include <vector>

namespace ssmkit::testing {

struct ScanOptions {
  bool softplus = false, bias = false, skip = false, gate = false, h0 = false, dh_final = false;
  Index groups = 1;
  bool channel_major = false;  // (batch, D, L) and (batch, G, N, L) memory, as mamba_ssm uses

  std::string str() const {
    return std::string("softplus ") + (softplus ? "1" : "0") + " bias " + (bias ? "1" : "0") +
           " D " + (skip ? "1" : "0") + " z " + (gate ? "1" : "0") + " h0 " + (h0 ? "1" : "0") +
           " dh_final " + (dh_final ? "1" : "0") + " G " + std::to_string(groups) +
           (channel_major ? " channel-major" : " token-major");
  }
};

/// Logical (batch, L, D) view of an activation stored per options.channel_major.
template <class T>
TensorView<T, 3> activation_view(T* data, Index batch, Index L, Index D, bool channel_major) {
  if (!channel_major)
    return TensorView<T, 3>(data, {batch, L, D}, "activation");
  return TensorView<T, 3>(data, {batch, L, D}, {D * L, 1, L}, "activation");
}

/// Logical (batch, L, G, N) view of B or C stored per options.channel_major.
template <class T>
TensorView<T, 4> projection_view(T* data, Index batch, Index L, Index G, Index N,
                                 bool channel_major) {
  if (!channel_major)
    return TensorView<T, 4>(data, {batch, L, G, N}, "projection");
  return TensorView<T, 4>(data, {batch, L, G, N}, {G * N * L, 1, N * L, L}, "projection");
}

template <class T, class W = accum_t<T>>
struct ScanProblem {
  Index batch, L, D, N;
  ScanOptions opt;
  std::vector<T> u, delta, z, dout, B, C;
  std::vector<W> A, skip, bias, h0, dh_final;

  ScanProblem(Index batch_, Index L_, Index D_, Index N_, const ScanOptions& o, std::uint64_t seed)
      : batch(batch_), L(L_), D(D_), N(N_), opt(o) {
    const auto act = static_cast<std::size_t>(batch * L * D);
    const auto proj = static_cast<std::size_t>(batch * L * o.groups * N);
    const auto state = static_cast<std::size_t>(batch * D * N);
    const auto chan = static_cast<std::size_t>(D);
    u = random_vector<T>(act, seed + 1);
    // Without softplus δ is the step itself: keep it positive, as a trained model's is.
    delta = o.softplus ? random_vector<T>(act, seed + 2, -3.0, 3.0)
                       : random_vector<T>(act, seed + 2, 0.05, 0.6);
    if (o.softplus)  // some raw steps above softplus's threshold of 20, where it is the identity
      for (std::size_t i = 0; i < act; i += 5)
        delta[i] = static_cast<T>(22.0 + static_cast<double>(delta[i]));
    dout = random_vector<T>(act, seed + 3);
    B = random_vector<T>(proj, seed + 4);
    C = random_vector<T>(proj, seed + 5);
    A = random_vector<W>(chan * static_cast<std::size_t>(N), seed + 6, -2.0, -0.1);
    if (o.gate)
      z = random_vector<T>(act, seed + 7, -3.0, 3.0);
    if (o.skip)
      skip = random_vector<W>(chan, seed + 8);
    if (o.bias)
      bias = o.softplus ? random_vector<W>(chan, seed + 9, -1.0, 1.0)
                        : random_vector<W>(chan, seed + 9, 0.0, 0.2);
    if (o.h0)
      h0 = random_vector<W>(state, seed + 10);
    if (o.dh_final)
      dh_final = random_vector<W>(state, seed + 11);
  }

  /// The same problem with every value converted to U (exactly, when U is wider).
  template <class U>
  ScanProblem<U, accum_t<U>> cast() const {
    using WU = accum_t<U>;
    ScanProblem<U, WU> p(0, 0, 0, 0, opt, 0);
    p.batch = batch, p.L = L, p.D = D, p.N = N;
    auto conv = [](const auto& v, auto* tag) {
      using To = std::remove_pointer_t<decltype(tag)>;
      std::vector<To> out(v.size());
      for (std::size_t i = 0; i < v.size(); ++i)
        out[i] = static_cast<To>(static_cast<double>(v[i]));
      return out;
    };
    p.u = conv(u, (U*)nullptr), p.delta = conv(delta, (U*)nullptr), p.z = conv(z, (U*)nullptr);
    p.dout = conv(dout, (U*)nullptr), p.B = conv(B, (U*)nullptr), p.C = conv(C, (U*)nullptr);
    p.A = conv(A, (WU*)nullptr), p.skip = conv(skip, (WU*)nullptr);
    p.bias = conv(bias, (WU*)nullptr), p.h0 = conv(h0, (WU*)nullptr);
    p.dh_final = conv(dh_final, (WU*)nullptr);
    return p;
  }

  Index groups() const { return opt.groups; }

  SelectiveScanBackwardParams<T, W> params() {
    const Index G = opt.groups;
    const bool cm = opt.channel_major;
    SelectiveScanBackwardParams<T, W> p;
    p.u = activation_view<const T>(u.data(), batch, L, D, cm);
    p.delta = activation_view<const T>(delta.data(), batch, L, D, cm);
    p.dout = activation_view<const T>(dout.data(), batch, L, D, cm);
    p.A = TensorView<const W, 2>(A.data(), {D, N}, "A");
    p.B = projection_view<const T>(B.data(), batch, L, G, N, cm);
    p.C = projection_view<const T>(C.data(), batch, L, G, N, cm);
    if (opt.gate)
      p.z = activation_view<const T>(z.data(), batch, L, D, cm);
    if (opt.skip)
      p.D_skip = TensorView<const W, 1>(skip.data(), {D}, "D_skip");
    if (opt.bias)
      p.delta_bias = TensorView<const W, 1>(bias.data(), {D}, "delta_bias");
    if (opt.h0)
      p.h0 = TensorView<const W, 3>(h0.data(), {batch, D, N}, "h0");
    if (opt.dh_final)
      p.dh_final = TensorView<const W, 3>(dh_final.data(), {batch, D, N}, "dh_final");
    p.delta_softplus = opt.softplus;
    return p;
  }
};

/// Gradient buffers of a problem, NaN-poisoned, in the problem's memory order.
template <class T, class W = accum_t<T>>
struct ScanGradients {
  std::vector<T> du, ddelta, dz, dB, dC;
  std::vector<W> dA, dD, dbias, dh0;

  template <class P>
  explicit ScanGradients(const P& pr) {
    const T nan_t = static_cast<T>(std::numeric_limits<double>::quiet_NaN());
    const W nan_w = std::numeric_limits<W>::quiet_NaN();
    const auto act = static_cast<std::size_t>(pr.batch * pr.L * pr.D);
    const auto proj = static_cast<std::size_t>(pr.batch * pr.L * pr.groups() * pr.N);
    du.assign(act, nan_t), ddelta.assign(act, nan_t);
    dB.assign(proj, nan_t), dC.assign(proj, nan_t);
    dA.assign(static_cast<std::size_t>(pr.D * pr.N), nan_w);
    if (pr.opt.gate)
      dz.assign(act, nan_t);
    if (pr.opt.skip)
      dD.assign(static_cast<std::size_t>(pr.D), nan_w);
    if (pr.opt.bias)
      dbias.assign(static_cast<std::size_t>(pr.D), nan_w);
    if (pr.opt.h0)
      dh0.assign(static_cast<std::size_t>(pr.batch * pr.D * pr.N), nan_w);
  }

  template <class P>
  void attach(SelectiveScanBackwardParams<T, W>& p, const P& pr) {
    const bool cm = pr.opt.channel_major;
    const Index batch = pr.batch, L = pr.L, D = pr.D, N = pr.N, G = pr.groups();
    p.du = activation_view<T>(du.data(), batch, L, D, cm);
    p.ddelta = activation_view<T>(ddelta.data(), batch, L, D, cm);
    p.dA = TensorView<W, 2>(dA.data(), {D, N}, "dA");
    p.dB = projection_view<T>(dB.data(), batch, L, G, N, cm);
    p.dC = projection_view<T>(dC.data(), batch, L, G, N, cm);
    if (pr.opt.gate)
      p.dz = activation_view<T>(dz.data(), batch, L, D, cm);
    if (pr.opt.skip)
      p.dD_skip = TensorView<W, 1>(dD.data(), {D}, "dD_skip");
    if (pr.opt.bias)
      p.ddelta_bias = TensorView<W, 1>(dbias.data(), {D}, "ddelta_bias");
    if (pr.opt.h0)
      p.dh0 = TensorView<W, 3>(dh0.data(), {batch, D, N}, "dh0");
  }
};

}  // namespace ssmkit::testing
