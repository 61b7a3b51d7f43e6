// The hyper-parameters of a Mamba language model, read from a Hugging Face `MambaConfig`
// config.json (transformers' configuration_mamba.py: its key names, defaults and derived sizes).
#pragma once

#include "ssmkit/core/error.hpp"
#include "ssmkit/core/tensor_view.hpp"
#include "ssmkit/io/json_document.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

namespace ssmkit::io {

struct MambaConfig {
  Index d_model = 0;                ///< hidden_size
  Index n_layer = 0;                ///< num_hidden_layers
  Index vocab_size = 0;             ///< vocab_size (rows of the embedding)
  Index d_state = 16;               ///< state_size (N)
  Index expand = 2;                 ///< expand
  Index d_inner = 0;                ///< intermediate_size if stored, else expand * d_model
  Index d_conv = 4;                 ///< conv_kernel
  Index dt_rank = 0;                ///< time_step_rank; "auto" = ceil(d_model / 16)
  bool use_bias = false;            ///< biases of in_proj and out_proj
  bool use_conv_bias = true;        ///< bias of conv1d
  double norm_eps = 1e-5;           ///< layer_norm_epsilon of every RMSNorm
  bool tie_word_embeddings = true;  ///< lm_head shares the embedding

  /// Reads the JSON object `j`; `source` names it in errors. hidden_size, num_hidden_layers and
  /// vocab_size are required, the rest default as in transformers. Throws ssmkit::Error naming the
  /// key for a missing or mistyped key, a non-positive size, or inconsistent sizes.
  static MambaConfig from_json(const nlohmann::json& j, const std::string& source) {
    SSMKIT_CHECK(j.is_object(), source, "config", "a JSON object", j.type_name());
    if (j.contains("model_type"))  // mamba2 and others share key names but not the layout
      SSMKIT_CHECK(j["model_type"] == "mamba", key_arg(source, "model_type"), "value", "\"mamba\"",
                   j["model_type"].dump());
    if (j.contains("hidden_act"))  // the mixer applies SiLU
      SSMKIT_CHECK(j["hidden_act"] == "silu", key_arg(source, "hidden_act"), "value", "\"silu\"",
                   j["hidden_act"].dump());
    MambaConfig c;
    c.d_model = positive(j, source, "hidden_size", true, 0);
    c.n_layer = positive(j, source, "num_hidden_layers", true, 0);
    c.vocab_size = positive(j, source, "vocab_size", true, 0);
    c.d_state = positive(j, source, "state_size", false, c.d_state);
    c.expand = positive(j, source, "expand", false, c.expand);
    c.d_conv = positive(j, source, "conv_kernel", false, c.d_conv);
    if (j.contains("intermediate_size")) {
      // transformers derives intermediate_size from expand, then sets the stored keys over it:
      // a stored value sizes the mixer even where it differs from expand * hidden_size.
      c.d_inner = positive(j, source, "intermediate_size", false, 0);
    } else {
      // Both factors are below 2^31, so the product cannot overflow int64; it must still fit
      // int32 as every size does.
      c.d_inner = c.expand * c.d_model;
      SSMKIT_CHECK(c.d_inner <= Index{kMaxSize}, key_arg(source, "expand"),
                   "value * hidden_size (d_inner)", "in [1, 2^31 - 1]", c.d_inner);
    }
    if (j.contains("time_step_rank") && j["time_step_rank"].is_string()) {
      SSMKIT_CHECK(j["time_step_rank"] == "auto", key_arg(source, "time_step_rank"), "value",
                   "\"auto\" or a positive integer", j["time_step_rank"].dump());
      c.dt_rank = (c.d_model + 15) / 16;
    } else {
      c.dt_rank = positive(j, source, "time_step_rank", false, (c.d_model + 15) / 16);
    }
    c.use_bias = boolean(j, source, "use_bias", c.use_bias);
    c.use_conv_bias = boolean(j, source, "use_conv_bias", c.use_conv_bias);
    c.tie_word_embeddings = boolean(j, source, "tie_word_embeddings", c.tie_word_embeddings);
    if (j.contains("layer_norm_epsilon")) {
      const auto& v = j["layer_norm_epsilon"];
      const std::string arg = key_arg(source, "layer_norm_epsilon");
      SSMKIT_CHECK(v.is_number(), arg, "type", "a number", v.type_name());
      c.norm_eps = v.get<double>();
      SSMKIT_CHECK(std::isfinite(c.norm_eps) && c.norm_eps > 0, arg, "value", "finite and > 0",
                   c.norm_eps);
    }
    return c;
  }

  /// Reads and validates `path` (a config.json).
  static MambaConfig load(const std::string& path) { return from_json(read_json_file(path), path); }

 private:
  // Every size fits in int32, so that products of two (weights' element counts) fit in int64.
  static constexpr std::uint64_t kMaxSize = (std::uint64_t{1} << 31) - 1;

  static std::string key_arg(const std::string& source, const char* key) {
    return source + ": key '" + key + "'";
  }

  static Index positive(const nlohmann::json& j, const std::string& source, const char* key,
                        bool required, Index fallback) {
    const std::string arg = key_arg(source, key);
    if (!j.contains(key)) {
      SSMKIT_CHECK(!required, arg, "presence", "required", "missing");
      return fallback;
    }
    const auto& v = j[key];
    SSMKIT_CHECK(v.is_number_integer(), arg, "type", "an integer", v.type_name());
    // Parsed text stores non-negative integers as unsigned, built JSON may hold them as signed.
    const bool in_range =
        v.is_number_unsigned()
            ? v.get<std::uint64_t>() >= 1 && v.get<std::uint64_t>() <= kMaxSize
            : v.get<std::int64_t>() >= 1 && v.get<std::int64_t>() <= Index{kMaxSize};
    SSMKIT_CHECK(in_range, arg, "value", "in [1, 2^31 - 1]", v.dump());
    return v.get<Index>();
  }

  static bool boolean(const nlohmann::json& j, const std::string& source, const char* key,
                      bool fallback) {
    if (!j.contains(key))
      return fallback;
    const auto& v = j[key];
    SSMKIT_CHECK(v.is_boolean(), key_arg(source, key), "type", "a boolean", v.type_name());
    return v.get<bool>();
  }
};

}  // namespace ssmkit::io
