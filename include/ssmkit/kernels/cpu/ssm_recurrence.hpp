// Recurrent mode of a discretised LTI SSM: h_t = A_bar h_{t-1} + B_bar u_t, y_t = C h_t + D u_t,
// for diagonal complex systems (y = 2 Re C h, conjugate modes implied) and dense real ones
// (S4, arXiv 2111.00396, Sec. 2.3). A call over one time step is the streaming step.
#pragma once

#include "ssmkit/core/parallel.hpp"
#include "ssmkit/core/tensor_view.hpp"
#include "ssmkit/kernels/cpu/ssm_kernel_vandermonde.hpp"
#include "ssmkit/math/discretize.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <complex>
#include <string>
#include <vector>

namespace ssmkit::cpu {

namespace detail {

template <class T, class V>
void check_io(const TensorView<const T, 3>& u, const TensorView<T, 3>& y,
              const TensorView<const T, 1>& D_skip, const V& state, Index H, Index M) {
  const Index Bt = u.size(0), L = u.size(1);
  check_shape(u, "u", {Bt, L, H});
  check_device(u, "u", Device::CPU);
  check_shape(y, "y", {Bt, L, H});
  check_device(y, "y", Device::CPU);
  if (!D_skip.absent()) {
    check_shape(D_skip, "D", {H});
    check_device(D_skip, "D", Device::CPU);
  }
  if (!state.absent()) {
    check_shape(state, "state", {Bt, H, M});
    check_device(state, "state", Device::CPU);
  }
  // y may be u itself (each step reads u_t before writing y_t), but no other overlap.
  check_disjoint_or_same(y, "y", u, "u");
  check_disjoint(y, "y", D_skip, "D");
  check_disjoint(y, "y", state, "state");
  check_disjoint(state, "state", u, "u");
  check_disjoint(state, "state", D_skip, "D");
}

/// y and state are written while the system's views are read.
template <class T, class V, class W>
void check_params_disjoint(const TensorView<T, 3>& y, const V& state, const W& param,
                           const char* name) {
  check_disjoint(y, "y", param, name);
  check_disjoint(state, "state", param, name);
}

/// One time step of kLanes channels: h = A_bar h + B_bar u, y = Re sum_n C h. Fixed-size Eigen
/// arrays make the lane loop explicit SIMD (AVX-512: one register per array of floats).
template <class T, Index kLanes>
inline void diagonal_lanes_step(Index M, const T* ar, const T* ai, const T* br, const T* bi,
                                const T* cr, const T* ci, T* hr, T* hi, const T* u, T* y) {
  using Lanes = Eigen::Array<T, kLanes, 1>;
  using In = Eigen::Map<const Lanes>;
  using Out = Eigen::Map<Lanes>;
  const Lanes U = In(u);
  Lanes Y = Lanes::Zero();
  for (Index n = 0; n < M; ++n) {
    const Index o = n * kLanes;
    Out Hr(hr + o), Hi(hi + o);
    const In Ar(ar + o), Ai(ai + o);
    const Lanes r = Ar * Hr - Ai * Hi + In(br + o) * U;
    const Lanes i = Ar * Hi + Ai * Hr + In(bi + o) * U;
    Hr = r;
    Hi = i;
    Y += In(cr + o) * r - In(ci + o) * i;
  }
  Out out(y);
  out = Y;
}

}  // namespace detail

/// A diagonal recurrence over H channels of M complex modes.
template <class T>
struct DiagonalRecurrenceParams {
  TensorView<const std::complex<T>, 2> A_bar;  ///< (H, M)
  TensorView<const std::complex<T>, 2> B_bar;  ///< (H, M)
  TensorView<const std::complex<T>, 2> C;      ///< (H, M)
  TensorView<const T, 1> D_skip;               ///< (H) optional
  TensorView<const T, 3> u;                    ///< (batch, L, H)
  TensorView<T, 3> y;                          ///< (batch, L, H)
  TensorView<std::complex<T>, 3> state;        ///< (batch, H, M) optional: h_0 in, h_L out
};

template <class T>
void validate(const DiagonalRecurrenceParams<T>& p) {
  const Index H = p.A_bar.size(0), M = p.A_bar.size(1);
  SSMKIT_CHECK(H >= 1 && M >= 1, "A_bar", "shape", "(H >= 1, M >= 1)",
               ssmkit::detail::shape_string<2>(p.A_bar.shape()));
  check_device(p.A_bar, "A_bar", Device::CPU);
  check_shape(p.B_bar, "B_bar", {H, M});
  check_device(p.B_bar, "B_bar", Device::CPU);
  check_shape(p.C, "C", {H, M});
  check_device(p.C, "C", Device::CPU);
  detail::check_io(p.u, p.y, p.D_skip, p.state, H, M);
  detail::check_params_disjoint(p.y, p.state, p.A_bar, "A_bar");
  detail::check_params_disjoint(p.y, p.state, p.B_bar, "B_bar");
  detail::check_params_disjoint(p.y, p.state, p.C, "C");
}

/// A_bar (H, M) and B_bar (H, M) of a diagonal SSM (validated) with `method`.
template <class T>
void discretize_diagonal(const DiagonalSsm<T>& s, math::Discretization method,
                         const TensorView<std::complex<T>, 2>& A_bar,
                         const TensorView<std::complex<T>, 2>& B_bar) {
  validate(s);
  const Index H = s.channels(), M = s.modes();
  check_shape(A_bar, "A_bar", {H, M});
  check_shape(B_bar, "B_bar", {H, M});
  for (Index h = 0; h < H; ++h)
    for (Index n = 0; n < M; ++n) {
      const auto m = math::discretize_mode<double>(std::complex<double>(s.Lambda(h, n)),
                                                   double(s.dt(h)), method);
      A_bar(h, n) = std::complex<T>(m.A_bar);
      B_bar(h, n) = std::complex<T>(m.B_scale * std::complex<double>(s.B(h, n)));
    }
}

/// Runs the diagonal recurrence. Lanes of kLanes channels advance together with the modes'
/// real and imaginary parts in separate arrays, so the inner loop is one SIMD pass per mode.
template <class T>
void ssm_recurrence_diagonal(const DiagonalRecurrenceParams<T>& p) {
  validate(p);
  const Index Bt = p.u.size(0), L = p.u.size(1), H = p.A_bar.size(0), M = p.A_bar.size(1);
  constexpr Index kLanes = static_cast<Index>(64 / sizeof(T));
  const Index tiles = (H + kLanes - 1) / kLanes;

  parallel_for(0, Bt * tiles, [&](Index task) {
    const Index bi = task / tiles, h0 = (task % tiles) * kLanes, w = std::min(kLanes, H - h0);
    std::vector<T> coef(6 * M * kLanes, T(0)), st(2 * M * kLanes, T(0));
    T *ar = &coef[0], *ai = ar + M * kLanes, *br = ai + M * kLanes, *bi_ = br + M * kLanes,
      *cr = bi_ + M * kLanes, *ci = cr + M * kLanes;
    T *hr = &st[0], *hi = hr + M * kLanes;
    T d[kLanes] = {}, uu[kLanes] = {}, yy[kLanes];
    for (Index j = 0; j < w; ++j) {
      d[j] = p.D_skip.absent() ? T(0) : p.D_skip(h0 + j);
      for (Index n = 0; n < M; ++n) {
        const Index o = n * kLanes + j;
        ar[o] = p.A_bar(h0 + j, n).real();
        ai[o] = p.A_bar(h0 + j, n).imag();
        br[o] = p.B_bar(h0 + j, n).real();
        bi_[o] = p.B_bar(h0 + j, n).imag();
        cr[o] = p.C(h0 + j, n).real();
        ci[o] = p.C(h0 + j, n).imag();
        if (!p.state.absent()) {
          hr[o] = p.state(bi, h0 + j, n).real();
          hi[o] = p.state(bi, h0 + j, n).imag();
        }
      }
    }
    for (Index t = 0; t < L; ++t) {
      for (Index j = 0; j < w; ++j)
        uu[j] = p.u(bi, t, h0 + j);
      detail::diagonal_lanes_step<T, kLanes>(M, ar, ai, br, bi_, cr, ci, hr, hi, uu, yy);
      for (Index j = 0; j < w; ++j)
        p.y(bi, t, h0 + j) = T(2) * yy[j] + d[j] * uu[j];
    }
    if (!p.state.absent())
      for (Index j = 0; j < w; ++j)
        for (Index n = 0; n < M; ++n)
          p.state(bi, h0 + j, n) = {hr[n * kLanes + j], hi[n * kLanes + j]};
  });
}

/// A dense real recurrence over H channels of state size N.
template <class T>
struct DenseRecurrenceParams {
  TensorView<const T, 3> A_bar;   ///< (H, N, N)
  TensorView<const T, 2> B_bar;   ///< (H, N)
  TensorView<const T, 2> C;       ///< (H, N)
  TensorView<const T, 1> D_skip;  ///< (H) optional
  TensorView<const T, 3> u;       ///< (batch, L, H)
  TensorView<T, 3> y;             ///< (batch, L, H)
  TensorView<T, 3> state;         ///< (batch, H, N) optional: h_0 in, h_L out
};

template <class T>
void validate(const DenseRecurrenceParams<T>& p) {
  const Index H = p.A_bar.size(0), N = p.A_bar.size(1);
  SSMKIT_CHECK(H >= 1 && N >= 1 && p.A_bar.size(2) == N, "A_bar", "shape", "(H >= 1, N, N)",
               ssmkit::detail::shape_string<3>(p.A_bar.shape()));
  check_device(p.A_bar, "A_bar", Device::CPU);
  check_shape(p.B_bar, "B_bar", {H, N});
  check_device(p.B_bar, "B_bar", Device::CPU);
  check_shape(p.C, "C", {H, N});
  check_device(p.C, "C", Device::CPU);
  detail::check_io(p.u, p.y, p.D_skip, p.state, H, N);
  detail::check_params_disjoint(p.y, p.state, p.A_bar, "A_bar");
  detail::check_params_disjoint(p.y, p.state, p.B_bar, "B_bar");
  detail::check_params_disjoint(p.y, p.state, p.C, "C");
}

/// Runs the dense recurrence, one (batch, channel) pair per task.
template <class T>
void ssm_recurrence_dense(const DenseRecurrenceParams<T>& p) {
  validate(p);
  const Index Bt = p.u.size(0), L = p.u.size(1), H = p.A_bar.size(0), N = p.A_bar.size(1);
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
  parallel_for(0, Bt * H, [&](Index task) {
    const Index bi = task / H, h = task % H;
    const Mat A = as_eigen(TensorView<const T, 2>(p.A_bar[h]));
    const Vec B = as_eigen(TensorView<const T, 1>(p.B_bar[h]));
    const Vec C = as_eigen(TensorView<const T, 1>(p.C[h]));
    const T d = p.D_skip.absent() ? T(0) : p.D_skip(h);
    Vec x = Vec::Zero(N), next(N);
    if (!p.state.absent())
      for (Index n = 0; n < N; ++n)
        x(n) = p.state(bi, h, n);
    for (Index t = 0; t < L; ++t) {
      const T ut = p.u(bi, t, h);
      next.noalias() = A * x;
      x = next + B * ut;
      p.y(bi, t, h) = C.dot(x) + d * ut;
    }
    if (!p.state.absent())
      for (Index n = 0; n < N; ++n)
        p.state(bi, h, n) = x(n);
  });
}

}  // namespace ssmkit::cpu
