// The CUDA causal conv1d (sequence and one-token step) against the CPU version run in double on
// the same stored values, with and without bias, SiLU and states, in both memory orders.
#include "cuda_testing.hpp"

#include <ssmkit/kernels/cpu/causal_conv1d.hpp>

#include <string>

namespace ssmkit::testing {
namespace {

struct ConvCase {
  Index batch = 2, L = 37, C = 70, K = 4;
  bool bias = true, silu = true, init = true, final_state = true, in_place_state = false;
  bool channel_major = false;
  std::uint64_t seed = 1;

  std::string name() const {
    return "batch=" + std::to_string(batch) + " L=" + std::to_string(L) +
           " C=" + std::to_string(C) + " K=" + std::to_string(K) +
           (channel_major ? " channel-major" : "") + (bias ? " bias" : "") + (silu ? " silu" : "") +
           (init ? " init" : "") + (final_state ? " final" : "") +
           (in_place_state ? " in-place" : "");
  }
};

template <class T, class W>
void check_conv(const ConvCase& c, double tol) {
  SCOPED_TRACE(c.name());
  TestStream stream;
  const cudaStream_t s = stream.s;
  const std::array<int, 3> order =
      c.channel_major ? std::array<int, 3>{0, 2, 1} : std::array<int, 3>{0, 1, 2};
  std::uint64_t seed = c.seed * 100;
  DualTensor<T, 3> x({c.batch, c.L, c.C}, order, ++seed, -2, 2, s);
  DualTensor<T, 3> out({c.batch, c.L, c.C}, order, ++seed, -1, 1, s);
  DualTensor<W, 2> w({c.C, c.K}, {0, 1}, ++seed, -1, 1, s);
  DualTensor<W, 1> bias({c.C}, {0}, ++seed, -1, 1, s);
  DualTensor<T, 3> init({c.batch, c.C, c.K - 1}, {0, 1, 2}, ++seed, -2, 2, s);
  DualTensor<T, 3> fin({c.batch, c.C, c.K - 1}, {0, 1, 2}, ++seed, -1, 1, s);

  CausalConv1dParams<double, double> ref;
  std::vector<double> ref_out(out.exact.size()), ref_fin(fin.exact.size());
  ref.x = x.exact_view();
  ref.weight = w.exact_view();
  ref.out = TensorView<double, 3>(ref_out.data(), {c.batch, c.L, c.C});
  CausalConv1dParams<T, W> p;
  p.x = x.device_view();
  p.weight = w.device_view();
  p.out = out.device_view();
  if (c.bias) {
    ref.bias = bias.exact_view();
    p.bias = bias.device_view();
  }
  if (c.init) {
    ref.initial_state = init.exact_view();
    p.initial_state = init.device_view();
  }
  if (c.final_state) {
    ref.final_state = TensorView<double, 3>(ref_fin.data(), {c.batch, c.C, c.K - 1});
    p.final_state = c.in_place_state ? init.device_view() : fin.device_view();
  }
  ref.silu = p.silu = c.silu;
  cpu::causal_conv1d(ref);

  out.poison(s);
  if (!c.in_place_state)
    fin.poison(s);
  cuda::causal_conv1d(p, s);
  EXPECT_LE(rel_error(out.download(s), ref_out), tol);
  if (c.final_state)
    EXPECT_LE(rel_error(c.in_place_state ? init.download(s) : fin.download(s), ref_fin), tol);
}

template <class T, class W>
void check_step(Index batch, Index C, Index K, bool bias_on, bool silu, double tol,
                std::uint64_t seed) {
  SCOPED_TRACE("step batch=" + std::to_string(batch) + " C=" + std::to_string(C) +
               " K=" + std::to_string(K));
  TestStream stream;
  const cudaStream_t s = stream.s;
  DualTensor<T, 2> x({batch, C}, {0, 1}, seed + 1, -2, 2, s);
  DualTensor<T, 2> out({batch, C}, {0, 1}, seed + 2, -1, 1, s);
  DualTensor<W, 2> w({C, K}, {0, 1}, seed + 3, -1, 1, s);
  DualTensor<W, 1> bias({C}, {0}, seed + 4, -1, 1, s);
  DualTensor<T, 3> state({batch, C, K - 1}, {0, 1, 2}, seed + 5, -2, 2, s);

  CausalConv1dStepParams<double, double> ref;
  std::vector<double> ref_out(out.exact.size()), ref_state = state.exact;
  ref.x = x.exact_view();
  ref.weight = w.exact_view();
  ref.state = TensorView<double, 3>(ref_state.data(), {batch, C, K - 1});
  ref.out = TensorView<double, 2>(ref_out.data(), {batch, C});
  CausalConv1dStepParams<T, W> p;
  p.x = x.device_view();
  p.weight = w.device_view();
  p.state = state.device_view();
  p.out = out.device_view();
  if (bias_on) {
    ref.bias = bias.exact_view();
    p.bias = bias.device_view();
  }
  ref.silu = p.silu = silu;
  cpu::causal_conv1d_update(ref);
  out.poison(s);
  cuda::causal_conv1d_update(p, s);
  EXPECT_LE(rel_error(out.download(s), ref_out), tol);
  EXPECT_LE(rel_error(state.download(s), ref_state), tol);
}

TEST(CudaCausalConv1d, SequenceMatchesCpu) {
  SSMKIT_REQUIRE_GPU();
  for (const bool cm : {false, true}) {
    ConvCase c;
    c.channel_major = cm;
    c.seed = cm ? 2 : 1;
    check_conv<float, float>(c, 1e-6);
    check_conv<__nv_bfloat16, float>(c, kBf16Tol);
    check_conv<__half, __half>(c, kHalfTol);
  }
  ConvCase bare;
  bare.bias = bare.silu = bare.init = bare.final_state = false;
  bare.seed = 3;
  check_conv<float, float>(bare, 1e-6);
}

TEST(CudaCausalConv1d, ShortSequencesAndInPlaceState) {
  SSMKIT_REQUIRE_GPU();
  ConvCase c;
  c.L = 2;  // shorter than the state: the final state keeps part of the initial one
  c.in_place_state = true;
  c.seed = 4;
  check_conv<float, float>(c, 1e-6);
  c.L = 1;
  c.K = 1;  // no state at all
  c.init = c.final_state = c.in_place_state = false;
  check_conv<float, float>(c, 1e-6);
}

TEST(CudaCausalConv1d, StepMatchesCpu) {
  SSMKIT_REQUIRE_GPU();
  check_step<float, float>(3, 70, 4, true, true, 1e-6, 10);
  check_step<float, float>(1, 33, 2, false, false, 1e-6, 20);
  check_step<__nv_bfloat16, float>(4, 64, 4, true, true, 1e-2, 30);
}

TEST(CudaCausalConv1d, RejectsBadArguments) {
  SSMKIT_REQUIRE_GPU();
  TestStream stream;
  DualTensor<float, 3> x({1, 8, 16}, {0, 1, 2}, 1, -1, 1, stream.s);
  DualTensor<float, 2> w({16, 4}, {0, 1}, 2, -1, 1, stream.s);
  CausalConv1dParams<float, float> p;
  p.x = x.device_view();
  p.weight = w.device_view();
  p.out = TensorView<float, 3>(x.host.data(), {1, 8, 16}, "out", Device::CPU);
  SSMKIT_EXPECT_ERROR(cuda::causal_conv1d(p, stream.s), "out", "device");
  p.out = x.dev.view<3>({1, 8, 15});
  SSMKIT_EXPECT_ERROR(cuda::causal_conv1d(p, stream.s), "out", "shape");
}

}  // namespace
}  // namespace ssmkit::testing
