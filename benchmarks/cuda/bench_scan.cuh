// Times one selective-scan policy on the target shapes (benchmarks/RESULTS.md, top).
#pragma once

#include "bench_timing.cuh"

#include <ssmkit/cuda.cuh>

#include <string>
#include <vector>

namespace ssmkit::bench {

struct ScanShape {
  Index batch, D, L, N;
  double mamba_fp32_ms, mamba_bf16_ms;  // mamba_ssm's forward: DESIGN.md's, or --mamba-ssm's
};

struct ScanTiming {
  std::string policy, dtype, layout;
  ScanShape shape;
  double ms;
  double bytes;  // bytes the scan must move: u, δ, z read, out written, B and C read
  double exps;   // B·D·L·N
};

/// Fills `n` elements with uniform values in [lo, hi) from a counter hash (on the device).
template <class T>
__global__ void fill_uniform(T* p, Index n, std::uint64_t seed, float lo, float hi) {
  for (Index i = blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<Index>(gridDim.x) * blockDim.x) {
    std::uint64_t x = (static_cast<std::uint64_t>(i) + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    const float r = static_cast<float>(x >> 40) * (1.f / 16777216.f);
    p[i] = cuda::from_float<T>(lo + (hi - lo) * r);
  }
}

template <class T>
void fill(cuda::DeviceBuffer<T>& b, std::uint64_t seed, float lo, float hi) {
  fill_uniform<<<1024, 256>>>(b.data(), b.size(), seed, lo, hi);
  SSMKIT_CUDA_CHECK_LAUNCH("fill_uniform");
}

/// One input set of a shape: activations in token-major or channel-major memory; B and C as
/// (batch, time, group, state) or, with bc_state_time, as mamba_ssm's (batch, group, state, time).
template <class T>
struct ScanInputs {
  cuda::DeviceBuffer<T> u, delta, z, out, B, C;
  cuda::DeviceBuffer<float> A, D_skip, bias;
  SelectiveScanParams<T, float> p;

  ScanInputs(const ScanShape& s, bool channel_major, bool bc_state_time, std::uint64_t seed)
      : u(s.batch * s.L * s.D),
        delta(s.batch * s.L * s.D),
        z(s.batch * s.L * s.D),
        out(s.batch * s.L * s.D),
        B(s.batch * s.L * s.N),
        C(s.batch * s.L * s.N),
        A(s.D * s.N),
        D_skip(s.D),
        bias(s.D) {
    fill(u, seed + 1, -1.f, 1.f);
    fill(delta, seed + 2, -4.f, 1.f);
    fill(z, seed + 3, -3.f, 3.f);
    fill(B, seed + 4, -1.f, 1.f);
    fill(C, seed + 5, -1.f, 1.f);
    fill(A, seed + 6, -4.f, -0.1f);
    fill(D_skip, seed + 7, -1.f, 1.f);
    fill(bias, seed + 8, -1.f, 0.5f);
    const Shape<3> shape{s.batch, s.L, s.D};
    const Shape<3> strides =
        channel_major ? Shape<3>{s.D * s.L, 1, s.L} : Shape<3>{s.L * s.D, s.D, 1};
    p.u = u.template view<3>(shape, strides);
    p.delta = delta.template view<3>(shape, strides);
    p.z = z.template view<3>(shape, strides);
    p.out = out.template view<3>(shape, strides);
    const Shape<4> bc_shape{s.batch, s.L, 1, s.N};
    const Shape<4> bc_strides =
        bc_state_time ? Shape<4>{s.N * s.L, 1, s.N * s.L, s.L} : Shape<4>{s.L * s.N, s.N, s.N, 1};
    p.B = B.template view<4>(bc_shape, bc_strides);
    p.C = C.template view<4>(bc_shape, bc_strides);
    p.A = A.view<2>({s.D, s.N});
    p.D_skip = D_skip.view<1>({s.D});
    p.delta_bias = bias.view<1>({s.D});
    p.delta_softplus = true;
  }
};

/// Times `Policy` on `shape`, rotating between input sets whose total exceeds the L2 cache.
template <class Policy, class T>
ScanTiming time_scan(const char* policy, const char* dtype, const ScanShape& shape,
                     bool channel_major, bool bc_state_time, int runs) {
  std::vector<ScanInputs<T>> sets;
  const double set_bytes = 4.0 * shape.batch * shape.L * shape.D * sizeof(T);
  const int nsets = set_bytes > 400e6 ? 1 : 2;  // one set alone is already 8x the 50 MB L2
  for (int i = 0; i < nsets; ++i)
    sets.emplace_back(shape, channel_major, bc_state_time,
                      1000 * static_cast<std::uint64_t>(i + 1));
  const std::size_t ws_bytes = cuda::selective_scan_workspace_size<Policy>(sets[0].p);
  cuda::DeviceBuffer<char> ws(static_cast<Index>(ws_bytes));
  SSMKIT_CUDA_CHECK(cudaDeviceSynchronize());
  const double ms = median_ms(3, runs, [&](int i) {
    cuda::selective_scan<Policy>(sets[static_cast<std::size_t>(i % nsets)].p, nullptr, ws.data(),
                                 ws_bytes);
  });
  std::string layout = channel_major ? "channel" : "token";
  if (bc_state_time)
    layout += ", B/C (n,t)";
  ScanTiming t{policy, dtype, layout, shape, ms, 0, 0};
  const double bld = static_cast<double>(shape.batch) * shape.L * shape.D;
  t.bytes = 4 * bld * sizeof(T) + 2.0 * shape.batch * shape.L * shape.N * sizeof(T);
  t.exps = bld * shape.N;
  return t;
}

/// The timings of one policy over every shape, dtype (float, bf16) and layout.
template <class Policy>
std::vector<ScanTiming> time_policy(const char* name, const std::vector<ScanShape>& shapes,
                                    int runs, bool bc_state_time = false) {
  std::vector<ScanTiming> out;
  for (const ScanShape& s : shapes)
    for (const bool cm : {false, true}) {
      out.push_back(time_scan<Policy, float>(name, "fp32", s, cm, bc_state_time, runs));
      out.push_back(time_scan<Policy, __nv_bfloat16>(name, "bf16", s, cm, bc_state_time, runs));
    }
  return out;
}

// In bench_policy_default.cu.
std::vector<ScanTiming> time_default_policy(const std::vector<ScanShape>& shapes, int runs);
std::vector<ScanTiming> time_variant_policies(const std::vector<ScanShape>& shapes, int runs);

}  // namespace ssmkit::bench
