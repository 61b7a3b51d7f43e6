// Tensors of more than 2^31 elements on the GPU: the selective scan (forward and backward) and the
// causal conv (forward and backward) at shapes whose element offsets pass 2^31, in both memory
// orders, so that an offset formed in 32 bits anywhere reads or writes the wrong elements. The
// inputs are filled on the device from a hash of each element's offset, with values exact in
// every storage type; the host rebuilds single channels from the same hash and checks them
// against the CPU run in double on that channel alone. Each case needs 18-37 GB of GPU memory
// and skips where it is not free. (S4's kernels past 2^31 elements: test_s4.cu.)
#include "cuda_testing.hpp"

#include <ssmkit/kernels/cpu/causal_conv1d.hpp>
#include <ssmkit/kernels/cpu/causal_conv1d_backward.hpp>
#include <ssmkit/kernels/cpu/selective_scan_backward_reference.hpp>
#include <ssmkit/kernels/cpu/selective_scan_reference.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace ssmkit::testing {
namespace {

// L·D = 2,281,701,376 > 2^31: offsets within one sequence pass 2^31 in either memory order.
constexpr Index kL = Index{1} << 20, kD = 2176, kN = 16, kK = 4;
constexpr Index kChannels[] = {0, 1001, kD - 1};

/// lo + step·k for k the top 8 bits of a hash of (offset, seed). With lo a multiple of step, a
/// power of two, and lo/step in [-256, 1], every value is an integer of at most 8 bits times a
/// power of two: exact in float, half and bfloat16, and computed alike on host and device.
struct Fill {
  float lo, step;
  std::uint64_t seed;
  __host__ __device__ float at(std::uint64_t i) const {
    std::uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed * 0xD1B54A32D192ED03ull;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return lo + step * static_cast<float>(x >> 56);
  }
};

template <class T>
__global__ void fill_kernel(T* p, Index n, Fill f) {
  for (Index i = blockIdx.x * Index{blockDim.x} + threadIdx.x; i < n;
       i += Index{gridDim.x} * blockDim.x)
    p[i] = cuda::from_float<T>(f.at(static_cast<std::uint64_t>(i)));
}

/// Elements p[first + i·stride], i < n, as float.
template <class T>
__global__ void gather_kernel(const T* p, Index first, Index stride, Index n, float* out) {
  for (Index i = blockIdx.x * Index{blockDim.x} + threadIdx.x; i < n;
       i += Index{gridDim.x} * blockDim.x)
    out[i] = cuda::to_float(p[first + i * stride]);
}

/// A device tensor of `count` elements filled by `f`.
template <class T>
struct Filled {
  cuda::DeviceBuffer<T> dev;
  Fill f;
  Filled(Index count, Fill fill, cudaStream_t s) : dev(count, "large tensor"), f(fill) {
    fill_kernel<<<4096, 256, 0, s>>>(dev.data(), count, f);
    SSMKIT_CUDA_CHECK(cudaGetLastError());
  }
  double at(Index offset) const { return f.at(static_cast<std::uint64_t>(offset)); }
};

/// (batch, L, C) strides of a tensor in token-major (B, L, C) or channel-major (B, C, L) memory.
Shape<3> activation_strides(Index L, Index C, bool channel_major) {
  return channel_major ? Shape<3>{C * L, 1, L} : Shape<3>{L * C, C, 1};
}

Index offset(const Shape<3>& s, Index b, Index t, Index c) {
  return b * s[0] + t * s[1] + c * s[2];
}

/// One channel (b, c) of a (batch, L, C) device tensor of strides `s`, as double.
template <class T>
std::vector<double> download_channel(const T* p, const Shape<3>& s, Index b, Index c, Index L,
                                     cudaStream_t stream) {
  cuda::DeviceBuffer<float> row(L, "channel");
  gather_kernel<<<1024, 256, 0, stream>>>(p, offset(s, b, 0, c), s[1], L, row.data());
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  std::vector<float> host(static_cast<std::size_t>(L));
  row.copy_to_host_async(host.data(), L, stream);
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(stream));
  return std::vector<double>(host.begin(), host.end());
}

template <class T>
std::vector<double> download(const cuda::DeviceBuffer<T>& buf, cudaStream_t stream) {
  std::vector<T> host(static_cast<std::size_t>(buf.size()));
  buf.copy_to_host_async(host.data(), buf.size(), stream);
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> out(host.size());
  for (std::size_t i = 0; i < host.size(); ++i)
    out[i] = to_double(host[i]);
  return out;
}

/// The scan's small operands: A (D, N), D_skip, δ_bias on the device and in double.
struct ScanWeights {
  std::vector<float> A, skip, bias;
  cuda::DeviceBuffer<float> A_dev, skip_dev, bias_dev;
  explicit ScanWeights(cudaStream_t s)
      : A(std::size_t(kD * kN)),
        skip(static_cast<std::size_t>(kD)),
        bias(static_cast<std::size_t>(kD)),
        A_dev(kD * kN),
        skip_dev(kD),
        bias_dev(kD) {
    const Fill fa{0.0f, 1.0f / 64, 11}, fs{-1.0f, 1.0f / 128, 12}, fb{-1.0f, 1.0f / 256, 13};
    for (Index i = 0; i < kD * kN; ++i)
      A[std::size_t(i)] = -(0.05f + fa.at(std::uint64_t(i)));  // in [-4.03, -0.05]
    for (Index d = 0; d < kD; ++d) {
      skip[std::size_t(d)] = fs.at(std::uint64_t(d));
      bias[std::size_t(d)] = fb.at(std::uint64_t(d));
    }
    A_dev.copy_from_host_async(A.data(), kD * kN, s);
    skip_dev.copy_from_host_async(skip.data(), kD, s);
    bias_dev.copy_from_host_async(bias.data(), kD, s);
  }
};

/// Channel c of batch b as a one-channel problem in double: u, δ, z (and dout) rebuilt from the
/// hash, B and C of that batch (G = 1) from theirs, the weights of channel c.
struct ChannelProblem {
  std::vector<double> u, delta, z, dout, B, C, A, skip, bias;
  template <class T>
  ChannelProblem(const Filled<T>& u_, const Filled<T>& d_, const Filled<T>& z_,
                 const Filled<T>* dout_, const Filled<T>& B_, const Filled<T>& C_,
                 const Shape<3>& s, const ScanWeights& w, Index b, Index c)
      : A(w.A.begin() + c * kN, w.A.begin() + (c + 1) * kN),
        skip{w.skip[std::size_t(c)]},
        bias{w.bias[std::size_t(c)]} {
    for (Index t = 0; t < kL; ++t) {
      const Index o = offset(s, b, t, c);
      u.push_back(u_.at(o));
      delta.push_back(d_.at(o));
      z.push_back(z_.at(o));
      if (dout_ != nullptr)
        dout.push_back(dout_->at(o));
      for (Index n = 0; n < kN; ++n) {
        B.push_back(B_.at((b * kL + t) * kN + n));
        C.push_back(C_.at((b * kL + t) * kN + n));
      }
    }
  }
  TensorView<const double, 3> act(const std::vector<double>& v) const {
    return TensorView<const double, 3>(v.data(), {1, kL, 1});
  }
  template <class P>
  void fill(P& p) const {
    p.u = act(u);
    p.delta = act(delta);
    p.z = act(z);
    p.A = TensorView<const double, 2>(A.data(), {1, kN});
    p.B = TensorView<const double, 4>(B.data(), {1, kL, 1, kN});
    p.C = TensorView<const double, 4>(C.data(), {1, kL, 1, kN});
    p.D_skip = TensorView<const double, 1>(skip.data(), {1});
    p.delta_bias = TensorView<const double, 1>(bias.data(), {1});
    p.delta_softplus = true;
  }
};

template <class T>
cuda::DeviceBuffer<T> device_buffer(Index count) {
  return cuda::DeviceBuffer<T>(count, "large tensor");
}

TEST(CudaLongTensors, ScanPast2To31Elements) {
  using T = __nv_bfloat16;
  constexpr Index batch = 2, n = batch * kL * kD;
  SSMKIT_REQUIRE_GPU_MEMORY(4 * n * sizeof(T));
  TestStream stream;
  const cudaStream_t s = stream.s;
  ScanWeights w(s);
  Filled<T> u(n, {-1.0f, 1.0f / 128, 1}, s), delta(n, {-4.0f, 1.0f / 64, 2}, s),
      z(n, {-3.0f, 1.0f / 32, 3}, s), B(batch * kL * kN, {-1.0f, 1.0f / 128, 4}, s),
      C(batch * kL * kN, {-1.0f, 1.0f / 128, 5}, s);
  cuda::DeviceBuffer<T> out = device_buffer<T>(n);
  cuda::DeviceBuffer<float> h_final(batch * kD * kN);
  for (const bool channel_major : {false, true}) {
    SCOPED_TRACE(channel_major ? "channel-major" : "token-major");
    const Shape<3> st = activation_strides(kL, kD, channel_major);
    SelectiveScanParams<T, float> p;
    p.u = u.dev.view<3>({batch, kL, kD}, st);
    p.delta = delta.dev.view<3>({batch, kL, kD}, st);
    p.z = z.dev.view<3>({batch, kL, kD}, st);
    p.out = out.view<3>({batch, kL, kD}, st);
    p.A = w.A_dev.view<2>({kD, kN});
    p.B = B.dev.view<4>({batch, kL, 1, kN});
    p.C = C.dev.view<4>({batch, kL, 1, kN});
    p.D_skip = w.skip_dev.view<1>({kD});
    p.delta_bias = w.bias_dev.view<1>({kD});
    p.h_final = h_final.view<3>({batch, kD, kN});
    p.delta_softplus = true;
    out.fill_bytes_async(0xFF, s);
    cuda::selective_scan(p, s);
    const std::vector<double> h_got = download(h_final, s);
    for (const Index b : {Index{0}, batch - 1})
      for (const Index c : kChannels) {
        SCOPED_TRACE("batch " + std::to_string(b) + " channel " + std::to_string(c));
        const ChannelProblem cp(u, delta, z, static_cast<const Filled<T>*>(nullptr), B, C, st, w, b,
                                c);
        std::vector<double> ref_out(static_cast<std::size_t>(kL)),
            ref_h(static_cast<std::size_t>(kN));
        SelectiveScanParams<double, double> r;
        cp.fill(r);
        r.out = TensorView<double, 3>(ref_out.data(), {1, kL, 1});
        r.h_final = TensorView<double, 3>(ref_h.data(), {1, 1, kN});
        cpu::selective_scan_reference(r);
        EXPECT_LE(rel_error(download_channel(out.data(), st, b, c, kL, s), ref_out), kBf16Tol);
        const std::vector<double> h(h_got.begin() + (b * kD + c) * kN,
                                    h_got.begin() + (b * kD + c + 1) * kN);
        EXPECT_LE(rel_error(h, ref_h), 1e-5);
      }
  }
}

TEST(CudaLongTensors, ScanBackwardPast2To31Elements) {
  using T = __nv_bfloat16;
  constexpr Index n = kL * kD;
  SSMKIT_REQUIRE_GPU_MEMORY(7 * n * sizeof(T) + (std::size_t{8} << 30));
  TestStream stream;
  const cudaStream_t s = stream.s;
  ScanWeights w(s);
  Filled<T> u(n, {-1.0f, 1.0f / 128, 21}, s), delta(n, {-4.0f, 1.0f / 64, 22}, s),
      z(n, {-3.0f, 1.0f / 32, 23}, s), dout(n, {-1.0f, 1.0f / 128, 24}, s),
      B(kL * kN, {-1.0f, 1.0f / 128, 25}, s), C(kL * kN, {-1.0f, 1.0f / 128, 26}, s);
  cuda::DeviceBuffer<T> du = device_buffer<T>(n), ddelta = device_buffer<T>(n),
                        dz = device_buffer<T>(n), dB = device_buffer<T>(kL * kN),
                        dC = device_buffer<T>(kL * kN);
  cuda::DeviceBuffer<float> dA(kD * kN), dskip(kD), dbias(kD);
  for (const bool channel_major : {false, true}) {
    SCOPED_TRACE(channel_major ? "channel-major" : "token-major");
    const Shape<3> st = activation_strides(kL, kD, channel_major);
    SelectiveScanBackwardParams<T, float> p;
    p.u = u.dev.view<3>({1, kL, kD}, st);
    p.delta = delta.dev.view<3>({1, kL, kD}, st);
    p.z = z.dev.view<3>({1, kL, kD}, st);
    p.dout = dout.dev.view<3>({1, kL, kD}, st);
    p.A = w.A_dev.view<2>({kD, kN});
    p.B = B.dev.view<4>({1, kL, 1, kN});
    p.C = C.dev.view<4>({1, kL, 1, kN});
    p.D_skip = w.skip_dev.view<1>({kD});
    p.delta_bias = w.bias_dev.view<1>({kD});
    p.delta_softplus = true;
    p.du = du.view<3>({1, kL, kD}, st);
    p.ddelta = ddelta.view<3>({1, kL, kD}, st);
    p.dz = dz.view<3>({1, kL, kD}, st);
    p.dB = dB.view<4>({1, kL, 1, kN});
    p.dC = dC.view<4>({1, kL, 1, kN});
    p.dA = dA.view<2>({kD, kN});
    p.dD_skip = dskip.view<1>({kD});
    p.ddelta_bias = dbias.view<1>({kD});
    for (auto* g : {&du, &ddelta, &dz})
      g->fill_bytes_async(0xFF, s);
    cuda::selective_scan_backward(p, s);
    const std::vector<double> dA_got = download(dA, s), dskip_got = download(dskip, s),
                              dbias_got = download(dbias, s);
    for (const Index c : kChannels) {
      SCOPED_TRACE("channel " + std::to_string(c));
      const ChannelProblem cp(u, delta, z, &dout, B, C, st, w, 0, c);
      SelectiveScanBackwardParams<double, double> r;
      cp.fill(r);
      r.dout = cp.act(cp.dout);
      std::vector<double> r_du(static_cast<std::size_t>(kL)), r_dd(static_cast<std::size_t>(kL)),
          r_dz(static_cast<std::size_t>(kL)), r_dB(static_cast<std::size_t>(kL * kN)),
          r_dC(static_cast<std::size_t>(kL * kN)), r_dA(static_cast<std::size_t>(kN)), r_ds(1),
          r_db(1);
      r.du = TensorView<double, 3>(r_du.data(), {1, kL, 1});
      r.ddelta = TensorView<double, 3>(r_dd.data(), {1, kL, 1});
      r.dz = TensorView<double, 3>(r_dz.data(), {1, kL, 1});
      r.dB = TensorView<double, 4>(r_dB.data(), {1, kL, 1, kN});
      r.dC = TensorView<double, 4>(r_dC.data(), {1, kL, 1, kN});
      r.dA = TensorView<double, 2>(r_dA.data(), {1, kN});
      r.dD_skip = TensorView<double, 1>(r_ds.data(), {1});
      r.ddelta_bias = TensorView<double, 1>(r_db.data(), {1});
      cpu::selective_scan_backward_reference(r);
      EXPECT_LE(rel_error(download_channel(du.data(), st, 0, c, kL, s), r_du), kBf16Tol);
      EXPECT_LE(rel_error(download_channel(ddelta.data(), st, 0, c, kL, s), r_dd), kBf16Tol);
      EXPECT_LE(rel_error(download_channel(dz.data(), st, 0, c, kL, s), r_dz), kBf16Tol);
      // dA, dD and dδ_bias of a channel sum over its 2^20 steps in float (H100: at most
      // 7.6e-6). dB and dC sum over all channels, which one channel's problem does not give.
      const std::vector<double> dA_c(dA_got.begin() + c * kN, dA_got.begin() + (c + 1) * kN);
      EXPECT_LE(rel_error(dA_c, r_dA), 5e-5);
      EXPECT_LE(rel_error(std::vector<double>{dskip_got[std::size_t(c)]}, r_ds), 5e-5);
      EXPECT_LE(rel_error(std::vector<double>{dbias_got[std::size_t(c)]}, r_db), 5e-5);
    }
  }
}

/// One channel (b, c) of a conv input rebuilt from the hash, as a one-channel problem.
template <class T>
std::vector<double> conv_channel(const Filled<T>& x, const Shape<3>& s, Index b, Index c) {
  std::vector<double> v(static_cast<std::size_t>(kL));
  for (Index t = 0; t < kL; ++t)
    v[std::size_t(t)] = x.at(offset(s, b, t, c));
  return v;
}

TEST(CudaLongTensors, ConvPast2To31Elements) {
  using T = __nv_bfloat16;
  constexpr Index batch = 2, n = batch * kL * kD;
  SSMKIT_REQUIRE_GPU_MEMORY(2 * n * sizeof(T));
  TestStream stream;
  const cudaStream_t s = stream.s;
  Filled<T> x(n, {-1.0f, 1.0f / 128, 31}, s), weight(kD * kK, {-1.0f, 1.0f / 128, 32}, s),
      bias(kD, {-1.0f, 1.0f / 128, 33}, s);
  cuda::DeviceBuffer<T> out = device_buffer<T>(n);
  for (const bool channel_major : {false, true}) {
    SCOPED_TRACE(channel_major ? "channel-major" : "token-major");
    const Shape<3> st = activation_strides(kL, kD, channel_major);
    CausalConv1dParams<T, T> p;
    p.x = x.dev.view<3>({batch, kL, kD}, st);
    p.weight = weight.dev.view<2>({kD, kK});
    p.bias = bias.dev.view<1>({kD});
    p.out = out.view<3>({batch, kL, kD}, st);
    p.silu = true;
    out.fill_bytes_async(0xFF, s);
    cuda::causal_conv1d(p, s);
    for (const Index b : {Index{0}, batch - 1})
      for (const Index c : kChannels) {
        SCOPED_TRACE("batch " + std::to_string(b) + " channel " + std::to_string(c));
        const std::vector<double> xc = conv_channel(x, st, b, c);
        std::vector<double> wc(static_cast<std::size_t>(kK)), ref(static_cast<std::size_t>(kL));
        for (Index k = 0; k < kK; ++k)
          wc[std::size_t(k)] = weight.at(c * kK + k);
        const double bc = bias.at(c);
        CausalConv1dParams<double, double> r;
        r.x = TensorView<const double, 3>(xc.data(), {1, kL, 1});
        r.weight = TensorView<const double, 2>(wc.data(), {1, kK});
        r.bias = TensorView<const double, 1>(&bc, {1});
        r.out = TensorView<double, 3>(ref.data(), {1, kL, 1});
        r.silu = true;
        cpu::causal_conv1d(r);
        EXPECT_LE(rel_error(download_channel(out.data(), st, b, c, kL, s), ref), kBf16Tol);
      }
  }
}

TEST(CudaLongTensors, ConvBackwardPast2To31Elements) {
  constexpr Index n = kL * kD;
  SSMKIT_REQUIRE_GPU_MEMORY(3 * n * sizeof(float));
  TestStream stream;
  const cudaStream_t s = stream.s;
  Filled<float> x(n, {-1.0f, 1.0f / 128, 41}, s), dout(n, {-1.0f, 1.0f / 128, 42}, s),
      weight(kD * kK, {-1.0f, 1.0f / 128, 43}, s), bias(kD, {-1.0f, 1.0f / 128, 44}, s);
  cuda::DeviceBuffer<float> dx(n, "dx"), dweight(kD * kK), dbias(kD);
  for (const bool channel_major : {false, true}) {
    SCOPED_TRACE(channel_major ? "channel-major" : "token-major");
    const Shape<3> st = activation_strides(kL, kD, channel_major);
    CausalConv1dBackwardParams<float, float> p;
    p.x = x.dev.view<3>({1, kL, kD}, st);
    p.weight = weight.dev.view<2>({kD, kK});
    p.bias = bias.dev.view<1>({kD});
    p.silu = true;
    p.dout = dout.dev.view<3>({1, kL, kD}, st);
    p.dx = dx.view<3>({1, kL, kD}, st);
    p.dweight = dweight.view<2>({kD, kK});
    p.dbias = dbias.view<1>({kD});
    dx.fill_bytes_async(0xFF, s);
    cuda::causal_conv1d_backward(p, s);
    const std::vector<double> dw_got = download(dweight, s), db_got = download(dbias, s);
    for (const Index c : kChannels) {
      SCOPED_TRACE("channel " + std::to_string(c));
      const std::vector<double> xc = conv_channel(x, st, 0, c), gc = conv_channel(dout, st, 0, c);
      std::vector<double> wc(static_cast<std::size_t>(kK)), r_dx(static_cast<std::size_t>(kL)),
          r_dw(static_cast<std::size_t>(kK));
      for (Index k = 0; k < kK; ++k)
        wc[std::size_t(k)] = weight.at(c * kK + k);
      const double bc = bias.at(c);
      double r_db = 0;
      CausalConv1dBackwardParams<double, double> r;
      r.x = TensorView<const double, 3>(xc.data(), {1, kL, 1});
      r.weight = TensorView<const double, 2>(wc.data(), {1, kK});
      r.bias = TensorView<const double, 1>(&bc, {1});
      r.silu = true;
      r.dout = TensorView<const double, 3>(gc.data(), {1, kL, 1});
      r.dx = TensorView<double, 3>(r_dx.data(), {1, kL, 1});
      r.dweight = TensorView<double, 2>(r_dw.data(), {1, kK});
      r.dbias = TensorView<double, 1>(&r_db, {1});
      cpu::causal_conv1d_backward(r);
      EXPECT_LE(rel_error(download_channel(dx.data(), st, 0, c, kL, s), r_dx), 1e-5);
      const std::vector<double> dw(dw_got.begin() + c * kK, dw_got.begin() + (c + 1) * kK);
      EXPECT_LE(rel_error(dw, r_dw), 1e-5);
      EXPECT_LE(rel_error(std::vector<double>{db_got[std::size_t(c)]}, std::vector<double>{r_db}),
                1e-5);
    }
  }
}

}  // namespace
}  // namespace ssmkit::testing
