// Shared by the nn tests: golden-file paths, loading MambaMixer goldens into block weights, and
// poisoning outputs before a module writes them.
#pragma once

#include "testing.hpp"

#include <ssmkit/io/safetensors.hpp>
#include <ssmkit/nn/mamba_block.hpp>

#include <limits>
#include <string>

namespace ssmkit::testing {

inline std::string mamba_data(const std::string& name) {
  return std::string(SSMKIT_TEST_DATA_DIR) + "/mamba/" + name;
}

template <class T, int Rank>
void poison(HostTensor<T, Rank>& t) {
  t.fill(std::numeric_limits<T>::quiet_NaN());
}

/// A MambaMixer golden (tools/make_mamba_goldens.py): the block's weights in T, its config
/// inferred from the weight shapes, and the input and output in double.
template <class T>
struct MixerGolden {
  nn::MambaBlockConfig config;
  nn::MambaBlockWeights<T> weights;
  HostTensor<double, 3> x, out;

  explicit MixerGolden(const std::string& name) {
    const auto f = io::SafetensorsFile::open(mamba_data("mixer_" + name + ".safetensors"));
    auto& w = weights;
    w.in_proj_weight = f.read_as<T, 2>("in_proj.weight");
    w.x_proj_weight = f.read_as<T, 2>("x_proj.weight");
    w.dt_proj_weight = f.read_as<T, 2>("dt_proj.weight");
    w.dt_proj_bias = f.read_as<T, 1>("dt_proj.bias");
    w.A_log = f.read_as<T, 2>("A_log");
    w.D = f.read_as<T, 1>("D");
    w.out_proj_weight = f.read_as<T, 2>("out_proj.weight");
    const auto conv = f.read_as<T, 3>("conv1d.weight");  // (d_inner, 1, d_conv)
    w.conv1d_weight = HostTensor<T, 2>({conv.size(0), conv.size(2)});
    std::copy(conv.data(), conv.data() + conv.numel(), w.conv1d_weight.data());
    if (f.contains("conv1d.bias"))
      w.conv1d_bias = f.read_as<T, 1>("conv1d.bias");
    if (f.contains("in_proj.bias"))
      w.in_proj_bias = f.read_as<T, 1>("in_proj.bias");
    if (f.contains("out_proj.bias"))
      w.out_proj_bias = f.read_as<T, 1>("out_proj.bias");
    config.d_model = w.in_proj_weight.size(1);
    config.d_inner = w.A_log.size(0);
    config.d_state = w.A_log.size(1);
    config.d_conv = w.conv1d_weight.size(1);
    config.dt_rank = w.dt_proj_weight.size(1);
    x = f.read_as<double, 3>("x");
    out = f.read_as<double, 3>("out");
  }

  nn::MambaBlockWeights<T> copy_weights() const {
    const auto& w = weights;
    return {w.in_proj_weight.clone(),  w.in_proj_bias.clone(),  w.conv1d_weight.clone(),
            w.conv1d_bias.clone(),     w.x_proj_weight.clone(), w.dt_proj_weight.clone(),
            w.dt_proj_bias.clone(),    w.A_log.clone(),         w.D.clone(),
            w.out_proj_weight.clone(), w.out_proj_bias.clone()};
  }
};

template <class T, int Rank>
HostTensor<T, Rank> cast(const HostTensor<double, Rank>& t) {
  HostTensor<T, Rank> out(t.shape());
  for (Index i = 0; i < t.numel(); ++i)
    out.data()[i] = static_cast<T>(t.data()[i]);
  return out;
}

/// A golden LM checkpoint's ids, transformers' greedy continuation and its logits.
struct LMGolden {
  HostTensor<std::int64_t, 2> input_ids, greedy;
  HostTensor<float, 3> logits;

  explicit LMGolden(const std::string& name) {
    const auto f = io::SafetensorsFile::open(mamba_data(name + "/golden.safetensors"));
    input_ids = f.read_as<std::int64_t, 2>("input_ids");
    greedy = f.read_as<std::int64_t, 2>("greedy");
    logits = f.read_as<float, 3>("logits");
  }
};

}  // namespace ssmkit::testing
