// The selective scan: the fp64 oracle against a closed form, the fast path (blocked and chunked,
// SIMD and portable packs) against the oracle over every option and layout, and its checks.
#include "scan_case.hpp"

#include <ssmkit/kernels/cpu/selective_scan.hpp>

#include <cmath>
#include <limits>

namespace ssmkit {
namespace {

using testing::oracle;
using testing::rel_error;
using testing::ScanCase;
using testing::ScanShape;
using Policy = cpu::SelectiveScanPolicy;
using Mode = Policy::Mode;

template <class T, class W>
double out_error(const ScanCase<T, W>& c, const testing::ScanResult& ref) {
  return rel_error(c.out.data(), ref.out.data(), c.out.numel());
}
template <class T, class W>
double state_error(const ScanCase<T, W>& c, const testing::ScanResult& ref) {
  return rel_error(c.h_final.data(), ref.h_final.data(), c.h_final.numel());
}

// h_t = (Π_{r≤t} Ā_r) h0 + Σ_{s≤t} (Π_{s<r≤t} Ā_r) B̄_s u_s, summed directly for every t:
// an independent formula for the recurrence the oracle runs.
TEST(SelectiveScanReference, MatchesClosedFormSum) {
  ScanShape s;
  s.batch = 2, s.L = 6, s.D = 4, s.N = 3, s.G = 2;
  ScanCase<double> c(s, 11);
  cpu::selective_scan_reference(c.params());
  for (Index b = 0; b < s.batch; ++b)
    for (Index d = 0; d < s.D; ++d) {
      const Index g = d / (s.D / s.G);
      std::vector<double> dt(static_cast<std::size_t>(s.L));
      for (Index t = 0; t < s.L; ++t)
        dt[t] = std::log1p(std::exp(c.delta(b, t, d) + c.delta_bias(d)));
      std::vector<double> h(static_cast<std::size_t>(s.N));
      for (Index t = 0; t < s.L; ++t) {
        double y = 0;
        for (Index n = 0; n < s.N; ++n) {
          const auto decay = [&](Index from, Index to) {  // Π_{from<r≤to} exp(Δ_r A)
            double sum = 0;
            for (Index r = from + 1; r <= to; ++r)
              sum += dt[r];
            return std::exp(sum * c.A(d, n));
          };
          double hn = decay(-1, t) * c.h0(b, d, n);
          for (Index q = 0; q <= t; ++q)
            hn += decay(q, t) * dt[q] * c.Bm(b, q, g, n) * c.u(b, q, d);
          h[n] = hn;
          y += c.Cm(b, t, g, n) * hn;
        }
        y = (y + c.D_skip(d) * c.u(b, t, d)) * c.z(b, t, d) / (1 + std::exp(-c.z(b, t, d)));
        EXPECT_NEAR(c.out(b, t, d), y, 1e-12 * (1 + std::abs(y))) << b << " " << t << " " << d;
      }
      for (Index n = 0; n < s.N; ++n)
        EXPECT_NEAR(c.h_final(b, d, n), h[n], 1e-12 * (1 + std::abs(h[n])));
    }
}

// Every combination of the six options, both layouts, both threading modes, against the oracle.
/// The fast scan of c in `mode` (three chunks when chunked), its outputs poisoned first.
template <class Pack>
void run_poisoned(ScanCase<float>& c, Mode mode) {
  c.poison();
  Policy policy;
  policy.mode = mode;
  policy.chunks = 3;
  cpu::selective_scan<Pack>(c.params(), policy);
}

template <class Pack>
void check_all_options(const ScanShape& base, double tol) {
  for (int mask = 0; mask < 64; ++mask)
    for (bool channel_major : {false, true}) {
      ScanShape s = base;
      s.delta_bias = mask & 1, s.D_skip = mask & 2, s.z = mask & 4, s.h0 = mask & 8;
      s.h_final = mask & 16, s.softplus = mask & 32, s.channel_major = channel_major;
      ScanCase<float> c(s, 100 + static_cast<std::uint64_t>(mask));
      const auto ref = oracle(c);
      for (Mode mode : {Mode::Blocked, Mode::Chunked}) {
        run_poisoned<Pack>(c, mode);
        SCOPED_TRACE(::testing::Message() << "mask " << mask << " channel-major " << channel_major
                                          << " chunked " << (mode == Mode::Chunked));
        EXPECT_LE(out_error(c, ref), tol);
        if (s.h_final) {
          EXPECT_LE(state_error(c, ref), tol);
        }
      }
    }
}

TEST(SelectiveScan, FloatEveryOptionMatchesOracle) {
  ScanShape s;  // D = 20 fills neither an 8- nor a 16-lane block; L = 37 no time tile
  check_all_options<void>(s, 1e-5);
}

TEST(SelectiveScan, PortablePackEveryOptionMatchesOracle) {
  ScanShape s;
  s.G = 2, s.N = 5;
  check_all_options<cpu::simd::Portable<float, 8>>(s, 1e-5);
}

// Shapes: L = 1, L across several time tiles, groups, N from 1 to the limit 256.
TEST(SelectiveScan, FloatShapesMatchOracle) {
  struct Case {
    Index batch, L, D, N, G;
  };
  for (const Case& k :
       {Case{1, 1, 8, 16, 1}, Case{3, 1, 5, 3, 1}, Case{1, 131, 48, 16, 3}, Case{2, 70, 24, 1, 4},
        Case{1, 29, 16, 64, 2}, Case{1, 65, 12, 256, 1}, Case{2, 200, 33, 7, 1}})
    for (bool channel_major : {false, true})
      for (Mode mode : {Mode::Blocked, Mode::Chunked}) {
        ScanShape s;
        s.batch = k.batch, s.L = k.L, s.D = k.D, s.N = k.N, s.G = k.G;
        s.channel_major = channel_major;
        ScanCase<float> c(s, static_cast<std::uint64_t>(k.L * 1000 + k.N));
        const auto ref = oracle(c);
        Policy policy;
        policy.mode = mode;
        policy.chunks = 4;
        cpu::selective_scan(c.params(), policy);
        SCOPED_TRACE(::testing::Message()
                     << "B " << k.batch << " L " << k.L << " D " << k.D << " N " << k.N << " G "
                     << k.G << " channel-major " << channel_major << " chunked "
                     << (mode == Mode::Chunked));
        EXPECT_LE(out_error(c, ref), 1e-5);
        EXPECT_LE(state_error(c, ref), 1e-5);
      }
}

TEST(SelectiveScan, DoubleMatchesOracle) {
  for (bool channel_major : {false, true}) {
    ScanShape s;
    s.L = 90, s.G = 2, s.N = 12, s.channel_major = channel_major;
    ScanCase<double> c(s, 5);
    const auto ref = oracle(c);
    for (Mode mode : {Mode::Blocked, Mode::Chunked}) {
      c.poison();
      Policy policy;
      policy.mode = mode;
      cpu::selective_scan(c.params(), policy);
      EXPECT_LE(out_error(c, ref), 1e-12);
      EXPECT_LE(state_error(c, ref), 1e-12);
    }
  }
}

template <class T>
void check_low_precision(double tol) {
  for (bool channel_major : {false, true}) {
    ScanShape s;
    s.L = 77, s.D = 24, s.G = 3, s.channel_major = channel_major;
    ScanCase<T> c(s, 9);
    const auto ref = oracle(c);  // on the same rounded inputs, so only the kernel's error counts
    for (Mode mode : {Mode::Blocked, Mode::Chunked}) {
      c.poison();
      Policy policy;
      policy.mode = mode;
      cpu::selective_scan(c.params(), policy);
      EXPECT_LE(out_error(c, ref), tol);
      EXPECT_LE(state_error(c, ref), 1e-5);  // the state stays in float
    }
  }
}

// Only the outputs' rounding to storage differs from the oracle's (it reads the same rounded
// inputs): at most the unit roundoff in norm, 2^-11 for half (measured 2.2e-4), 2^-8 for
// bfloat16 (1.7e-3); the bounds are about four and two and a half of those.
TEST(SelectiveScan, HalfMatchesOracle) {
  check_low_precision<Eigen::half>(2e-3);
}
TEST(SelectiveScan, BFloat16MatchesOracle) {
  check_low_precision<Eigen::bfloat16>(1e-2);
}

// The chunked scan against the blocked one for chunk counts that split L unevenly, one and two
// threads; with a fixed chunk count the result does not depend on the threads.
TEST(SelectiveScan, ChunkedEqualsSequential) {
  ScanShape s;
  s.batch = 1, s.L = 1001, s.D = 9;
  ScanCase<float> c(s, 21);
  Policy blocked;
  blocked.mode = Mode::Blocked;
  cpu::selective_scan(c.params(), blocked);
  const std::vector<float> seq(c.out.data(), c.out.data() + c.out.numel());
  const std::vector<float> seq_h(c.h_final.data(), c.h_final.data() + c.h_final.numel());
  for (Index chunks : {Index{2}, Index{3}, Index{7}, Index{16}, Index{1500}, Index{1} << 40}) {
    std::vector<float> first;
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      c.poison();
      Policy policy;
      policy.mode = Mode::Chunked;
      policy.chunks = chunks;
      cpu::selective_scan(c.params(), policy);
      EXPECT_LE(rel_error(c.out.data(), seq.data(), c.out.numel()), 1e-5) << chunks;
      EXPECT_LE(rel_error(c.h_final.data(), seq_h.data(), c.h_final.numel()), 1e-5) << chunks;
      std::vector<float> now(c.out.data(), c.out.data() + c.out.numel());
      if (threads == 1) {
        first = now;
      } else {
        EXPECT_EQ(now, first) << "chunks " << chunks;
      }
    }
  }
  set_num_threads(max_threads());
}

TEST(SelectiveScan, AutoPolicyMatchesOracle) {
  ScanShape s;
  s.batch = 1, s.L = 3000, s.D = 4, s.N = 8;  // one lane block: Auto chunks with 2 threads
  ScanCase<float> c(s, 31);
  const auto ref = oracle(c);
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    c.poison();
    cpu::selective_scan(c.params());
    EXPECT_LE(out_error(c, ref), 1e-5);
    EXPECT_LE(state_error(c, ref), 1e-5);
  }
  set_num_threads(max_threads());
}

// Scanning [0, L1) then [L1, L) with the first half's final state as the second's h0 equals
// scanning [0, L) at once; also with h0 and h_final the same memory.
TEST(SelectiveScan, TwoHalvesEqualWhole) {
  for (bool channel_major : {false, true}) {
    ScanShape s;
    s.L = 150, s.channel_major = channel_major;
    ScanCase<float> c(s, 41);
    cpu::selective_scan(c.params());
    const std::vector<float> whole(c.out.data(), c.out.data() + c.out.numel());
    const std::vector<float> whole_h(c.h_final.data(), c.h_final.data() + c.h_final.numel());
    c.poison();
    HostTensor<float, 3> carry = c.h0.clone();
    const auto full = c.params();
    const auto slice3 = [](auto v, Index t0, Index len) {
      return decltype(v)::unchecked(v.data() + t0 * v.stride(1), {v.size(0), len, v.size(2)},
                                    v.strides(), v.device());
    };
    const auto slice4 = [](auto v, Index t0, Index len) {
      return decltype(v)::unchecked(v.data() + t0 * v.stride(1),
                                    {v.size(0), len, v.size(2), v.size(3)}, v.strides(),
                                    v.device());
    };
    for (auto [t0, len] : {std::pair<Index, Index>{0, 61}, {61, 89}}) {
      auto p = full;
      p.u = slice3(full.u, t0, len), p.delta = slice3(full.delta, t0, len);
      p.z = slice3(full.z, t0, len), p.out = slice3(full.out, t0, len);
      p.B = slice4(full.B, t0, len), p.C = slice4(full.C, t0, len);
      p.h0 = carry.view();
      p.h_final = carry.view();
      cpu::selective_scan(p);
    }
    EXPECT_LE(rel_error(c.out.data(), whole.data(), c.out.numel()), 1e-6);
    EXPECT_LE(rel_error(carry.data(), whole_h.data(), carry.numel()), 1e-6);
  }
}

// Checkpoint j is the state entering step j·k: the oracle's against the final state of the
// oracle run on the first j·k steps alone; the fast scan's (blocked, and chunked with chunks
// that start between checkpoints) against the oracle's.
TEST(SelectiveScan, CheckpointsAreTheStatesEnteringEveryKthStep) {
  for (bool channel_major : {false, true}) {
    ScanShape s;
    s.L = 150, s.channel_major = channel_major;
    const Index every = 32, count = 5;
    ScanCase<float> c(s, 61);
    const auto full = c.params();
    HostTensor<float, 4> ref({count, s.batch, s.D, s.N});
    auto p = full;
    p.checkpoints = ref.view();
    p.checkpoint_interval = every;
    cpu::selective_scan_reference(p);
    for (Index j = 0; j < count; ++j) {
      auto prefix = full;
      prefix.u =
          full.u.unchecked(full.u.data(), {s.batch, j * every, s.D}, full.u.strides(), Device::CPU);
      prefix.delta = full.delta.unchecked(full.delta.data(), prefix.u.shape(), full.delta.strides(),
                                          Device::CPU);
      prefix.z = full.z.unchecked(full.z.data(), prefix.u.shape(), full.z.strides(), Device::CPU);
      prefix.out =
          full.out.unchecked(full.out.data(), prefix.u.shape(), full.out.strides(), Device::CPU);
      prefix.B = full.B.unchecked(full.B.data(), {s.batch, j * every, s.G, s.N}, full.B.strides(),
                                  Device::CPU);
      prefix.C = full.C.unchecked(full.C.data(), prefix.B.shape(), full.C.strides(), Device::CPU);
      HostTensor<float, 3> state({s.batch, s.D, s.N});
      prefix.h_final = state.view();
      cpu::selective_scan_reference(prefix);
      EXPECT_LE(rel_error(ref.data() + j * state.numel(), state.data(), state.numel()), 1e-6)
          << "checkpoint " << j;
    }
    for (Index chunks : {0, 3, 7}) {  // 0: blocked
      HostTensor<float, 4> fast({count, s.batch, s.D, s.N});
      p.checkpoints = fast.view();
      Policy policy;
      policy.mode = chunks == 0 ? Mode::Blocked : Mode::Chunked;
      policy.chunks = chunks;
      cpu::selective_scan(p, policy);
      EXPECT_LE(rel_error(fast.data(), ref.data(), ref.numel()), 1e-5) << chunks;
    }
  }
}

// A NaN step makes its channel's outputs NaN from that time on and its final state NaN, as in
// the oracle, on every pack and mode; every other element still matches.
template <class Pack>
void check_nan_delta() {
  ScanShape s;  // softplus on: the NaN must survive it
  ScanCase<float> c(s, 71);
  const Index b = 1, t0 = 5, d0 = 3;
  c.delta(b, t0, d0) = std::numeric_limits<float>::quiet_NaN();
  const auto ref = oracle(c);
  Index nan_out = 0, nan_state = 0;
  for (double v : ref.out)
    nan_out += std::isnan(v);
  for (double v : ref.h_final)
    nan_state += std::isnan(v);
  ASSERT_EQ(nan_out, s.L - t0);
  ASSERT_EQ(nan_state, s.N);
  for (Mode mode : {Mode::Blocked, Mode::Chunked}) {
    run_poisoned<Pack>(c, mode);
    SCOPED_TRACE(::testing::Message() << "chunked " << (mode == Mode::Chunked));
    const auto compare = [](const float* got, const std::vector<double>& want) {
      std::vector<double> finite_got, finite_want;
      for (std::size_t i = 0; i < want.size(); ++i) {
        ASSERT_EQ(std::isnan(got[i]), std::isnan(want[i])) << "element " << i;
        if (!std::isnan(want[i])) {
          finite_got.push_back(got[i]);
          finite_want.push_back(want[i]);
        }
      }
      EXPECT_LE(rel_error(finite_got, finite_want), 1e-5);
    };
    compare(c.out.data(), ref.out);
    compare(c.h_final.data(), ref.h_final);
  }
}

TEST(SelectiveScan, NanDeltaPropagatesLikeTheOracle) {
  check_nan_delta<void>();
  check_nan_delta<cpu::simd::Portable<float, 8>>();
}

TEST(SelectiveScan, RejectsBadArguments) {
  ScanShape s;
  ScanCase<float> c(s, 51);
  const auto good = c.params();
  HostTensor<float, 3> wrong3({2, 36, 20});
  HostTensor<float, 4> bc3({2, 37, 3, 16});  // 3 groups do not divide D = 20
  HostTensor<float, 2> big_a({20, 257});
  HostTensor<float, 3> h0_wrong({2, 20, 15});

  auto p = good;
  p.delta = wrong3.view();
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(p), "delta", "shape", "(2, 37, 20)", "(2, 36, 20)");
  p = good, p.z = wrong3.view();
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(p), "z", "shape");
  p = good, p.out = wrong3.view();
  SSMKIT_EXPECT_ERROR(cpu::selective_scan_reference(p), "out", "shape");
  p = good, p.B = bc3.view(), p.C = bc3.view();
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(p), "B", "groups", "a divisor of D = 20", "got 3");
  p = good, p.A = big_a.view();
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(p), "A", "state size", "[1, 256]", "257");
  p = good, p.h0 = h0_wrong.view();
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(p), "h0", "shape");
  p = good, p.h_final = h0_wrong.view();
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(p), "h_final", "shape");
  HostTensor<float, 4> ck({2, 2, 20, 16});
  p = good, p.checkpoints = ck.view(), p.checkpoint_interval = 0;
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(p), "checkpoint_interval", ">= 1", "0");
  p.checkpoint_interval = 32;  // 37 steps: checkpoints at 0 and 32
  cpu::selective_scan(p);
  p.checkpoint_interval = 16;  // 3 checkpoints due
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(p), "checkpoints", "shape", "(3, 2, 20, 16)");
  p = good, p.u = TensorView<const float, 3>(c.u.data(), {2, 37, 20}, "u", Device::CUDA);
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(p), "u", "device", "cpu", "cuda");
  Policy policy;
  policy.chunks = -1;
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(good, policy), "policy.chunks", ">= 0", "-1");
  policy.chunks = 0, policy.min_chunk_length = 0;
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(good, policy), "policy.min_chunk_length", ">= 1", "0");

  c.A(3, 4) = std::numeric_limits<float>::quiet_NaN();
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(good), "A", "element (3, 4)", "finite");
  c.A(3, 4) = 0.5f;  // a growing state is refused too
  SSMKIT_EXPECT_ERROR(cpu::selective_scan_reference(good), "A", "<= 0", "0.5");
  c.A(3, 4) = -1.0f;
  c.D_skip(7) = std::numeric_limits<float>::infinity();
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(good), "D_skip", "element 7", "finite");
  c.D_skip(7) = 1.0f;
  c.delta_bias(2) = -std::numeric_limits<float>::infinity();
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(good), "delta_bias", "element 2", "finite");
}

// Outputs are written while other lanes, blocks and time chunks still read the inputs: out one
// token after u in one buffer once gave wrong outputs silently (errors up to 0.84 where they
// reach 1.6, L = 200, D = 16, N = 4). Only h_final over exactly h0 may share memory.
TEST(SelectiveScan, RejectsOutputsOverlappingInputsOrEachOther) {
  ScanShape s;
  s.channel_major = false;
  ScanCase<float> c(s, 53);
  const auto good = c.params();
  const Index act = s.batch * s.L * s.D, state = s.batch * s.D * s.N;
  std::vector<float> mem(static_cast<std::size_t>(2 * act + 2 * state));
  const Shape<3> act_shape{s.batch, s.L, s.D}, state_shape{s.batch, s.D, s.N};

  auto p = good;
  p.u = TensorView<const float, 3>(mem.data(), act_shape, "u");
  p.out = TensorView<float, 3>(mem.data() + s.D, act_shape, "out");  // one token after u
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(p), "out", "disjoint from u");
  SSMKIT_EXPECT_ERROR(cpu::selective_scan_reference(p), "out", "disjoint from u");
  p = good, p.out = TensorView<float, 3>(const_cast<float*>(good.z.data()), act_shape, "out");
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(p), "out", "disjoint from z");  // not even in place
  p = good, p.out = TensorView<float, 3>(mem.data(), act_shape, "out");
  p.B = TensorView<const float, 4>(mem.data() + act - 1, {s.batch, s.L, s.G, s.N}, "B");
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(p), "out", "disjoint from B");
  p = good, p.h_final = TensorView<float, 3>(mem.data(), state_shape, "h_final");
  p.A = TensorView<const float, 2>(mem.data() + 3, {s.D, s.N}, "A");
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(p), "h_final", "disjoint from A");
  p = good, p.h_final = TensorView<float, 3>(mem.data(), state_shape, "h_final");
  p.h0 = TensorView<const float, 3>(mem.data() + 1, state_shape, "h0");
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(p), "h_final", "disjoint from h0");
  p.h0 = good.h0;
  p.out = TensorView<float, 3>(mem.data() + state - 1, act_shape, "out");
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(p), "h_final", "disjoint from out");
  p = good;
  HostTensor<float, 4> ck({1, s.batch, s.D, s.N});
  p.checkpoints = ck.view(), p.checkpoint_interval = s.L;
  p.h_final = TensorView<float, 3>(ck.data(), state_shape, "h_final");
  SSMKIT_EXPECT_ERROR(cpu::selective_scan(p), "checkpoints", "disjoint from h_final");

  // h_final over exactly h0 carries the state in place, as documented.
  p = good;
  HostTensor<float, 3> h({s.batch, s.D, s.N});
  std::copy(c.h0.data(), c.h0.data() + state, h.data());
  p.h0 = h.view(), p.h_final = h.view();
  cpu::selective_scan(p);
  const auto ref = oracle(c);
  EXPECT_LE(rel_error(h.data(), ref.h_final.data(), state), 1e-5);
}

}  // namespace
}  // namespace ssmkit
