// s4_long_signal: runs an S4 layer over a long signal in convolution mode and in recurrent mode
// and prints how well the two agree and how long each took.
//
//   s4_long_signal [--length L] [--channels H] [--state N] [--param diag|dplr] [--threads T]
//
// Defaults: --length 65536 (at most 1048576) --channels 8 --state 64 (even) --param diag.
// --state and --channels are bounded by memory: the run's buffers, estimated from the sizes
// (run_bytes), must fit in the machine's physical memory (which also keeps every element count
// far inside the 64-bit index). --state is checked at --channels 1, --channels at the given state;
// a size past its bound is a usage error that names the largest that fits.
// stdout: the layer, the two modes' times and their agreement. Exit status 0 when the modes agree
// to a relative L2 below 1e-3, 1 when they do not (with a line on stderr) or on any error (one
// line), 2 for a usage error.
#include <ssmkit/core/parallel.hpp>
#include <ssmkit/nn/s4_layer.hpp>

#include "common/cli.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <complex>
#include <cstdio>
#include <string>

namespace {

using ssmkit::Index;
using namespace ssmkit::examples;

constexpr Index kMaxLength = Index{1} << 20;

constexpr const char* kUsage =
    "usage: s4_long_signal [--length L (<= 1048576, default 65536)] [--channels H (default 8)]\n"
    "                      [--state N (even, default 64)] [--param diag|dplr] [--threads T]\n"
    "                      (H and N at most what fits in physical memory)";

// About the most bytes a run holds at once (within 10 % of the peak resident size measured from
// 70 MB to 2.2 GB, both parameterisations): the layer's parameters plus the largest of its three
// phases. Scratch is per task (a channel, or a tile of 8 or 16 channels), one task per thread at a
// time. In double: the sizes may be anything up to 2^63, whose products would overflow an Index.
double run_bytes(Index L_, Index H_, Index N_, bool dplr, int threads) {
  const double L = double(L_), H = double(H_), N = double(N_), M = N / 2;
  const double f = sizeof(float), c = sizeof(std::complex<float>);
  const auto per_task = [&](double tasks, double bytes) {
    return std::min(double(threads), tasks) * bytes;
  };
  const double params = H * (3 * M * c + (dplr ? M * c : 0) + 2 * f);  // Lambda, B, C, (P), dt, D
  const double signals = 3 * L * H * f;                                // u, y_conv, y_rec
  // Building the layer: DPLR diagonalises N x N HiPPO matrices (64 N^2 bytes at the peak).
  const double build = dplr ? 64 * N * N : 64 * M;
  // Convolution mode: K, then the kernel's scratch (DPLR: C~ and N x N doubles per channel;
  // diagonal: the Vandermonde powers) or the FFT convolution's (per tile of 8 channels: buffers,
  // spectra and its plans' twiddles, 2n of them as measured).
  const double n = double(ssmkit::cpu::fft_conv_length(L_));
  const double kernel =
      dplr ? H * M * c + per_task(H, 40 * N * N + 64 * M + 24 * L) : per_task(H, 1056 * M);
  const double fft = per_task(std::ceil(H / 8), 8 * n * f + 9 * (n / 2 + 1) * c + 2 * n * c);
  const double conv = signals + L * H * f + std::max(kernel, fft);
  // Recurrent mode: the discretised state (DPLR: a float N x N per channel, made from N x N
  // doubles one channel at a time) and the recurrence's scratch.
  const double recurrent =
      signals + (dplr ? H * (N + 3) * N * f + 40 * N * N + per_task(H, N * N * f)
                      : 3 * H * M * c + per_task(std::ceil(H / 16), 512 * M));
  return params + std::max({build, conv, recurrent});
}

// The largest v in [lo, hi] (in steps of `step` from lo) with fits(v), given fits(lo) and
// !fits(hi).
template <class Fits>
Index largest_fitting(Index lo, Index hi, Index step, Fits&& fits) {
  while (hi - lo > step) {
    const Index mid = lo + (hi - lo) / step / 2 * step;
    (fits(mid) ? lo : hi) = mid;
  }
  return lo;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Refuses a --state or --channels whose buffers (run_bytes) exceed the machine's memory, or 2^63
// bytes where it is unknown, naming the largest that fits; --length has its own bound.
void check_memory(Index L, Index H, Index N, const std::string& param, int threads) {
  const double memory = physical_memory_bytes();
  const auto fits = [&](Index h, Index n) {
    return run_bytes(L, h, n, param == "dplr", threads) <= (memory > 0 ? memory : 0x1p63);
  };
  if (fits(H, N))
    return;
  char where[64] = "2^63 bytes";
  if (memory > 0)
    std::snprintf(where, sizeof where, "this machine's %.1f GiB of memory", memory / 0x1p30);
  const std::string at = "--length " + std::to_string(L);
  if (!fits(1, 2))
    throw UsageError("--length: " + std::to_string(L) + " needs more than " + where +
                     " even at --channels 1 --state 2");
  if (!fits(1, N)) {
    const Index most = largest_fitting(2, N, 2, [&](Index n) { return fits(1, n); });
    throw UsageError("--state: " + std::to_string(N) + " is too large: at most " +
                     std::to_string(most) + " fits in " + where + " (at " + at +
                     " --channels 1 --param " + param + ")");
  }
  const Index most = largest_fitting(1, H, 1, [&](Index h) { return fits(h, N); });
  throw UsageError("--channels: " + std::to_string(H) + " is too many: at most " +
                   std::to_string(most) + " fit in " + where + " (at " + at + " --state " +
                   std::to_string(N) + " --param " + param + ")");
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
  check_memory(L, H, N, param, max_threads());

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
