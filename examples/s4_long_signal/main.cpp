// s4_long_signal: runs an S4 layer over a long signal in convolution mode and in recurrent mode
// and prints how well the two agree and how long each took.
//
//   s4_long_signal [--length L] [--channels H] [--state N] [--param diag|dplr] [--threads T]
//
// Defaults: --length 65536 (at most 1048576) --channels 8 --state 64 (even) --param diag.
// stdout: the layer, the two modes' times and their agreement. Exit status 0 when the modes agree
// to a relative L2 below 1e-3, 1 when they do not (with a line on stderr) or on any error (one
// line), 2 for a usage error.
#include <ssmkit/core/parallel.hpp>
#include <ssmkit/nn/s4_layer.hpp>

#include "common/cli.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

namespace {

using ssmkit::Index;
using namespace ssmkit::examples;

constexpr Index kMaxLength = Index{1} << 20;

constexpr const char* kUsage =
    "usage: s4_long_signal [--length L (<= 1048576, default 65536)] [--channels H (default 8)]\n"
    "                      [--state N (even, default 64)] [--param diag|dplr] [--threads T]";

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run(int argc, char** argv) {
  using namespace ssmkit;
  const Flags flags(argc, argv, {"--length", "--channels", "--state", "--param", "--threads"});
  const auto L = parse_number<Index>("--length", flags.get("--length", "65536"));
  const auto H = parse_number<Index>("--channels", flags.get("--channels", "8"));
  const auto N = parse_number<Index>("--state", flags.get("--state", "64"));
  const std::string param = flags.get("--param", "diag");
  if (L < 1 || L > kMaxLength)
    throw UsageError("--length: must be in [1, " + std::to_string(kMaxLength) + "]");
  if (H < 1)
    throw UsageError("--channels: must be >= 1");
  if (N < 2 || N % 2 != 0)
    throw UsageError("--state: must be even and >= 2");
  if (param != "diag" && param != "dplr")
    throw UsageError("--param: expected diag or dplr, got '" + param + "'");
  flags.apply_threads();

  nn::S4Config cfg;
  cfg.channels = H;
  cfg.state_size = N;
  cfg.param = param == "dplr" ? nn::S4Parameterization::Dplr : nn::S4Parameterization::Diagonal;
  cfg.discretization = param == "dplr" ? math::Discretization::Bilinear : math::Discretization::ZOH;
  cfg.dt_min = 1e-4;
  cfg.dt_max = 1e-2;
  const nn::S4Layer<float> layer(cfg);

  // A long signal: a chirp plus a slow square wave plus noise, per channel phase-shifted.
  HostTensor<float, 3> u({1, L, H}), y_conv({1, L, H}), y_rec({1, L, H});
  unsigned state = 12345;
  for (Index t = 0; t < L; ++t)
    for (Index h = 0; h < H; ++h) {
      state = state * 1664525u + 1013904223u;
      const double x = double(t) / 4096.0;
      u(0, t, h) = float(std::sin(x * (1 + 0.01 * x) + h) + (std::fmod(x, 8.0) < 4 ? 0.5 : -0.5) +
                         0.1 * (double(state >> 8) / double(1 << 24) - 0.5));
    }

  auto t0 = std::chrono::steady_clock::now();
  layer.forward_conv(u.view(), y_conv.view());
  const double t_conv = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  layer.forward_recurrent(u.view(), y_rec.view());
  const double t_rec = seconds_since(t0);

  double num = 0, den = 0, worst = 0;
  for (Index i = 0; i < y_rec.numel(); ++i) {
    const double d = double(y_conv.data()[i]) - double(y_rec.data()[i]);
    num += d * d;
    den += double(y_rec.data()[i]) * double(y_rec.data()[i]);
    worst = std::max(worst, std::abs(d));
  }
  const double rel = std::sqrt(num / den);
  std::printf("S4 layer (%s, float): H = %lld channels, N = %lld, L = %lld, %d threads\n",
              param.c_str(), static_cast<long long>(H), static_cast<long long>(N),
              static_cast<long long>(L), max_threads());
  std::printf("  convolution mode: %9.3f s  (kernel + FFT convolution)\n", t_conv);
  std::printf("  recurrent mode:   %9.3f s  (%.1f ns per sample and channel)\n", t_rec,
              1e9 * t_rec / double(L * H));
  std::printf("  agreement: relative L2 %.3e, max abs difference %.3e\n", rel, worst);
  if (std::isfinite(rel) && rel < 1e-3)
    return 0;
  std::fprintf(stderr, "s4_long_signal: the two modes disagree (relative L2 %.3e, not < 1e-3)\n",
               rel);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  return run_main("s4_long_signal", kUsage, [&] { return run(argc, argv); });
}
