// Initial weights for training a Mamba LM from scratch, as mamba_ssm (Gu & Dao, arXiv 2312.00752)
// draws them: S4D-Real A_log = log(n+1), D = 1, dt_proj.bias = softplus⁻¹(Δ) with Δ log-uniform in
// [dt_min, dt_max], dt_proj.weight U(±dt_rank^−½), other linears and conv1d PyTorch's default
// U(±fan_in^−½) with zero linear biases, out_proj divided by sqrt(n_layer), embedding N(0, 0.02²).
#pragma once

#include "ssmkit/nn/mamba_lm.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>

namespace ssmkit::nn {

struct MambaInitOptions {
  double dt_min = 1e-3, dt_max = 1e-1, dt_floor = 1e-4;
  double embedding_std = 0.02;
  bool in_proj_bias = false, conv_bias = true,
       out_proj_bias = false;  ///< HF use_bias, use_conv_bias
};

/// Fresh weights for `config`, a deterministic function of `seed` (std::mt19937_64 draws).
template <class T>
MambaLMWeights<T> init_mamba_lm(const MambaLMConfig& config, std::uint64_t seed,
                                const MambaInitOptions& o = {}) {
  config.validate();
  SSMKIT_CHECK(o.dt_min > 0 && o.dt_max >= o.dt_min && std::isfinite(o.dt_max),
               "options.dt_min/dt_max", "values", "0 < dt_min <= dt_max, finite",
               std::to_string(o.dt_min) + ", " + std::to_string(o.dt_max));
  SSMKIT_CHECK(std::isfinite(o.dt_floor) && o.dt_floor >= 0, "options.dt_floor", "value",
               "finite and >= 0", o.dt_floor);
  SSMKIT_CHECK(std::isfinite(o.embedding_std) && o.embedding_std >= 0, "options.embedding_std",
               "value", "finite and >= 0", o.embedding_std);
  const MambaBlockConfig& b = config.block;
  const Index V = config.vocab_size, dm = b.d_model, di = b.d_inner, N = b.d_state;
  const Index R = b.dt_rank, K = b.d_conv;
  std::mt19937_64 rng(seed);
  auto unit = [&] { return std::uniform_real_distribution<double>(0.0, 1.0)(rng); };
  auto uniform = [&](auto& t, double bound) {
    for (Index i = 0; i < t.numel(); ++i)
      t.data()[i] = static_cast<T>((2 * unit() - 1) * bound);
  };
  auto fan_in = [](Index n) { return 1.0 / std::sqrt(static_cast<double>(n)); };
  auto ones = [](Index n) {
    HostTensor<T, 1> t({n});
    t.fill(T(1));
    return t;
  };

  MambaLMWeights<T> w;
  w.embedding = HostTensor<T, 2>({V, dm});
  std::normal_distribution<double> normal(0.0, o.embedding_std);
  for (Index i = 0; i < w.embedding.numel(); ++i)
    w.embedding.data()[i] = static_cast<T>(normal(rng));
  for (Index l = 0; l < config.n_layer; ++l) {
    MambaLayerWeights<T> layer;
    layer.norm = ones(dm);
    MambaBlockWeights<T>& m = layer.mixer;
    m.in_proj_weight = HostTensor<T, 2>({2 * di, dm});
    uniform(m.in_proj_weight, fan_in(dm));
    if (o.in_proj_bias) {
      m.in_proj_bias = HostTensor<T, 1>({2 * di});
      m.in_proj_bias.fill(T(0));
    }
    m.conv1d_weight = HostTensor<T, 2>({di, K});
    uniform(m.conv1d_weight, fan_in(K));
    if (o.conv_bias) {
      m.conv1d_bias = HostTensor<T, 1>({di});
      uniform(m.conv1d_bias, fan_in(K));
    }
    m.x_proj_weight = HostTensor<T, 2>({R + 2 * N, di});
    uniform(m.x_proj_weight, fan_in(di));
    m.dt_proj_weight = HostTensor<T, 2>({di, R});
    uniform(m.dt_proj_weight, fan_in(R));
    m.dt_proj_bias = HostTensor<T, 1>({di});
    const double lo = std::log(o.dt_min), hi = std::log(o.dt_max);
    for (Index d = 0; d < di; ++d) {
      const double dt = std::max(std::exp(lo + unit() * (hi - lo)), o.dt_floor);
      m.dt_proj_bias.data()[d] = static_cast<T>(dt + std::log(-std::expm1(-dt)));
    }
    m.A_log = HostTensor<T, 2>({di, N});
    for (Index d = 0; d < di; ++d)
      for (Index n = 0; n < N; ++n)
        m.A_log.data()[d * N + n] = static_cast<T>(std::log(static_cast<double>(n + 1)));
    m.D = ones(di);
    m.out_proj_weight = HostTensor<T, 2>({dm, di});
    uniform(m.out_proj_weight,
            fan_in(di) / std::sqrt(static_cast<double>(std::max<Index>(1, config.n_layer))));
    if (o.out_proj_bias) {
      m.out_proj_bias = HostTensor<T, 1>({dm});
      m.out_proj_bias.fill(T(0));
    }
    w.layers.push_back(std::move(layer));
  }
  w.norm_f = ones(dm);
  if (!config.tie_embeddings) {
    w.lm_head = HostTensor<T, 2>({V, dm});
    uniform(w.lm_head, fan_in(dm));
  }
  return w;
}

}  // namespace ssmkit::nn
