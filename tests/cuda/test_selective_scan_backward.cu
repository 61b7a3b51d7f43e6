// The CUDA selective scan backward against the CPU double oracle
// (cpu::selective_scan_backward_reference) on fresh random inputs: every option, both memory
// orders, each storage type, odd state sizes and groups, several chunks and sub-chunks with
// partial ones, every gradient poisoned before the kernel runs; the same from the CUDA forward's
// checkpoints (themselves checked against cpu::selective_scan_reference's); its argument checks.
#include "cuda_testing.hpp"

#include <ssmkit/kernels/cpu/selective_scan_backward_reference.hpp>
#include <ssmkit/kernels/cpu/selective_scan_reference.hpp>
#include <ssmkit/kernels/cuda/selective_scan.cuh>
#include <ssmkit/kernels/cuda/selective_scan_backward.cuh>

#include <cmath>
#include <string>
#include <vector>

namespace ssmkit::testing {
namespace {

struct BackwardCase {
  Index batch = 2, L = 300, D = 48, N = 16, G = 2;
  bool bias = true, softplus = true, skip = true, gate = true, h0 = true, dh_final = true;
  bool channel_major = false;  // activations (batch, D, L) and B, C (batch, G, N, L) in memory
  bool checkpoints = false;    // the backward starts from the CUDA forward's checkpoints
  bool fine = false;           // ... taken every kSelectiveScanFineCheckpointInterval steps
  Index bc_pad = 0;            // B and C hold L + bc_pad steps, of which the scan sees the first L
  Index act_pad = 0;           // so do u, δ, z, dout and the gradients du, dδ, dz
  std::uint64_t seed = 1;

  std::string name() const {
    return "batch=" + std::to_string(batch) + " L=" + std::to_string(L) +
           " D=" + std::to_string(D) + " N=" + std::to_string(N) + " G=" + std::to_string(G) +
           (channel_major ? " channel-major" : " token-major") + (bias ? " bias" : "") +
           (softplus ? " softplus" : "") + (skip ? " D" : "") + (gate ? " z" : "") +
           (h0 ? " h0" : "") + (dh_final ? " dh_final" : "") +
           (checkpoints ? (fine ? " fine checkpoints" : " checkpoints") : "") +
           (bc_pad > 0 ? " bc_pad=" + std::to_string(bc_pad) : "") +
           (act_pad > 0 ? " act_pad=" + std::to_string(act_pad) : "");
  }
};

/// The relative error allowed the gradients kept in float (dA, dD_skip, dδ_bias, dh0) whatever T
/// is: float sums of float terms, as in the float cases. With 2-byte storage an H200 measured at
/// most 3.4e-7 (the CPU twin 1.2-2.7e-7); rounding them through T gives 1.2e-4 and more.
constexpr double kFloatTol = 1e-5;

/// Runs `c` on the GPU and the oracle and checks the relative error of every gradient stored in
/// T (du, dδ, dz, dB, dC) against `tol`, and of those kept in float against kFloatTol.
template <class T, class Policy = cuda::SelectiveScanBackwardPolicy>
void check_backward(const BackwardCase& c, double tol) {
  SCOPED_TRACE(c.name());
  TestStream stream;
  const cudaStream_t s = stream.s;
  const std::array<int, 3> act =
      c.channel_major ? std::array<int, 3>{0, 2, 1} : std::array<int, 3>{0, 1, 2};
  const std::array<int, 4> proj =
      c.channel_major ? std::array<int, 4>{0, 2, 3, 1} : std::array<int, 4>{0, 1, 2, 3};
  const Shape<3> acts{c.batch, c.L, c.D}, states{c.batch, c.D, c.N};
  const Shape<4> projs{c.batch, c.L, c.G, c.N};
  // The activations' rows hold L + act_pad steps; views and oracle inputs see the first L.
  const Shape<3> act_rows{c.batch, c.L + c.act_pad, c.D};
  std::uint64_t seed = c.seed * 1000;
  // Without softplus δ is the step itself: positive, as a trained model's is.
  DualTensor<T, 3> u(act_rows, act, ++seed, -1, 1, s);
  DualTensor<T, 3> delta(act_rows, act, ++seed, c.softplus ? -3.0 : 0.05, c.softplus ? 3.0 : 0.6,
                         s);
  DualTensor<T, 3> z(act_rows, act, ++seed, -3, 3, s);
  DualTensor<T, 3> dout(act_rows, act, ++seed, -1, 1, s);
  const auto dev_steps = [&](DualTensor<T, 3>& x) {
    return x.dev.template view<3>(acts, x.strides);
  };
  const auto exact_steps = [&](DualTensor<T, 3>& x) {
    return TensorView<double, 3>(x.exact.data(), acts, contiguous_strides<3>(act_rows));
  };
  // A downloaded gradient's first L steps; every later step must still hold the poison (NaN).
  const auto first_steps_of = [&](const std::vector<double>& full, const char* name) {
    std::vector<double> first;
    bool untouched = true;
    for (Index b = 0; b < c.batch; ++b)
      for (Index t = 0; t < c.L + c.act_pad; ++t)
        for (Index d = 0; d < c.D; ++d) {
          const double v = full[static_cast<std::size_t>((b * (c.L + c.act_pad) + t) * c.D + d)];
          if (t < c.L)
            first.push_back(v);
          else
            untouched = untouched && std::isnan(v);
        }
    EXPECT_TRUE(untouched) << name << " written past step L";
    return first;
  };
  const Shape<4> bc_rows{c.batch, c.L + c.bc_pad, c.G, c.N};
  DualTensor<T, 4> B(bc_rows, proj, ++seed, -1, 1, s);
  DualTensor<T, 4> C(bc_rows, proj, ++seed, -1, 1, s);
  // The first L steps of B's and C's rows.
  const auto first_steps = [&](DualTensor<T, 4>& x) {
    return std::make_pair(
        x.dev.template view<4>(projs, x.strides),
        TensorView<double, 4>(x.exact.data(), projs, contiguous_strides<4>(bc_rows)));
  };
  const auto B_v = first_steps(B), C_v = first_steps(C);
  DualTensor<float, 2> A({c.D, c.N}, {0, 1}, ++seed, -2.0, -0.1, s);
  DualTensor<float, 1> skip({c.D}, {0}, ++seed, -1, 1, s);
  DualTensor<float, 1> bias({c.D}, {0}, ++seed, c.softplus ? -1.0 : 0.0, c.softplus ? 1.0 : 0.2, s);
  DualTensor<float, 3> h0(states, {0, 1, 2}, ++seed, -1, 1, s);
  DualTensor<float, 3> dh_final(states, {0, 1, 2}, ++seed, -1, 1, s);
  if (c.softplus) {  // some raw steps above softplus's threshold of 20, where it is the identity
    for (std::size_t i = 0; i < delta.host.size(); i += 5) {
      delta.host[i] = from_double<T>(22.0 + to_double(delta.host[i]));
    }
    // exact is in logical order, host in memory order: refresh exact from a host round trip.
    delta.dev.copy_from_host_async(delta.host.data(), delta.dev.size(), s);
    delta.exact = delta.download(s);
  }
  DualTensor<T, 3> du(act_rows, act, ++seed, -1, 1, s), ddelta(act_rows, act, ++seed, -1, 1, s);
  DualTensor<T, 3> dz(act_rows, act, ++seed, -1, 1, s);
  DualTensor<T, 4> dB(projs, proj, ++seed, -1, 1, s), dC(projs, proj, ++seed, -1, 1, s);
  DualTensor<float, 2> dA({c.D, c.N}, {0, 1}, ++seed, -1, 1, s);
  DualTensor<float, 1> dD({c.D}, {0}, ++seed, -1, 1, s), dbias({c.D}, {0}, ++seed, -1, 1, s);
  DualTensor<float, 3> dh0(states, {0, 1, 2}, ++seed, -1, 1, s);

  SelectiveScanBackwardParams<double, double> ref;
  SelectiveScanBackwardParams<T, float> p;
  ref.u = exact_steps(u), p.u = dev_steps(u);
  ref.delta = exact_steps(delta), p.delta = dev_steps(delta);
  ref.dout = exact_steps(dout), p.dout = dev_steps(dout);
  ref.A = A.exact_view(), p.A = A.device_view();
  ref.B = B_v.second, p.B = B_v.first;
  ref.C = C_v.second, p.C = C_v.first;
  ref.delta_softplus = p.delta_softplus = c.softplus;
  // The oracle's gradients, logical row-major.
  auto buffer = [](Index n) { return std::vector<double>(static_cast<std::size_t>(n)); };
  std::vector<double> r_du = buffer(c.batch * c.L * c.D), r_ddelta = buffer(c.batch * c.L * c.D);
  std::vector<double> r_dz = buffer(c.batch * c.L * c.D), r_dB = buffer(c.batch * c.L * c.G * c.N);
  std::vector<double> r_dC = buffer(c.batch * c.L * c.G * c.N), r_dA = buffer(c.D * c.N);
  std::vector<double> r_dD = buffer(c.D), r_dbias = buffer(c.D);
  std::vector<double> r_dh0 = buffer(c.batch * c.D * c.N);
  ref.du = TensorView<double, 3>(r_du.data(), acts);
  ref.ddelta = TensorView<double, 3>(r_ddelta.data(), acts);
  ref.dB = TensorView<double, 4>(r_dB.data(), projs);
  ref.dC = TensorView<double, 4>(r_dC.data(), projs);
  ref.dA = TensorView<double, 2>(r_dA.data(), {c.D, c.N});
  p.du = dev_steps(du), p.ddelta = dev_steps(ddelta);
  p.dB = dB.device_view(), p.dC = dC.device_view(), p.dA = dA.device_view();
  if (c.gate) {
    ref.z = exact_steps(z), p.z = dev_steps(z);
    ref.dz = TensorView<double, 3>(r_dz.data(), acts), p.dz = dev_steps(dz);
  }
  if (c.skip) {
    ref.D_skip = skip.exact_view(), p.D_skip = skip.device_view();
    ref.dD_skip = TensorView<double, 1>(r_dD.data(), {c.D}), p.dD_skip = dD.device_view();
  }
  if (c.bias) {
    ref.delta_bias = bias.exact_view(), p.delta_bias = bias.device_view();
    ref.ddelta_bias = TensorView<double, 1>(r_dbias.data(), {c.D});
    p.ddelta_bias = dbias.device_view();
  }
  if (c.h0) {
    ref.h0 = h0.exact_view(), p.h0 = h0.device_view();
    ref.dh0 = TensorView<double, 3>(r_dh0.data(), states), p.dh0 = dh0.device_view();
  }
  if (c.dh_final)
    ref.dh_final = dh_final.exact_view(), p.dh_final = dh_final.device_view();
  cpu::selective_scan_backward_reference(ref);

  // The CUDA forward's checkpoints against the oracle's, then the backward starts from them.
  const Index every =
      c.fine ? kSelectiveScanFineCheckpointInterval : selective_scan_checkpoint_interval(c.N);
  const Index count = (c.L + every - 1) / every;
  DualTensor<float, 4> ck({count, c.batch, c.D, c.N}, {0, 1, 2, 3}, c.seed * 1000 + 500, -1, 1, s);
  DualTensor<T, 3> out(act_rows, act, c.seed * 1000 + 501, -1, 1, s);
  if (c.checkpoints) {
    std::vector<double> r_out = buffer(c.batch * c.L * c.D),
                        r_ck = buffer(count * c.batch * c.D * c.N);
    SelectiveScanParams<double, double> rf = ref.forward(TensorView<double, 3>(r_out.data(), acts));
    rf.checkpoints = TensorView<double, 4>(r_ck.data(), {count, c.batch, c.D, c.N});
    rf.checkpoint_interval = every;
    cpu::selective_scan_reference(rf);
    ck.poison(s);
    SelectiveScanParams<T, float> f = p.forward(dev_steps(out));
    f.checkpoints = ck.device_view();
    f.checkpoint_interval = every;
    cuda::selective_scan(f, s);
    EXPECT_LE(rel_error(ck.download(s), r_ck), 1e-5) << "checkpoints";
    p.checkpoints = ck.device_view();
    p.checkpoint_interval = every;
  }

  for (auto* t : {&du, &ddelta, &dz})
    t->poison(s);
  dB.poison(s), dC.poison(s), dA.poison(s), dD.poison(s), dbias.poison(s), dh0.poison(s);
  cuda::selective_scan_backward<Policy>(p, s);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  EXPECT_LE(rel_error(first_steps_of(du.download(s), "du"), r_du), tol) << "du";
  EXPECT_LE(rel_error(first_steps_of(ddelta.download(s), "ddelta"), r_ddelta), tol) << "ddelta";
  EXPECT_LE(rel_error(dB.download(s), r_dB), tol) << "dB";
  EXPECT_LE(rel_error(dC.download(s), r_dC), tol) << "dC";
  EXPECT_LE(rel_error(dA.download(s), r_dA), kFloatTol) << "dA";
  if (c.gate)
    EXPECT_LE(rel_error(first_steps_of(dz.download(s), "dz"), r_dz), tol) << "dz";
  if (c.skip)
    EXPECT_LE(rel_error(dD.download(s), r_dD), kFloatTol) << "dD_skip";
  if (c.bias)
    EXPECT_LE(rel_error(dbias.download(s), r_dbias), kFloatTol) << "ddelta_bias";
  if (c.h0)
    EXPECT_LE(rel_error(dh0.download(s), r_dh0), kFloatTol) << "dh0";
}

/// A small case with each set bit of `mask` turning one option off (softplus, δ_bias, D, z, h0,
/// dh_final), the layout alternating with the mask.
BackwardCase option_subset(int mask, std::uint64_t seed) {
  BackwardCase c;
  c.softplus = !(mask & 1), c.bias = !(mask & 2), c.skip = !(mask & 4);
  c.gate = !(mask & 8), c.h0 = !(mask & 16), c.dh_final = !(mask & 32);
  c.channel_major = mask % 2 == 0;
  c.batch = 1, c.L = 133, c.D = 24;
  c.seed = seed;
  return c;
}

/// Every option in both layouts (seeds `seed`, then `seed` + 1 for channel-major), then the
/// option subsets of the masks first_mask, first_mask + mask_step, … below 64 (seeds
/// subset_seed + mask).
std::vector<BackwardCase> layouts_and_subsets(std::uint64_t seed, int first_mask, int mask_step,
                                              std::uint64_t subset_seed) {
  std::vector<BackwardCase> cases;
  for (const bool cm : {false, true}) {
    BackwardCase c;
    c.channel_major = cm;
    c.seed = cm ? seed + 1 : seed;
    cases.push_back(c);
  }
  for (int mask = first_mask; mask < 64; mask += mask_step)
    cases.push_back(option_subset(mask, subset_seed + static_cast<std::uint64_t>(mask)));
  return cases;
}

TEST(CudaSelectiveScanBackward, FloatEveryOptionBothLayouts) {
  SSMKIT_REQUIRE_GPU();
  // L = 300: five chunks of 64, the last partial, its last sub-chunk partial too.
  for (const bool cm : {false, true}) {
    BackwardCase c;
    c.channel_major = cm;
    c.seed = cm ? 2 : 1;
    check_backward<float>(c, 1e-5);
  }
}

TEST(CudaSelectiveScanBackward, FloatOptionSubsets) {
  SSMKIT_REQUIRE_GPU();
  for (int mask = 1; mask < 64; mask += 3)
    check_backward<float>(option_subset(mask, 10 + static_cast<std::uint64_t>(mask)), 1e-5);
}

TEST(CudaSelectiveScanBackward, OddStateSizesAndGroups) {
  SSMKIT_REQUIRE_GPU();
  // N = 5 and 3 (one lane, padded states), 64 and 128 (16 and 32 lanes, shorter chunks); a
  // group per channel; three groups of a partial round of channels.
  const Index sizes[] = {5, 3, 64, 128};
  for (int i = 0; i < 4; ++i) {
    BackwardCase c;
    c.N = sizes[i];
    c.channel_major = i % 2 == 1;
    c.L = 70;
    c.D = 20;
    c.G = i == 1 ? 20 : 1;
    c.seed = 80 + static_cast<std::uint64_t>(i);
    check_backward<float>(c, 1e-5);
  }
  BackwardCase c;
  c.D = 33, c.G = 3, c.L = 9, c.seed = 90;
  check_backward<float>(c, 1e-5);
}

TEST(CudaSelectiveScanBackward, HalfAndBfloat16Storage) {
  SSMKIT_REQUIRE_GPU();
  for (const bool cm : {false, true}) {
    BackwardCase c;
    c.channel_major = cm;
    c.L = 150;
    c.seed = cm ? 31 : 30;
    check_backward<__half>(c, kHalfTol);
    check_backward<__nv_bfloat16>(c, kBf16Tol);
  }
}

TEST(CudaSelectiveScanBackward, ManyChannelsPerSliceAndManyChunks) {
  SSMKIT_REQUIRE_GPU();
  // 600 channels: slices of 256 channels in rounds of 32, the last slice partial; 18 chunks.
  BackwardCase c;
  c.batch = 1, c.D = 600, c.G = 1, c.L = 1100, c.seed = 50;
  check_backward<float>(c, 1e-5);
}

TEST(CudaSelectiveScanBackward, ShortSequences) {
  SSMKIT_REQUIRE_GPU();
  BackwardCase c;
  c.seed = 60;
  for (const Index L : {1, 8, 9}) {
    c.L = L;
    check_backward<float>(c, 1e-5);
  }
}

TEST(CudaSelectiveScanBackward, EmptySequence) {
  SSMKIT_REQUIRE_GPU();
  BackwardCase c;  // dA, dD, dδ_bias are zero; dh0 is dh_final
  c.L = 0;
  c.seed = 65;
  check_backward<float>(c, 1e-5);
}

TEST(CudaSelectiveScanBackwardLong, LongSequence) {
  SSMKIT_REQUIRE_GPU();
  BackwardCase c;
  c.batch = 1, c.D = 64, c.G = 1, c.L = 20000, c.seed = 70;
  check_backward<float>(c, 1e-5);
  c.checkpoints = true, c.seed = 71;  // 313 chunks
  check_backward<float>(c, 1e-5);
  c.fine = true, c.seed = 72;
  check_backward<float>(c, 1e-5);
}

TEST(CudaSelectiveScanBackward, FromForwardCheckpoints) {
  SSMKIT_REQUIRE_GPU();
  // Every option and both layouts (L = 300: a partial last chunk and sub-chunk), option subsets,
  // N = 3, 20 and 64 (checkpoints every 64, 32 and 16 steps), 2-byte storage, 18 chunks of 600
  // channels, short and empty sequences; all again from checkpoints every 8 steps (fine); N = 10,
  // and 2-byte storage in both layouts, channel-major rows of whole vectors among them.
  std::vector<BackwardCase> cases = layouts_and_subsets(101, 1, 5, 110);
  const Index sizes[] = {3, 20, 64};
  for (int i = 0; i < 3; ++i) {
    BackwardCase c;
    c.N = sizes[i], c.channel_major = i % 2 == 1, c.L = 70, c.D = 20, c.G = i == 0 ? 20 : 1;
    c.seed = 180 + static_cast<std::uint64_t>(i);
    cases.push_back(c);
  }
  {
    BackwardCase c;
    c.batch = 1, c.D = 600, c.G = 1, c.L = 1100, c.seed = 150;
    cases.push_back(c);
  }
  for (const Index L : {0, 1, 8, 9, 64, 65}) {
    BackwardCase c;
    c.L = L, c.seed = 160 + static_cast<std::uint64_t>(L);
    cases.push_back(c);
  }
  for (const bool fine : {false, true})
    for (BackwardCase c : cases) {
      c.checkpoints = true, c.fine = fine;
      check_backward<float>(c, 1e-5);
    }
  // N = 10 token-major: pass 1 with one lane per channel, states past N zero (N = 16 above).
  for (const bool fine : {false, true}) {
    BackwardCase c;
    c.N = 10, c.L = 150, c.D = 40, c.checkpoints = true, c.fine = fine;
    c.seed = 175 + static_cast<std::uint64_t>(fine);
    check_backward<float>(c, 1e-5);
  }
  // bf16 channel-major rows of whole 16-byte vectors: pass 1 reads a lane's 8 steps as one; at
  // L = 148 the last chunk ends inside a vector (rows padded to 152).
  for (const Index L : {152, 148}) {
    BackwardCase c;
    c.L = L, c.act_pad = (8 - L % 8) % 8, c.channel_major = true, c.checkpoints = true;
    c.fine = L == 152, c.seed = 30 + static_cast<std::uint64_t>(L);
    check_backward<__nv_bfloat16>(c, kBf16Tol);
  }
  BackwardCase c;
  c.checkpoints = true, c.L = 150, c.seed = 170;
  check_backward<__half>(c, kHalfTol);
  check_backward<__nv_bfloat16>(c, kBf16Tol);
  c.channel_major = true, c.fine = true;
  check_backward<__nv_bfloat16>(c, kBf16Tol);
}

TEST(CudaSelectiveScanBackward, BAndCRowsEndingInsideAVector) {
  SSMKIT_REQUIRE_GPU();
  // Channel-major B and C, (batch, G, N, time), with rows of whole 16-byte vectors (so that they
  // are staged a vector per load) of which the scan uses fewer steps: the last chunk ends inside
  // a vector, whose steps are loaded one by one. L = 136: whole vectors for 2-byte types too.
  for (const Index L : {70, 75, 131, 136}) {
    BackwardCase c;
    c.L = L, c.bc_pad = (8 - L % 8) % 8, c.channel_major = true, c.D = 20;
    c.seed = 190 + static_cast<std::uint64_t>(L);
    check_backward<float>(c, 1e-5);
    c.checkpoints = true, c.fine = true;
    check_backward<float>(c, 1e-5);
    check_backward<__half>(c, kHalfTol);
    c.fine = false;
    check_backward<__nv_bfloat16>(c, kBf16Tol);
  }
  // Other state sizes: N = 3 (columns past N staged as zeros, chunks of 64 steps) and N = 40
  // (chunks of 16 steps: two vectors of floats, one of 2-byte types), one group and several.
  for (const Index N : {3, 40}) {
    BackwardCase c;
    c.N = N, c.L = 75, c.bc_pad = 5, c.channel_major = true, c.D = 24, c.G = N == 3 ? 3 : 1;
    c.seed = 195 + static_cast<std::uint64_t>(N);
    check_backward<float>(c, 1e-5);
    c.checkpoints = true;
    check_backward<float>(c, 1e-5);
    check_backward<__nv_bfloat16>(c, kBf16Tol);
  }
}

/// The default policy with the serial walk taken at every size it applies to (fine checkpoints,
/// N = 9..16, one layout for all activations), not only where batch·D fills the GPU.
struct SerialPolicy : cuda::SelectiveScanBackwardPolicy {
  static constexpr int kSerialBlocksPerSM = 0;
};

TEST(CudaSelectiveScanBackward, SerialWalkFromFineCheckpoints) {
  SSMKIT_REQUIRE_GPU();
  // Every option in both layouts, option subsets, groups narrower than a round of channels,
  // several rounds, whole, partial and single chunks, N = 10 and 13, and N = 3 (which takes the
  // chunked path).
  std::vector<BackwardCase> cases = layouts_and_subsets(401, 2, 7, 410);
  for (const Index L : {1, 8, 9, 64, 65, 600}) {
    BackwardCase c;
    c.L = L, c.G = L % 2 == 0 ? 8 : 1, c.D = 80, c.seed = 460 + static_cast<std::uint64_t>(L);
    cases.push_back(c);
  }
  {
    BackwardCase c;
    c.N = 3, c.L = 70, c.seed = 480;
    cases.push_back(c);
  }
  for (const Index N : {10, 13}) {  // dB, dC sums of N % 4 != 0 sent one element at a time
    BackwardCase c;
    c.N = N, c.L = 70, c.channel_major = N == 13, c.seed = 480 + static_cast<std::uint64_t>(N);
    cases.push_back(c);
  }
  for (BackwardCase c : cases) {
    c.checkpoints = true, c.fine = true;
    check_backward<float, SerialPolicy>(c, 1e-5);
  }
  BackwardCase c;
  c.checkpoints = true, c.fine = true, c.L = 150, c.seed = 490;
  check_backward<__half, SerialPolicy>(c, kHalfTol);
  c.channel_major = true;
  check_backward<__nv_bfloat16, SerialPolicy>(c, kBf16Tol);
}

TEST(CudaSelectiveScanBackward, ChannelMajorRowsOfOddLength) {
  SSMKIT_REQUIRE_GPU();
  // Activation rows of an even number of steps (so that a lane's two steps move as one vector)
  // of which the scan uses one fewer: the last sub-chunk has an odd number of steps, whose last
  // pair is loaded and stored one step at a time; the steps past L must stay untouched. Also
  // rows of L + 2 steps with L even (whole pairs, padded rows).
  for (const Index L : {69, 75, 131, 70}) {
    BackwardCase c;
    c.L = L, c.act_pad = L % 2 == 1 ? 1 : 2, c.channel_major = true, c.D = 20;
    c.checkpoints = true, c.fine = true;
    c.seed = 200 + static_cast<std::uint64_t>(L);
    check_backward<float>(c, 1e-5);
    check_backward<float, SerialPolicy>(c, 1e-5);
    check_backward<__nv_bfloat16>(c, kBf16Tol);
    check_backward<__half, SerialPolicy>(c, kHalfTol);
  }
}

TEST(CudaSelectiveScanBackward, RejectsBadArguments) {
  SSMKIT_REQUIRE_GPU();
  TestStream stream;
  const cudaStream_t s = stream.s;
  const Index batch = 1, L = 8, D = 32, N = 16;
  DualTensor<float, 3> act({batch, L, D}, {0, 1, 2}, 1, -1, 1, s);
  DualTensor<float, 3> grad({batch, L, D}, {0, 1, 2}, 2, -1, 1, s);
  DualTensor<float, 3> grad2({batch, L, D}, {0, 1, 2}, 8, -1, 1, s);
  DualTensor<float, 4> proj({batch, L, 1, N}, {0, 1, 2, 3}, 3, -1, 1, s);
  DualTensor<float, 4> dproj({batch, L, 1, N}, {0, 1, 2, 3}, 4, -1, 1, s);
  DualTensor<float, 2> A({D, N}, {0, 1}, 5, -1, 0, s);
  DualTensor<float, 2> dA({D, N}, {0, 1}, 9, -1, 0, s);
  SelectiveScanBackwardParams<float, float> p;  // inputs may share memory, gradients may not
  p.u = p.delta = p.dout = act.device_view();
  p.B = p.C = proj.device_view();
  p.A = A.device_view();
  p.du = grad.device_view();
  p.ddelta = grad2.device_view();
  p.dB = p.dC = dproj.device_view();  // the one exception: dB and dC may interleave
  p.dA = dA.device_view();

  SelectiveScanBackwardParams<float, float> host = p;  // dout claims to live on the host
  host.dout = TensorView<const float, 3>(act.host.data(), {batch, L, D}, "dout", Device::CPU);
  SSMKIT_EXPECT_ERROR(cuda::selective_scan_backward(host, s), "dout", "device", "cuda", "cpu");

  SelectiveScanBackwardParams<float, float> shape = p;
  shape.dB = dproj.dev.view<4>({batch, L - 1, 1, N});
  SSMKIT_EXPECT_ERROR(cuda::selective_scan_backward(shape, s), "dB", "shape");

  SelectiveScanBackwardParams<float, float> presence = p;  // dz without z
  DualTensor<float, 3> dz({batch, L, D}, {0, 1, 2}, 10, -1, 1, s);
  presence.dz = dz.device_view();
  SSMKIT_EXPECT_ERROR(cuda::selective_scan_backward(presence, s), "dz", "presence");

  SelectiveScanBackwardParams<float, float> far = p;  // a time stride past 32-bit byte steps
  far.ddelta = TensorView<float, 3>::unchecked(grad.dev.data(), {batch, L, D},
                                               {L * D, Index{1} << 30, 1}, Device::CUDA);
  SSMKIT_EXPECT_ERROR(cuda::selective_scan_backward(far, s), "ddelta", "time stride", "1073741824");

  DualTensor<float, 2> A_big({D, 256}, {0, 1}, 6, -1, 0, s);
  DualTensor<float, 4> proj_big({batch, L, 1, 256}, {0, 1, 2, 3}, 7, -1, 1, s);
  SelectiveScanBackwardParams<float, float> big = p;  // N = 256: beyond the CUDA backward
  big.A = big.dA = A_big.device_view();
  big.B = big.C = big.dB = big.dC = proj_big.device_view();
  SSMKIT_EXPECT_ERROR(cuda::selective_scan_backward(big, s), "A", "state size");

  ASSERT_GT(cuda::selective_scan_backward_workspace_size(p), 0u);
  SSMKIT_EXPECT_ERROR(cuda::selective_scan_backward(p, s, nullptr, 0), "workspace", "bytes");
  const std::size_t ws_bytes = cuda::selective_scan_backward_workspace_size(p);
  cuda::DeviceBuffer<unsigned char> ws(static_cast<Index>(ws_bytes + 16));
  SSMKIT_EXPECT_ERROR(cuda::selective_scan_backward(p, s, ws.data() + 4, ws_bytes), "workspace",
                      "address modulo 16", "4");

  cuda::DeviceBuffer<float> ck_buf(2 * batch * D * N);
  SelectiveScanBackwardParams<float, float> every = p;  // checkpoints 4 steps apart, not 64
  every.checkpoints = ck_buf.view<4>({2, batch, D, N});
  every.checkpoint_interval = 4;
  SSMKIT_EXPECT_ERROR(cuda::selective_scan_backward(every, s), "checkpoint_interval", "64 or 8");
  every.checkpoints = ck_buf.view<4>({1, batch, D, N});  // 1 checkpoint where 2 are due
  SSMKIT_EXPECT_ERROR(cuda::selective_scan_backward(every, s), "checkpoints", "shape");
  SelectiveScanParams<float, float> fwd = p.forward(grad.device_view());
  fwd.checkpoints = ck_buf.view<4>({2, batch, D, N});
  fwd.checkpoint_interval = 4;  // the forward takes them at its 8-step tiles only
  SSMKIT_EXPECT_ERROR(cuda::selective_scan(fwd, s), "checkpoint_interval", "multiple of 8");
}

}  // namespace
}  // namespace ssmkit::testing
