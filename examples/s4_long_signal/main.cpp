// Runs an S4 layer over a long signal in convolution mode and in recurrent mode and prints how
// well the two agree and how long each took.
//   s4_long_signal [--length L] [--channels H] [--state N] [--param diag|dplr] [--threads T]
#include <ssmkit/nn/s4_layer.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

[[noreturn]] void usage(const char* prog) {
  std::fprintf(stderr,
               "usage: %s [--length L (<= 1048576, default 65536)] [--channels H (default 8)]\n"
               "          [--state N (even, default 64)] [--param diag|dplr] [--threads T]\n",
               prog);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ssmkit;
  Index L = 65536, H = 8, N = 64;
  std::string param = "diag";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc)
      usage(argv[0]);
    const char* v = argv[++i];
    if (a == "--length")
      L = std::atoll(v);
    else if (a == "--channels")
      H = std::atoll(v);
    else if (a == "--state")
      N = std::atoll(v);
    else if (a == "--param")
      param = v;
    else if (a == "--threads")
      set_num_threads(std::atoi(v));
    else
      usage(argv[0]);
  }
  if (L < 1 || L > (Index{1} << 20) || (param != "diag" && param != "dplr"))
    usage(argv[0]);

  try {
    nn::S4Config cfg;
    cfg.channels = H;
    cfg.state_size = N;
    cfg.param = param == "dplr" ? nn::S4Parameterization::Dplr : nn::S4Parameterization::Diagonal;
    cfg.discretization =
        param == "dplr" ? math::Discretization::Bilinear : math::Discretization::ZOH;
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
    std::printf("S4 layer (%s, float): H = %lld channels, N = %lld, L = %lld, %d threads\n",
                param.c_str(), static_cast<long long>(H), static_cast<long long>(N),
                static_cast<long long>(L), max_threads());
    std::printf("  convolution mode: %9.3f s  (kernel + FFT convolution)\n", t_conv);
    std::printf("  recurrent mode:   %9.3f s  (%.1f ns per sample and channel)\n", t_rec,
                1e9 * t_rec / double(L * H));
    std::printf("  agreement: relative L2 %.3e, max abs difference %.3e\n", std::sqrt(num / den),
                worst);
    return std::isfinite(num) && std::sqrt(num / den) < 1e-3 ? 0 : 1;
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
