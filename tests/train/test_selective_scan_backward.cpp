// The selective scan's backward: the double reference and the fast CPU backward against central
// finite differences of the double forward oracle over every option combination, then the fast
// backward in float against the double reference on larger, strided problems, also from the
// forward's checkpoints.
#include "scan_backward_problem.hpp"
#include "testing.hpp"

#include <ssmkit/kernels/cpu/selective_scan.hpp>
#include <ssmkit/kernels/cpu/selective_scan_backward.hpp>
#include <ssmkit/kernels/cpu/selective_scan_backward_reference.hpp>
#include <ssmkit/kernels/cpu/selective_scan_reference.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace ssmkit {
namespace {

using testing::activation_view;
using testing::rel_error;
using testing::ScanGradients;
using testing::ScanOptions;
using testing::ScanProblem;

/// ℓ = Σ out·dout + Σ h_final·dh_final, so that ∂ℓ/∂out = dout and ∂ℓ/∂h_final = dh_final.
double loss(ScanProblem<double>& pr) {
  auto p = pr.params();
  std::vector<double> out(static_cast<std::size_t>(pr.batch * pr.L * pr.D));
  std::vector<double> h_final(static_cast<std::size_t>(pr.batch * pr.D * pr.N));
  TensorView<double, 3> h_final_view;
  if (pr.opt.dh_final)
    h_final_view = TensorView<double, 3>(h_final.data(), {pr.batch, pr.D, pr.N}, "h_final");
  const auto out_view = activation_view<double>(out.data(), pr.batch, pr.L, pr.D, false);
  cpu::selective_scan_reference(p.forward(out_view, h_final_view));
  double l = 0;
  for (Index b = 0; b < pr.batch; ++b)
    for (Index t = 0; t < pr.L; ++t)
      for (Index d = 0; d < pr.D; ++d)
        l += out_view(b, t, d) * p.dout(b, t, d);
  for (std::size_t i = 0; i < pr.dh_final.size(); ++i)
    l += h_final[i] * pr.dh_final[i];
  return l;
}

/// Central differences of ℓ w.r.t. every element of x (a member of pr).
std::vector<double> numeric_gradient(ScanProblem<double>& pr, std::vector<double>& x) {
  constexpr double eps = 1e-6;
  std::vector<double> g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + eps;
    const double plus = loss(pr);
    x[i] = x0 - eps;
    const double minus = loss(pr);
    x[i] = x0;
    g[i] = (plus - minus) / (2 * eps);
  }
  return g;
}

template <class T, class P>
ScanGradients<T> run_reference(P& pr) {
  ScanGradients<T> g(pr);
  auto p = pr.params();
  g.attach(p, pr);
  cpu::selective_scan_backward_reference(p);
  return g;
}

template <class T, class P>
ScanGradients<T> run_fast(P& pr, const cpu::SelectiveScanBackwardPolicy& policy = {}) {
  ScanGradients<T> g(pr);
  auto p = pr.params();
  g.attach(p, pr);
  cpu::selective_scan_backward(p, policy);
  return g;
}

/// Every present gradient of `got` against `want`: those stored in T (du, dδ, dB, dC, dz) with
/// relative error at most t_tol, those kept in W (dA, dD_skip, dδ_bias, dh0) at most w_tol.
template <class G1, class G2>
void expect_gradients_near(const G1& got, const G2& want, double t_tol, double w_tol) {
  EXPECT_LE(rel_error(got.du, want.du), t_tol) << "du";
  EXPECT_LE(rel_error(got.ddelta, want.ddelta), t_tol) << "ddelta";
  EXPECT_LE(rel_error(got.dA, want.dA), w_tol) << "dA";
  EXPECT_LE(rel_error(got.dB, want.dB), t_tol) << "dB";
  EXPECT_LE(rel_error(got.dC, want.dC), t_tol) << "dC";
  EXPECT_LE(rel_error(got.dz, want.dz), t_tol) << "dz";
  EXPECT_LE(rel_error(got.dD, want.dD), w_tol) << "dD_skip";
  EXPECT_LE(rel_error(got.dbias, want.dbias), w_tol) << "ddelta_bias";
  EXPECT_LE(rel_error(got.dh0, want.dh0), w_tol) << "dh0";
}

/// Every present gradient of `got` against `want`, relative error at most tol.
template <class G1, class G2>
void expect_gradients_near(const G1& got, const G2& want, double tol) {
  expect_gradients_near(got, want, tol, tol);
}

ScanOptions options_of(int mask, Index groups) {
  ScanOptions o;
  o.softplus = mask & 1, o.bias = mask & 2, o.skip = mask & 4, o.gate = mask & 8;
  o.h0 = mask & 16, o.dh_final = mask & 32;
  o.groups = groups;
  o.channel_major = (mask + groups) % 2;
  return o;
}

TEST(SelectiveScanBackward, MatchesFiniteDifferencesForEveryOptionCombination) {
  // L = 1, a multiple of the chunk (4) and neither; 2 channels per slice task.
  const Index lengths[] = {1, 8, 11};
  cpu::SelectiveScanBackwardPolicy policy;
  policy.chunk_length = 4;
  policy.channels_per_task = 1;
  // Thousands of tiny problems: one thread spares each a parallel region (threading is tested
  // below).
  const int threads = max_threads();
  set_num_threads(1);
  for (Index groups : {1, 2}) {
    for (int mask = 0; mask < 64; ++mask) {
      const Index L = lengths[(mask + groups) % 3];
      ScanProblem<double> pr(2, L, 4, 3, options_of(mask, groups), 100 + mask);
      SCOPED_TRACE(pr.opt.str() + " L " + std::to_string(L));
      ScanGradients<double> fd(pr);
      fd.du = numeric_gradient(pr, pr.u);
      fd.ddelta = numeric_gradient(pr, pr.delta);
      fd.dA = numeric_gradient(pr, pr.A);
      fd.dB = numeric_gradient(pr, pr.B);
      fd.dC = numeric_gradient(pr, pr.C);
      fd.dz = numeric_gradient(pr, pr.z);
      fd.dD = numeric_gradient(pr, pr.skip);
      fd.dbias = numeric_gradient(pr, pr.bias);
      fd.dh0 = numeric_gradient(pr, pr.h0);
      {
        SCOPED_TRACE("reference");
        expect_gradients_near(run_reference<double>(pr), fd, 1e-6);
      }
      {
        SCOPED_TRACE("fast");
        expect_gradients_near(run_fast<double>(pr, policy), fd, 1e-6);
      }
    }
  }
  set_num_threads(threads);
}

TEST(SelectiveScanBackward, FloatMatchesDoubleReference) {
  ScanOptions all;
  all.softplus = all.bias = all.skip = all.gate = all.h0 = all.dh_final = true;
  all.groups = 2;
  cpu::SelectiveScanBackwardPolicy small;
  small.chunk_length = 7;
  small.channels_per_task = 8;
  for (bool channel_major : {false, true}) {
    all.channel_major = channel_major;
    // 40 channels: two groups of 20, so lane blocks end part-filled; L not a multiple of the chunk.
    ScanProblem<float> pr(2, 300, 40, 16, all, 7);
    SCOPED_TRACE(pr.opt.str());
    auto pd = pr.cast<double>();
    const auto want = run_reference<double>(pd);
    for (const auto& policy : {cpu::SelectiveScanBackwardPolicy{}, small}) {
      SCOPED_TRACE("chunk " + std::to_string(policy.chunk_length));
      expect_gradients_near(run_fast<float>(pr, policy), want, 1e-5);
    }
  }
}

// The backward starting its chunks from the fast forward's checkpoints (every 64 steps, every 7,
// and one for the whole sequence) against the double reference; and it does start from them:
// zero checkpoints where h0 is not zero give other gradients.
TEST(SelectiveScanBackward, FromForwardCheckpoints) {
  ScanOptions all;
  all.softplus = all.bias = all.skip = all.gate = all.h0 = all.dh_final = true;
  all.groups = 2;
  for (bool channel_major : {false, true}) {
    all.channel_major = channel_major;
    ScanProblem<float> pr(2, 300, 40, 16, all, 9);
    SCOPED_TRACE(pr.opt.str());
    auto pd = pr.cast<double>();
    const auto want = run_reference<double>(pd);
    for (const Index every : {64, 7, 1000}) {
      SCOPED_TRACE("every " + std::to_string(every));
      const Index count = (pr.L + every - 1) / every;
      HostTensor<float, 4> ck({count, pr.batch, pr.D, pr.N});
      std::vector<float> out(static_cast<std::size_t>(pr.batch * pr.L * pr.D));
      auto p = pr.params();
      auto f = p.forward(activation_view<float>(out.data(), pr.batch, pr.L, pr.D, false));
      f.checkpoints = ck.view();
      f.checkpoint_interval = every;
      cpu::selective_scan(f);
      ScanGradients<float> g(pr);
      g.attach(p, pr);
      p.checkpoints = ck.view();
      p.checkpoint_interval = every;
      cpu::selective_scan_backward(p);
      expect_gradients_near(g, want, 1e-5);
      if (every == 64) {
        std::fill(ck.data(), ck.data() + ck.numel(), 0.f);
        cpu::selective_scan_backward(p);
        EXPECT_GT(rel_error(g.dA, want.dA), 1e-3) << "zero checkpoints, yet the same dA";
      }
    }
  }
}

TEST(SelectiveScanBackward, Bfloat16StorageMatchesDoubleReference) {
  ScanOptions all;
  all.softplus = all.bias = all.skip = all.gate = all.h0 = true;
  ScanProblem<Eigen::bfloat16> pr(1, 70, 20, 8, all, 13);
  auto pd = pr.cast<double>();
  // Storage rounds each gradient stored in bf16 to 8 bits of mantissa: 2^-9 relative (measured
  // 1.6-1.9e-3), well inside 1e-2. dA, dD_skip, dδ_bias and dh0 are kept in float: measured
  // 1.2-2.7e-7 on the AVX-512, AVX2 and portable paths, so rounding them through bf16 (1.2-1.7e-3)
  // fails 1e-5.
  expect_gradients_near(run_fast<Eigen::bfloat16>(pr), run_reference<double>(pd), 1e-2, 1e-5);
}

TEST(SelectiveScanBackward, ChunkLengthOnlyChangesMemory) {
  ScanOptions o;
  o.softplus = o.bias = o.skip = o.gate = o.h0 = true;
  ScanProblem<double> pr(1, 37, 9, 5, o, 21);
  const auto want = run_reference<double>(pr);
  for (Index chunk : {1, 2, 36, 37, 38, 1000}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    cpu::SelectiveScanBackwardPolicy policy;
    policy.chunk_length = chunk;
    expect_gradients_near(run_fast<double>(pr, policy), want, 1e-13);
  }
}

TEST(SelectiveScanBackward, SameBitsOnOneOrTwoThreads) {
  ScanOptions o;
  o.softplus = o.bias = o.skip = o.gate = true;
  ScanProblem<float> pr(3, 50, 48, 8, o, 5);
  cpu::SelectiveScanBackwardPolicy policy;
  policy.channels_per_task = 16;
  const int threads = max_threads();
  set_num_threads(1);
  const auto one = run_fast<float>(pr, policy);
  set_num_threads(2);
  const auto two = run_fast<float>(pr, policy);
  set_num_threads(threads);
  auto same = [](const auto& a, const auto& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0;
  };
  EXPECT_TRUE(same(one.du, two.du) && same(one.ddelta, two.ddelta) && same(one.dA, two.dA) &&
              same(one.dB, two.dB) && same(one.dC, two.dC) && same(one.dz, two.dz) &&
              same(one.dD, two.dD) && same(one.dbias, two.dbias));
  EXPECT_LE(rel_error(one.dB, run_reference<float>(pr).dB), 1e-5);  // and not trivially equal
}

TEST(SelectiveScanBackward, EmptySequencePassesTheStateGradientThrough) {
  ScanOptions o;
  o.h0 = o.dh_final = o.skip = o.bias = true;
  ScanProblem<double> pr(2, 0, 5, 4, o, 3);
  const auto g = run_fast<double>(pr);
  EXPECT_EQ(g.dh0, pr.dh_final);
  for (double x : g.dA)
    EXPECT_EQ(x, 0.0);
  for (double x : g.dD)
    EXPECT_EQ(x, 0.0);
  for (double x : g.dbias)
    EXPECT_EQ(x, 0.0);
}

// A NaN step makes every gradient that depends on it NaN, as in the reference, whatever the
// NaN's payload: exp2 once turned a NaN with low payload bits into a number, and the gradients
// before it came out finite (ddelta at the NaN step itself -0.47 for this problem).
TEST(SelectiveScanBackward, NanDeltaWithAnyPayloadGivesNanGradientsLikeTheReference) {
  ScanOptions o;
  o.softplus = true;
  ScanProblem<float> pr(1, 12, 3, 4, o, 5);
  const std::uint32_t payload = 0x7fc00001u;  // a quiet NaN whose low bits are not zero
  std::memcpy(&pr.delta[static_cast<std::size_t>(6 * pr.D + 1)], &payload, sizeof(float));
  const auto got = run_fast<float>(pr);
  const auto want = run_reference<float>(pr);
  const auto same_nans = [](const std::vector<float>& g, const std::vector<float>& w,
                            const char* name) {
    ASSERT_EQ(g.size(), w.size());
    for (std::size_t i = 0; i < w.size(); ++i)
      EXPECT_EQ(std::isnan(g[i]), std::isnan(w[i])) << name << " element " << i << ": " << g[i];
  };
  same_nans(got.du, want.du, "du");
  same_nans(got.ddelta, want.ddelta, "ddelta");
  same_nans(got.dB, want.dB, "dB");
  same_nans(got.dA, want.dA, "dA");
}

TEST(SelectiveScanBackward, RejectsBadArguments) {
  ScanOptions o;
  o.gate = o.skip = true;
  ScanProblem<float> pr(1, 4, 6, 2, o, 9);
  ScanGradients<float> g(pr);
  {
    auto p = pr.params();
    g.attach(p, pr);
    p.dz = {};
    SSMKIT_EXPECT_ERROR(cpu::selective_scan_backward(p), "dz", "presence", "present, as z is");
  }
  {
    auto p = pr.params();
    g.attach(p, pr);
    std::vector<float> extra(6);
    p.ddelta_bias = TensorView<float, 1>(extra.data(), {6}, "ddelta_bias");
    SSMKIT_EXPECT_ERROR(cpu::selective_scan_backward(p), "ddelta_bias", "absent, as delta_bias");
  }
  {
    auto p = pr.params();
    g.attach(p, pr);
    p.dA = TensorView<float, 2>(g.dA.data(), {2, 6}, "dA");
    SSMKIT_EXPECT_ERROR(cpu::selective_scan_backward(p), "dA", "shape", "(6, 2)", "(2, 6)");
  }
  {
    auto p = pr.params();
    g.attach(p, pr);
    p.dout = TensorView<const float, 3>(pr.dout.data(), {1, 3, 6}, "dout");
    SSMKIT_EXPECT_ERROR(cpu::selective_scan_backward(p), "dout", "(1, 4, 6)", "(1, 3, 6)");
  }
  {
    auto p = pr.params();
    g.attach(p, pr);
    pr.A[3] = 0.5f;
    SSMKIT_EXPECT_ERROR(cpu::selective_scan_backward_reference(p), "A", "<= 0");
    pr.A[3] = -0.5f;
  }
  {
    auto p = pr.params();
    g.attach(p, pr);
    cpu::SelectiveScanBackwardPolicy policy;
    policy.chunk_length = 0;
    SSMKIT_EXPECT_ERROR(cpu::selective_scan_backward(p, policy), "policy.chunk_length", ">= 1");
  }
}

// Gradients are written while other lanes and chunks still read the inputs: du one token before
// dout in one buffer once gave wrong gradients silently (errors up to 1.78 where they reach
// 1.78, L = 200, D = 16, N = 4). dB and dC may interleave, as in a MambaBlock's x_proj gradient.
TEST(SelectiveScanBackward, RejectsGradientsOverlappingInputsOrEachOther) {
  ScanOptions o;
  o.softplus = o.gate = o.skip = o.bias = o.h0 = o.dh_final = true;
  ScanProblem<float> pr(1, 8, 6, 2, o, 13);
  ScanGradients<float> g(pr);
  const Shape<3> act{1, 8, 6};
  std::vector<float> mem(200);
  const auto expect_error = [&](auto change, const char* out, const char* in) {
    auto p = pr.params();
    g.attach(p, pr);
    change(p);
    SSMKIT_EXPECT_ERROR(cpu::selective_scan_backward(p), out, std::string("disjoint from ") + in);
  };
  using Params = SelectiveScanBackwardParams<float>;
  expect_error(
      [&](Params& p) {
        p.dout = TensorView<const float, 3>(mem.data() + 6, act, "dout");  // one token after du
        p.du = TensorView<float, 3>(mem.data(), act, "du");
      },
      "du", "dout");
  expect_error([&](Params& p) { p.ddelta = TensorView<float, 3>(pr.delta.data(), act, "ddelta"); },
               "ddelta", "delta");
  expect_error(
      [&](Params& p) {
        p.dA = TensorView<float, 2>(pr.A.data(), {6, 2}, "dA");
      },
      "dA", "A");
  expect_error(
      [&](Params& p) {
        p.dh0 = TensorView<float, 3>(pr.dh_final.data(), {1, 6, 2}, "dh0");
      },
      "dh0", "dh_final");
  expect_error(
      [&](Params& p) {
        p.du = TensorView<float, 3>(mem.data(), act, "du");
        p.dz = TensorView<float, 3>(mem.data() + 1, act, "dz");
      },
      "du", "dz");
  expect_error([&](Params& p) { p.dD_skip = TensorView<float, 1>(g.dB.data(), {6}, "dD_skip"); },
               "dD_skip", "dB");

  // dB and dC as the interleaved columns of one (L, 2N) buffer: allowed, same gradients.
  const auto want = run_fast<float>(pr);
  auto p = pr.params();
  g.attach(p, pr);
  std::vector<float> dbc(8 * 4);
  p.dB = TensorView<float, 4>(dbc.data(), {1, 8, 1, 2}, {32, 4, 2, 1}, "dB");
  p.dC = TensorView<float, 4>(dbc.data() + 2, {1, 8, 1, 2}, {32, 4, 2, 1}, "dC");
  cpu::selective_scan_backward(p);
  for (Index t = 0; t < 8; ++t)
    for (Index n = 0; n < 2; ++n) {
      EXPECT_EQ(p.dB(0, t, 0, n), want.dB[static_cast<std::size_t>(t * 2 + n)]);
      EXPECT_EQ(p.dC(0, t, 0, n), want.dC[static_cast<std::size_t>(t * 2 + n)]);
    }
}

}  // namespace
}  // namespace ssmkit
