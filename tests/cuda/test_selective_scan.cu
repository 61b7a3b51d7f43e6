// The CUDA selective scan and decode step against the CPU double oracle
// (cpu::selective_scan_reference) on fresh random inputs, for every option, both memory orders,
// each storage type, several state sizes and chunked long sequences; and their argument checks.
#include "cuda_testing.hpp"

#include <ssmkit/kernels/cpu/selective_scan_reference.hpp>

#include <cmath>
#include <string>

namespace ssmkit::testing {
namespace {

struct ScanCase {
  Index batch = 2, L = 37, D = 48, N = 16, G = 2;
  bool bias = true, softplus = true, skip = true, gate = true, h0 = true, h_final = true;
  bool channel_major = false;
  bool padded_states = false;   // B and C with the state axis slowest: the generic path
  bool bc_state_time = false;   // B and C as mamba_ssm's (batch, group, state, time)
  bool in_place_state = false;  // h_final is h0's memory
  bool step = false;            // selective_state_update instead of selective_scan (L must be 1)
  Index row_pad = 0;            // u, δ, z, out hold L + row_pad steps; the scan sees the first L
  std::uint64_t seed = 1;

  std::string name() const {
    return "batch=" + std::to_string(batch) + " L=" + std::to_string(L) +
           " D=" + std::to_string(D) + " N=" + std::to_string(N) + " G=" + std::to_string(G) +
           (channel_major ? " channel-major" : " token-major") +
           (padded_states ? " strided-states" : "") + (bc_state_time ? " B/C (n,t)" : "") +
           (bias ? " bias" : "") + (softplus ? " softplus" : "") + (skip ? " D" : "") +
           (gate ? " z" : "") + (h0 ? " h0" : "") + (h_final ? " h_final" : "") +
           (in_place_state ? " in-place" : "") + (step ? " step" : "") +
           (row_pad > 0 ? " row_pad=" + std::to_string(row_pad) : "");
  }
};

/// The first `L` steps of a (batch, time, channel) tensor of longer rows: its device view and
/// the view of its exact values.
template <class T>
struct Steps {
  TensorView<T, 3> dev;
  TensorView<double, 3> exact;
};
template <class T>
Steps<T> first_steps(DualTensor<T, 3>& x, Index L) {
  const Shape<3> shape{x.shape[0], L, x.shape[2]};
  return {x.dev.template view<3>(shape, x.strides),
          TensorView<double, 3>(x.exact.data(), shape, contiguous_strides<3>(x.shape))};
}

/// Relative errors of out and h_final (h_final's is 0 when absent). With row_pad, also checks
/// that out's steps past L are left as they were.
template <class T>
std::pair<double, double> run_scan(const ScanCase& c) {
  TestStream stream;
  const cudaStream_t s = stream.s;
  const std::array<int, 3> act_order =
      c.channel_major ? std::array<int, 3>{0, 2, 1} : std::array<int, 3>{0, 1, 2};
  const Index rows = c.L + c.row_pad;
  std::uint64_t seed = c.seed * 1000;
  DualTensor<T, 3> u({c.batch, rows, c.D}, act_order, ++seed, -1, 1, s);
  DualTensor<T, 3> delta({c.batch, rows, c.D}, act_order, ++seed, c.softplus ? -4.0 : 0.001,
                         c.softplus ? 1.0 : 0.5, s);
  DualTensor<T, 3> z({c.batch, rows, c.D}, act_order, ++seed, -3, 3, s);
  DualTensor<T, 3> out({c.batch, rows, c.D}, act_order, ++seed, -1, 1, s);
  // The state axis slowest in memory: a row of N states is not contiguous.
  const std::array<int, 4> bc_order = c.padded_states   ? std::array<int, 4>{3, 0, 1, 2}
                                      : c.bc_state_time ? std::array<int, 4>{0, 2, 3, 1}
                                                        : std::array<int, 4>{0, 1, 2, 3};
  DualTensor<T, 4> B({c.batch, c.L, c.G, c.N}, bc_order, ++seed, -1, 1, s);
  DualTensor<T, 4> C({c.batch, c.L, c.G, c.N}, bc_order, ++seed, -1, 1, s);
  DualTensor<float, 2> A({c.D, c.N}, {0, 1}, ++seed, -1.5, 0.7, s);
  for (std::size_t i = 0; i < A.host.size(); ++i) {  // A = -exp(·): a stable, varied spectrum
    A.host[i] = -std::exp(A.host[i]);
    A.exact[i] = A.host[i];
  }
  A.dev.copy_from_host_async(A.host.data(), A.dev.size(), s);
  DualTensor<float, 1> skip({c.D}, {0}, ++seed, -1, 1, s);
  DualTensor<float, 1> bias({c.D}, {0}, ++seed, -1, 0.5, s);
  DualTensor<float, 3> h0({c.batch, c.D, c.N}, {0, 1, 2}, ++seed, -1, 1, s);
  DualTensor<float, 3> h_final({c.batch, c.D, c.N}, {0, 1, 2}, ++seed, -1, 1, s);

  SelectiveScanParams<double, double> ref;
  const Steps<T> u_v = first_steps(u, c.L), delta_v = first_steps(delta, c.L),
                 z_v = first_steps(z, c.L), out_v = first_steps(out, c.L);
  ref.u = u_v.exact;
  ref.delta = delta_v.exact;
  ref.A = A.exact_view();
  ref.B = B.exact_view();
  ref.C = C.exact_view();
  std::vector<double> ref_out(static_cast<std::size_t>(c.batch * c.L * c.D)),
      ref_h(h_final.exact.size());
  ref.out = TensorView<double, 3>(ref_out.data(), {c.batch, c.L, c.D});
  SelectiveScanParams<T, float> p;
  p.u = u_v.dev;
  p.delta = delta_v.dev;
  p.A = A.device_view();
  p.B = B.device_view();
  p.C = C.device_view();
  p.out = out_v.dev;
  if (c.gate) {
    ref.z = z_v.exact;
    p.z = z_v.dev;
  }
  if (c.skip) {
    ref.D_skip = skip.exact_view();
    p.D_skip = skip.device_view();
  }
  if (c.bias) {
    ref.delta_bias = bias.exact_view();
    p.delta_bias = bias.device_view();
  }
  if (c.h0) {
    ref.h0 = h0.exact_view();
    p.h0 = h0.device_view();
  }
  if (c.h_final) {
    ref.h_final = TensorView<double, 3>(ref_h.data(), {c.batch, c.D, c.N});
    p.h_final = c.in_place_state ? h0.device_view() : h_final.device_view();
  }
  ref.delta_softplus = p.delta_softplus = c.softplus;
  cpu::selective_scan_reference(ref);

  out.poison(s);
  if (!c.in_place_state)
    h_final.poison(s);
  if (c.step)
    cuda::selective_state_update(p, s);
  else
    cuda::selective_scan(p, s);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  const std::vector<double> got_rows = out.download(s);
  std::vector<double> got;
  for (Index i = 0; i < static_cast<Index>(got_rows.size()); ++i) {
    const double v = got_rows[static_cast<std::size_t>(i)];
    if (i / c.D % rows < c.L)
      got.push_back(v);
    else
      EXPECT_TRUE(std::isnan(v)) << "out written past step L, at element " << i;
  }
  double err_h = 0;
  if (c.h_final) {
    const std::vector<double> got_h = c.in_place_state ? h0.download(s) : h_final.download(s);
    err_h = rel_error(got_h, ref_h);
  }
  return {rel_error(got, ref_out), err_h};
}

/// Runs `c` and checks out's error against `tol` (its storage's) and h_final's against 1e-5:
/// the state stays in float whatever T is (2-byte storage: at most 2.2e-7 on an H200; rounding
/// it through T gives 2e-4 and more).
template <class T>
void check_scan(const ScanCase& c, double tol) {
  SCOPED_TRACE(c.name());
  const auto [err_out, err_h] = run_scan<T>(c);
  EXPECT_LE(err_out, tol) << "out";
  EXPECT_LE(err_h, 1e-5) << "h_final";
}

TEST(CudaSelectiveScan, FloatEveryStateSizeBothLayouts) {
  SSMKIT_REQUIRE_GPU();
  for (const bool cm : {false, true})
    for (const Index N : {1, 16, 64, 256}) {
      ScanCase c;
      c.N = N;
      c.channel_major = cm;
      c.seed = static_cast<std::uint64_t>(N) + (cm ? 7 : 0);
      check_scan<float>(c, 1e-5);
    }
}

TEST(CudaSelectiveScan, HalfAndBfloat16Storage) {
  SSMKIT_REQUIRE_GPU();
  for (const bool cm : {false, true})
    for (const Index N : {16, 64}) {
      ScanCase c;
      c.N = N;
      c.channel_major = cm;
      c.L = 41;
      c.seed = 100 + static_cast<std::uint64_t>(N);
      check_scan<__half>(c, kHalfTol);
      check_scan<__nv_bfloat16>(c, kBf16Tol);
    }
}

/// Whole groups per block of channels: B and C go through shared memory. A partial last tile and
/// a partial last block, two groups whose boundary is a block boundary, fewer states than one
/// lane's run. bc_state_time: B and C as (batch, group, state, time), staged by threads along
/// time, and also a length long enough to be cut into chunks.
void check_staged_states(bool bc_state_time, std::uint64_t seed0) {
  for (const bool cm : {false, true})
    for (const Index G : {1, 2}) {
      ScanCase c;
      c.batch = 3;
      c.L = 77;
      c.D = 64 * G + (G == 1 ? 17 : 0);
      c.G = G;
      c.channel_major = cm;
      c.bc_state_time = bc_state_time;
      c.seed = seed0 + static_cast<std::uint64_t>(G) + (cm ? 3 : 0);
      check_scan<float>(c, 1e-5);
      check_scan<__half>(c, kHalfTol);
      check_scan<__nv_bfloat16>(c, kBf16Tol);
      c.N = 3;
      check_scan<float>(c, 1e-5);
      if (bc_state_time) {
        c.N = 16;
        c.batch = 1;
        c.L = 4099;
        check_scan<__nv_bfloat16>(c, kBf16Tol);
      }
    }
}

TEST(CudaSelectiveScan, StagedStatesEveryStorage) {
  SSMKIT_REQUIRE_GPU();
  check_staged_states(false, 40);
}

TEST(CudaSelectiveScan, StagedStatesInStateTimeOrder) {
  SSMKIT_REQUIRE_GPU();
  check_staged_states(true, 80);
}

TEST(CudaSelectiveScan, ChannelMajorRowsAsVectors) {
  SSMKIT_REQUIRE_GPU();
  // Channel-major rows whose length is a multiple of 4 move as vectors of a lane's steps;
  // lengths ending inside a tile (76, 132, 136) mix vectors with the scalar tail, and ones long
  // enough to be cut into chunks (4100, 4104) check the chunk boundaries.
  for (const Index L : {64, 76, 132, 136, 4100, 4104}) {
    ScanCase c;
    c.L = L;
    c.channel_major = true;
    c.seed = 60 + static_cast<std::uint64_t>(L);
    check_scan<float>(c, 1e-5);
    check_scan<__half>(c, kHalfTol);
    check_scan<__nv_bfloat16>(c, kBf16Tol);
    c.gate = false;
    check_scan<float>(c, 1e-5);
  }
}

TEST(CudaSelectiveScan, ChannelMajorRowsEndingInsideAVector) {
  SSMKIT_REQUIRE_GPU();
  // Rows of 76 or 4104 steps (whole vectors, so the vector build runs) of which the scan uses
  // 1-3 steps fewer: a lane's last steps are partly past the end and are loaded one by one into
  // the held vector; out's steps past the end must stay untouched. 4101-4103: also chunked.
  for (const Index L : {73, 74, 75, 4101, 4102, 4103}) {
    ScanCase c;
    c.L = L;
    c.row_pad = (4 - L % 4) % 4;
    c.channel_major = true;
    c.seed = 70 + static_cast<std::uint64_t>(L);
    check_scan<float>(c, 1e-5);
    check_scan<__half>(c, kHalfTol);
    check_scan<__nv_bfloat16>(c, kBf16Tol);
  }
}

TEST(CudaSelectiveScan, WithoutOptionalArguments) {
  SSMKIT_REQUIRE_GPU();
  ScanCase c;
  c.bias = c.softplus = c.skip = c.gate = c.h0 = c.h_final = false;
  c.D = 33;  // a partial block of channels
  c.G = 3;
  c.seed = 5;
  for (const bool cm : {false, true}) {
    c.channel_major = cm;
    check_scan<float>(c, 1e-5);
  }
}

TEST(CudaSelectiveScan, SingleStepOddSizesAndGroups) {
  SSMKIT_REQUIRE_GPU();
  ScanCase c;
  c.L = 1;
  c.N = 5;  // not whole 16-byte vectors: the generic path
  c.seed = 9;
  check_scan<float>(c, 1e-5);
  c.L = 19;
  c.G = c.D;  // a group per channel
  check_scan<float>(c, 1e-5);
  c.N = 16;
  c.G = 4;
  c.padded_states = true;
  check_scan<float>(c, 1e-5);
  check_scan<__nv_bfloat16>(c, kBf16Tol);
}

TEST(CudaSelectiveScan, InPlaceState) {
  SSMKIT_REQUIRE_GPU();
  ScanCase c;
  c.in_place_state = true;
  c.seed = 11;
  check_scan<float>(c, 1e-5);
}

TEST(CudaSelectiveScan, ChunkedSequence) {
  SSMKIT_REQUIRE_GPU();
  // One block of channels: the length is cut into chunks joined through their carried states.
  for (const bool cm : {false, true}) {
    ScanCase c;
    c.batch = 1;
    c.D = 32;
    c.L = 4099;
    c.G = 1;
    c.channel_major = cm;
    c.seed = 13;
    check_scan<float>(c, 1e-5);
    check_scan<__nv_bfloat16>(c, kBf16Tol);
    // h_final in h0's memory: the last chunk writes it while the others start from h0.
    c.in_place_state = true;
    check_scan<float>(c, 1e-5);
  }
}

TEST(CudaSelectiveScanLong, OneLongSequence) {
  SSMKIT_REQUIRE_GPU();
  ScanCase c;
  c.batch = 1;
  c.D = 64;
  c.L = 200000;
  c.G = 1;
  c.seed = 17;
  check_scan<float>(c, 1e-5);
}

TEST(CudaSelectiveStateUpdate, MatchesOneStepOfTheOracle) {
  SSMKIT_REQUIRE_GPU();
  for (const Index N : {5, 16, 64, 256}) {
    ScanCase c;
    c.step = true;
    c.L = 1;
    c.batch = 3;
    c.D = 40;
    c.N = N;
    c.in_place_state = true;
    c.seed = 20 + static_cast<std::uint64_t>(N);
    check_scan<float>(c, 1e-5);
    check_scan<__nv_bfloat16>(c, kBf16Tol);
    c.in_place_state = false;
    c.gate = c.skip = c.bias = false;
    check_scan<float>(c, 1e-5);
  }
}

TEST(CudaSelectiveScan, RejectsBadArguments) {
  SSMKIT_REQUIRE_GPU();
  TestStream stream;
  const cudaStream_t s = stream.s;
  const Index batch = 1, L = 8, D = 32, N = 16;
  DualTensor<float, 3> u({batch, L, D}, {0, 1, 2}, 1, -1, 1, s);
  DualTensor<float, 3> out({batch, L, D}, {0, 1, 2}, 2, -1, 1, s);
  DualTensor<float, 4> B({batch, L, 1, N}, {0, 1, 2, 3}, 3, -1, 1, s);
  DualTensor<float, 2> A({D, N}, {0, 1}, 4, -1, 0, s);
  DualTensor<float, 3> state({batch, D, N}, {0, 1, 2}, 5, -1, 1, s);
  SelectiveScanParams<float, float> p;
  p.u = p.delta = u.device_view();
  p.B = p.C = B.device_view();
  p.A = A.device_view();
  p.out = out.device_view();

  SelectiveScanParams<float, float> host = p;  // u claims to live on the host
  host.u = TensorView<const float, 3>(u.host.data(), {batch, L, D}, "u", Device::CPU);
  SSMKIT_EXPECT_ERROR(cuda::selective_scan(host, s), "u", "device", "cuda", "cpu");

  SelectiveScanParams<float, float> shape = p;
  shape.delta = u.dev.view<3>({batch, L - 1, D});
  SSMKIT_EXPECT_ERROR(cuda::selective_scan(shape, s), "delta", "shape");

  SelectiveScanParams<float, float> far = p;  // a time stride past the kernel's 32-bit steps
  far.out = TensorView<float, 3>::unchecked(out.dev.data(), {batch, L, D},
                                            {L * D, Index{1} << 27, 1}, Device::CUDA);
  SSMKIT_EXPECT_ERROR(cuda::selective_scan(far, s), "out", "time stride", "134217728");

  SelectiveScanParams<float, float> step = p;  // a decoding step needs length 1 and states
  SSMKIT_EXPECT_ERROR(cuda::selective_state_update(step, s), "u", "length");
  step.u = step.delta = u.dev.view<3>({batch, 1, D});
  step.out = out.dev.view<3>({batch, 1, D});
  step.B = step.C = B.dev.view<4>({batch, 1, 1, N});
  SSMKIT_EXPECT_ERROR(cuda::selective_state_update(step, s), "h0", "presence");

  SelectiveScanParams<float, float> chunked = p;  // a chunked scan without its workspace
  cuda::DeviceBuffer<float> long_u(200000 * D);
  chunked.u = chunked.delta = long_u.view<3>({1, 200000, D});
  cuda::DeviceBuffer<float> long_out(200000 * D);
  chunked.out = long_out.view<3>({1, 200000, D});
  cuda::DeviceBuffer<float> long_B(200000 * N);
  chunked.B = chunked.C = long_B.view<4>({1, 200000, 1, N});
  ASSERT_GT(cuda::selective_scan_workspace_size(chunked), 0u);
  SSMKIT_EXPECT_ERROR(cuda::selective_scan(chunked, s, nullptr, 0), "workspace", "bytes");
}

}  // namespace
}  // namespace ssmkit::testing
