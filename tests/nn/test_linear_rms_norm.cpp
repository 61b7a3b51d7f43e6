// nn::linear and nn::rms_norm against plain double loops, across thread counts and layouts.
#include "nn_testing.hpp"

#include <ssmkit/nn/linear.hpp>
#include <ssmkit/nn/rms_norm.hpp>

#include <cmath>

using namespace ssmkit;
using namespace ssmkit::testing;

namespace {

struct ThreadGuard {
  int saved = max_threads();
  ~ThreadGuard() { set_num_threads(saved); }
};

TEST(Linear, MatchesDoubleLoop) {
  ThreadGuard guard;
  for (int threads : {1, 2})
    for (Index tokens : {1, 5, 33})
      for (Index out : {1, 63, 200})
        for (bool with_bias : {false, true}) {
          set_num_threads(threads);
          const Index in = 37;
          HostTensor<float, 2> x({tokens, in}), w({out, in}), y({tokens, out});
          HostTensor<float, 1> b({out});
          fill_random(x, 1 + tokens);
          fill_random(w, 2 + out);
          fill_random(b, 3);
          poison(y);
          nn::linear<float>(x.view(), w.view(), with_bias ? b.view() : TensorView<const float, 1>(),
                            y.view());
          // Elementwise against the a-priori bound of a float dot product of in + 1 terms,
          // |err| <= gamma_(in+1) * sum |terms| (Higham, Accuracy and Stability, 3.1): a relative
          // norm would wrongly punish cancellation in a single output.
          const double gamma = (in + 1) * 0x1.0p-24 / (1 - (in + 1) * 0x1.0p-24);
          for (Index t = 0; t < tokens; ++t)
            for (Index o = 0; o < out; ++o) {
              double s = with_bias ? b(o) : 0.0, mag = with_bias ? std::abs(b(o)) : 0.0;
              for (Index i = 0; i < in; ++i) {
                s += double(x(t, i)) * w(o, i);
                mag += std::abs(double(x(t, i)) * w(o, i));
              }
              ASSERT_LE(std::abs(y(t, o) - s), gamma * mag)
                  << threads << " threads, " << tokens << "x" << out << " bias " << with_bias
                  << " at (" << t << ", " << o << ")";
            }
        }
}

TEST(Linear, StridedRowsAndErrors) {
  // x rows 50 apart (a column block of a wider matrix), y rows 70 apart.
  HostTensor<double, 2> xbuf({4, 50}), w({9, 20}), ybuf({4, 70});
  fill_random(xbuf, 4);
  fill_random(w, 5);
  poison(ybuf);
  const TensorView<const double, 2> x(xbuf.data() + 3, {4, 20}, {50, 1});
  const TensorView<double, 2> y(ybuf.data() + 11, {4, 9}, {70, 1});
  nn::linear<double>(x, w.view(), {}, y);
  for (Index t = 0; t < 4; ++t)
    for (Index o = 0; o < 9; ++o) {
      double s = 0;
      for (Index i = 0; i < 20; ++i)
        s += x(t, i) * w(o, i);
      EXPECT_NEAR(y(t, o), s, 1e-13);
    }
  EXPECT_TRUE(std::isnan(ybuf(0, 10)) && std::isnan(ybuf(0, 20))) << "wrote outside y";
  const TensorView<const double, 2> xt(xbuf.data(), {4, 20}, {1, 4});
  SSMKIT_EXPECT_ERROR(nn::linear<double>(xt, w.view(), {}, y), "x", "stride[1]");
  HostTensor<double, 2> w2({9, 21});
  SSMKIT_EXPECT_ERROR(nn::linear<double>(x, w2.view(), {}, y), "weight", "shape");
  HostTensor<double, 1> b({8});
  SSMKIT_EXPECT_ERROR(nn::linear<double>(x, w.view(), b.view(), y), "bias", "shape");
  HostTensor<double, 2> y2({3, 9});
  SSMKIT_EXPECT_ERROR(nn::linear<double>(x, w.view(), {}, y2.view()), "y", "shape");
}

// y over x's memory would be written while x is read: rejected, naming y and x.
TEST(Linear, RejectsOutputOverlappingInput) {
  HostTensor<double, 2> buf({4, 9}), w({9, 9});
  fill_random(buf, 6);
  fill_random(w, 7);
  SSMKIT_EXPECT_ERROR(nn::linear<double>(buf.view(), w.view(), {}, buf.view()), "y", "x",
                      "overlap");
  const TensorView<const double, 2> x(buf.data(), {2, 9});
  const TensorView<double, 2> y(buf.data() + 9, {2, 9});  // rows 1 and 2: overlaps x's row 1
  SSMKIT_EXPECT_ERROR(nn::linear<double>(x, w.view(), {}, y), "y", "x", "overlap");
}

TEST(RMSNorm, MatchesDoubleFormula) {
  ThreadGuard guard;
  for (int threads : {1, 2})
    for (Index tokens : {1, 700}) {
      set_num_threads(threads);
      const Index F = 96;
      HostTensor<float, 2> x({tokens, F}), y({tokens, F});
      HostTensor<float, 1> w({F});
      fill_random(x, 6, -3, 3);
      fill_random(w, 7, 0.5, 1.5);
      poison(y);
      const double eps = 1e-5;
      nn::rms_norm<float, float>(x.view(), w.view(), eps, y.view());
      std::vector<double> ref(static_cast<std::size_t>(tokens * F));
      for (Index t = 0; t < tokens; ++t) {
        double ss = 0;
        for (Index f = 0; f < F; ++f)
          ss += double(x(t, f)) * x(t, f);
        const double r = 1 / std::sqrt(ss / F + eps);
        for (Index f = 0; f < F; ++f)
          ref[t * F + f] = w(f) * x(t, f) * r;
      }
      EXPECT_LE(rel_error(y.data(), ref.data(), y.numel()), 1e-6) << threads << " " << tokens;
    }
}

TEST(RMSNorm, Errors) {
  HostTensor<float, 2> x({2, 8}), y({2, 8});
  HostTensor<float, 1> w({7});
  fill_random(x, 8);
  SSMKIT_EXPECT_ERROR((nn::rms_norm<float, float>(x.view(), w.view(), 1e-5, y.view())), "weight",
                      "shape");
  HostTensor<float, 1> w8({8});
  SSMKIT_EXPECT_ERROR((nn::rms_norm<float, float>(x.view(), w8.view(), -1.0, y.view())), "eps");
  HostTensor<float, 2> y3({3, 8});
  SSMKIT_EXPECT_ERROR((nn::rms_norm<float, float>(x.view(), w8.view(), 1e-5, y3.view())), "y",
                      "shape");
}

}  // namespace
