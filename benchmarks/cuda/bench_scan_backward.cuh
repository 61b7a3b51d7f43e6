// The inputs and gradients of the target shapes' backward benchmark problems
// (benchmarks/RESULTS.md, top), shared by the scan backward benchmarks: N=16, z, D, δ_bias,
// softplus, inputs from bench_scan.cuh's ranges.
#pragma once

#include "bench_scan.cuh"

#include <ssmkit/kernels/selective_scan_backward_params.hpp>

namespace ssmkit::bench {

struct BackwardShape {
  Index batch, D, L, N;
  double mamba_fp32_ms, mamba_bf16_ms;  // mamba_ssm's backward: DESIGN.md's, or --mamba-ssm's
};

/// How the activations lie in memory: token-major, channel-major, or as a Mamba block hands them
/// over (token-major, with z and dz the second halves of in_proj's (batch, L, 2D) output and its
/// gradient).
enum class Layout { token, channel, block };

inline const char* layout_name(Layout l) {
  return l == Layout::token ? "token" : l == Layout::channel ? "channel" : "block";
}

/// Inputs and gradients of one shape in one layout.
template <class T>
struct BackwardProblem {
  cuda::DeviceBuffer<T> u, delta, z, dout, B, C, du, ddelta, dz, dB, dC;
  cuda::DeviceBuffer<float> A, D_skip, bias, dA, dD, dbias;
  SelectiveScanBackwardParams<T, float> p;

  BackwardProblem(const BackwardShape& s, Layout layout)
      : u(s.batch * s.L * s.D),
        delta(s.batch * s.L * s.D),
        z(s.batch * s.L * s.D * (layout == Layout::block ? 2 : 1)),
        dout(s.batch * s.L * s.D),
        B(s.batch * s.L * s.N),
        C(s.batch * s.L * s.N),
        du(s.batch * s.L * s.D),
        ddelta(s.batch * s.L * s.D),
        dz(s.batch * s.L * s.D * (layout == Layout::block ? 2 : 1)),
        dB(s.batch * s.L * s.N),
        dC(s.batch * s.L * s.N),
        A(s.D * s.N),
        D_skip(s.D),
        bias(s.D),
        dA(s.D * s.N),
        dD(s.D),
        dbias(s.D) {
    fill(u, 1, -1.f, 1.f);
    fill(delta, 2, -4.f, 1.f);
    fill(z, 3, -3.f, 3.f);
    fill(dout, 4, -1.f, 1.f);
    fill(B, 5, -1.f, 1.f);
    fill(C, 6, -1.f, 1.f);
    fill(A, 7, -4.f, -0.1f);
    fill(D_skip, 8, -1.f, 1.f);
    fill(bias, 9, -1.f, 0.5f);
    const bool channel_major = layout == Layout::channel;
    const Shape<3> shape{s.batch, s.L, s.D};
    const Shape<3> strides =
        channel_major ? Shape<3>{s.D * s.L, 1, s.L} : Shape<3>{s.L * s.D, s.D, 1};
    // B and C as mamba_ssm keeps them in the channel-major case: (batch, G, N, L).
    const Shape<4> bc{s.batch, s.L, 1, s.N};
    const Shape<4> bc_strides =
        channel_major ? Shape<4>{s.N * s.L, 1, s.N * s.L, s.L} : Shape<4>{s.L * s.N, s.N, s.N, 1};
    p.u = u.template view<3>(shape, strides);
    p.delta = delta.template view<3>(shape, strides);
    const Shape<3> half{2 * s.L * s.D, 2 * s.D, 1};
    p.z = layout == Layout::block
              ? TensorView<T, 3>(z.data() + s.D, shape, half, "z", Device::CUDA, z.size() - s.D)
              : z.template view<3>(shape, strides);
    p.dout = dout.template view<3>(shape, strides);
    p.B = B.template view<4>(bc, bc_strides);
    p.C = C.template view<4>(bc, bc_strides);
    p.A = A.view<2>({s.D, s.N});
    p.D_skip = D_skip.view<1>({s.D});
    p.delta_bias = bias.view<1>({s.D});
    p.delta_softplus = true;
    p.du = du.template view<3>(shape, strides);
    p.ddelta = ddelta.template view<3>(shape, strides);
    p.dz = layout == Layout::block
               ? TensorView<T, 3>(dz.data() + s.D, shape, half, "dz", Device::CUDA, dz.size() - s.D)
               : dz.template view<3>(shape, strides);
    p.dB = dB.template view<4>(bc, bc_strides);
    p.dC = dC.template view<4>(bc, bc_strides);
    p.dA = dA.view<2>({s.D, s.N});
    p.dD_skip = dD.view<1>({s.D});
    p.ddelta_bias = dbias.view<1>({s.D});
  }
};

}  // namespace ssmkit::bench
