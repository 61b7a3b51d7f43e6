// The S4 layer (Gu et al., arXiv 2111.00396; S4D, arXiv 2206.11893): H independent channels, each
// an SSM of state size N, y = K * u + D u in convolution mode or h_t = A_bar h_{t-1} + B_bar u_t,
// y_t = C h_t + D u_t in recurrent mode, with DPLR or complex-diagonal A and a per-channel dt.
#pragma once

#include "ssmkit/core/device.hpp"
#include "ssmkit/core/host_tensor.hpp"
#include "ssmkit/kernels/cpu/fft_conv.hpp"
#include "ssmkit/kernels/cpu/ssm_kernel_dplr.hpp"
#include "ssmkit/kernels/cpu/ssm_kernel_vandermonde.hpp"
#include "ssmkit/kernels/cpu/ssm_recurrence.hpp"
#include "ssmkit/math/discretize.hpp"
#include "ssmkit/math/nplr.hpp"
#include "ssmkit/math/s4d_init.hpp"

#include <cmath>
#include <complex>
#include <cstdint>
#include <random>
#include <string>
#include <type_traits>

namespace ssmkit::nn {

enum class S4Parameterization { Diagonal, Dplr };

struct S4Config {
  Index channels = 1;     ///< H
  Index state_size = 64;  ///< N, even: N/2 complex modes with their conjugates implied
  S4Parameterization param = S4Parameterization::Diagonal;
  math::S4DInit diagonal_init = math::S4DInit::Lin;  ///< Diagonal only
  math::Measure measure = math::Measure::LegS;       ///< Dplr only: its normal part must be stable
  math::Discretization discretization = math::Discretization::ZOH;  ///< Dplr needs Bilinear
  double dt_min = 1e-3, dt_max = 1e-1;  ///< dt is log-uniform in [dt_min, dt_max] per channel
  std::uint64_t seed = 0;
};

/// An S4 layer over (batch, length, H) activations in any memory order. Parameters are public
/// (load trained ones into them); every call validates them.
template <class T, class Backend = Cpu>
class S4Layer {
  static_assert(std::is_same_v<Backend, Cpu>, "S4Layer has a CPU backend only");
  using cT = std::complex<T>;

 public:
  S4Config config;
  HostTensor<cT, 2> Lambda;  ///< (H, M) continuous eigenvalues, Re < 0
  HostTensor<cT, 3> P;       ///< (H, M, R) low-rank factor (Dplr only)
  HostTensor<cT, 2> B;       ///< (H, M)
  HostTensor<cT, 2> C;       ///< (H, M) output, y = 2 Re(C h)
  HostTensor<T, 1> dt;       ///< (H) step sizes
  HostTensor<T, 1> D;        ///< (H) skip

  /// Initialised as S4 / S4D do: A (and B, P) from HiPPO or the S4D rule, C complex normal with
  /// variance 1/2 per part, D standard normal, dt log-uniform.
  explicit S4Layer(const S4Config& cfg) : config(cfg) {
    const Index H = cfg.channels, N = cfg.state_size;
    SSMKIT_CHECK(H >= 1, "config.channels", "value", ">= 1", H);
    SSMKIT_CHECK(N >= 2 && N % 2 == 0, "config.state_size", "value", "even and >= 2", N);
    SSMKIT_CHECK(std::isfinite(cfg.dt_max), "config.dt_max", "value", "finite", cfg.dt_max);
    SSMKIT_CHECK(std::isfinite(cfg.dt_min) && cfg.dt_min > 0 && cfg.dt_max >= cfg.dt_min,
                 "config.dt_min", "range [dt_min, dt_max]", "0 < dt_min <= dt_max",
                 std::to_string(cfg.dt_min) + ", " + std::to_string(cfg.dt_max));
    const Index M = N / 2;
    math::CVector<double> lam, b;
    math::CMatrix<double> p;
    if (cfg.param == S4Parameterization::Dplr) {
      SSMKIT_CHECK(cfg.discretization == math::Discretization::Bilinear, "config.discretization",
                   "method of a DPLR layer (Woodbury needs a resolvent)", "bilinear",
                   cfg.discretization);
      const math::Dplr<double> d = math::dplr<double>(cfg.measure, N);
      SSMKIT_CHECK(d.Lambda.real().maxCoeff() < 0, "config.measure",
                   "real part of the normal part's eigenvalues", "< 0 (LegS)", cfg.measure);
      lam = d.Lambda;
      b = d.B;
      p = d.P;
    } else {
      const math::DiagonalInit<double> d = math::s4d_init<double>(cfg.diagonal_init, N);
      lam = d.Lambda;
      b = d.B;
      p = math::CMatrix<double>(M, 0);
    }
    const Index R = p.cols();
    Lambda = HostTensor<cT, 2>({H, M}, "Lambda");
    P = HostTensor<cT, 3>({H, M, R}, "P");
    B = HostTensor<cT, 2>({H, M}, "B");
    C = HostTensor<cT, 2>({H, M}, "C");
    dt = HostTensor<T, 1>({H}, "dt");
    D = HostTensor<T, 1>({H}, "D");
    std::mt19937_64 rng(cfg.seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> uniform(std::log(cfg.dt_min), std::log(cfg.dt_max));
    for (Index h = 0; h < H; ++h) {
      for (Index n = 0; n < M; ++n) {
        Lambda(h, n) = cT(lam(n));
        B(h, n) = cT(b(n));
        for (Index r = 0; r < R; ++r)
          P(h, n, r) = cT(p(n, r));
        const double re = normal(rng), im = normal(rng);
        C(h, n) = cT(T(re * std::sqrt(0.5)), T(im * std::sqrt(0.5)));
      }
      dt(h) = T(std::exp(uniform(rng)));
      D(h) = T(normal(rng));
    }
  }

  Index channels() const { return config.channels; }
  Index state_size() const { return config.state_size; }

  /// The convolution kernel K (H, L) for L = K.size(1): K[h, l] = C A_bar^l B_bar.
  void kernel(const TensorView<T, 2>& K) const {
    check_parameters();
    if (config.param == S4Parameterization::Diagonal) {
      cpu::ssm_kernel_vandermonde(diagonal(), config.discretization, K);
      return;
    }
    SSMKIT_CHECK(K.size(1) >= 1, "K", "length (dim 1)", ">= 1", K.size(1));
    check_shape(K, "K", {channels(), K.size(1)});
    HostTensor<cT, 2> C_tilde({channels(), modes()}, "C_tilde");
    cpu::dplr_c_tilde(dplr(C.view()), K.size(1), C_tilde.view());
    cpu::ssm_kernel_dplr(dplr(C_tilde.view()), K);
  }

  /// Convolution mode: y (batch, L, H) = K * u + D u, with the kernel of length L.
  void forward_conv(const TensorView<const T, 3>& u, const TensorView<T, 3>& y) const {
    check_shape(u, "u", {u.size(0), u.size(1), channels()});
    SSMKIT_CHECK(u.size(1) >= 1, "u", "length (dim 1)", ">= 1", u.size(1));
    HostTensor<T, 2> K({channels(), u.size(1)}, "K");
    kernel(K.view());
    cpu::fft_conv(cpu::FftConvParams<T>{u, K.view(), D.view(), y});
  }

  /// The streaming state of `batch` sequences: the discretised parameters (a snapshot of the
  /// layer's at creation) and the hidden states, zero.
  struct State {
    HostTensor<cT, 2> A_bar, B_bar;     ///< Diagonal: (H, M)
    HostTensor<cT, 3> modes;            ///< Diagonal: (batch, H, M)
    HostTensor<T, 3> A_dense;           ///< Dplr: (H, N, N), real form x = [Re h; Im h]
    HostTensor<T, 2> B_dense, C_dense;  ///< Dplr: (H, N)
    HostTensor<T, 3> dense;             ///< Dplr: (batch, H, N)
    Index batch = 0;
  };

  State make_state(Index batch) const {
    SSMKIT_CHECK(batch >= 1, "batch", "value", ">= 1", batch);
    check_parameters();
    const Index H = channels(), M = modes(), N = state_size();
    State s;
    s.batch = batch;
    if (config.param == S4Parameterization::Diagonal) {
      s.A_bar = HostTensor<cT, 2>({H, M});
      s.B_bar = HostTensor<cT, 2>({H, M});
      cpu::discretize_diagonal(diagonal(), config.discretization, s.A_bar.view(), s.B_bar.view());
      s.modes = HostTensor<cT, 3>({batch, H, M});
      return s;
    }
    s.A_dense = HostTensor<T, 3>({H, N, N});
    s.B_dense = HostTensor<T, 2>({H, N});
    s.C_dense = HostTensor<T, 2>({H, N});
    const cpu::DplrSsm<T> sys = dplr(C.view());
    for (Index h = 0; h < H; ++h) {
      math::CVector<double> c(M);
      for (Index n = 0; n < M; ++n)
        c(n) = std::complex<double>(C(h, n));
      math::RVector<double> c_real;
      const math::Transition<double> d = cpu::detail::dplr_bilinear_real(sys, h, c, &c_real);
      for (Index i = 0; i < N; ++i) {
        for (Index j = 0; j < N; ++j)
          s.A_dense(h, i, j) = T(d.A(i, j));
        s.B_dense(h, i) = T(d.B(i));
        s.C_dense(h, i) = T(c_real(i));
      }
    }
    s.dense = HostTensor<T, 3>({batch, H, N});
    return s;
  }

  /// Recurrent mode over a whole sequence from `state` (advanced to the end of u).
  void forward_recurrent(State& state, const TensorView<const T, 3>& u,
                         const TensorView<T, 3>& y) const {
    SSMKIT_CHECK_EQ("u", "batch (dim 0) of the state's", state.batch, u.size(0));
    if (config.param == S4Parameterization::Diagonal) {
      cpu::ssm_recurrence_diagonal(cpu::DiagonalRecurrenceParams<T>{
          state.A_bar.view(), state.B_bar.view(), C.view(), D.view(), u, y, state.modes.view()});
    } else {
      cpu::ssm_recurrence_dense(
          cpu::DenseRecurrenceParams<T>{state.A_dense.view(), state.B_dense.view(),
                                        state.C_dense.view(), D.view(), u, y, state.dense.view()});
    }
  }

  /// Recurrent mode from a zero state.
  void forward_recurrent(const TensorView<const T, 3>& u, const TensorView<T, 3>& y) const {
    State s = make_state(u.size(0));
    forward_recurrent(s, u, y);
  }

  /// One time step of every sequence: u_t, y_t (batch, H).
  void step(State& state, const TensorView<const T, 2>& u_t, const TensorView<T, 2>& y_t) const {
    const Index Bt = u_t.size(0), H = u_t.size(1);
    check_shape(y_t, "y_t", {Bt, H});
    forward_recurrent(state,
                      TensorView<const T, 3>::unchecked(
                          u_t.data(), {Bt, 1, H}, {u_t.stride(0), 0, u_t.stride(1)}, u_t.device()),
                      TensorView<T, 3>::unchecked(y_t.data(), {Bt, 1, H},
                                                  {y_t.stride(0), 0, y_t.stride(1)}, y_t.device()));
  }

 private:
  Index modes() const { return config.state_size / 2; }

  cpu::DiagonalSsm<T> diagonal() const { return {Lambda.view(), B.view(), C.view(), dt.view()}; }
  cpu::DplrSsm<T> dplr(TensorView<const cT, 2> c) const {
    return {Lambda.view(), P.view(), B.view(), c, dt.view()};
  }

  void check_parameters() const {
    const Index H = channels(), M = modes();
    check_shape(Lambda.view(), "Lambda", {H, M});
    check_shape(D.view(), "D", {H});
    if (config.param == S4Parameterization::Diagonal) {
      cpu::validate(diagonal());
    } else {
      // config is public: a DPLR layer only has the bilinear kernel and recurrence.
      SSMKIT_CHECK(config.discretization == math::Discretization::Bilinear, "config.discretization",
                   "method of a DPLR layer", "bilinear", config.discretization);
      cpu::validate(dplr(C.view()));
    }
  }
};

}  // namespace ssmkit::nn
