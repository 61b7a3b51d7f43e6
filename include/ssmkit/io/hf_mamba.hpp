// A Hugging Face `MambaForCausalLM` checkpoint directory: config.json plus model.safetensors, or
// shards listed by model.safetensors.index.json; the tensor names of transformers'
// modeling_mamba.py.
#pragma once

#include "ssmkit/core/error.hpp"
#include "ssmkit/core/host_tensor.hpp"
#include "ssmkit/io/hf_mamba_config.hpp"
#include "ssmkit/io/json_document.hpp"
#include "ssmkit/io/mapped_file.hpp"
#include "ssmkit/io/safetensors_file.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace ssmkit::io {

/// Names of the model-level tensors.
inline const char* const kHfEmbeddings = "backbone.embeddings.weight";  ///< (vocab, d_model)
inline const char* const kHfNormF = "backbone.norm_f.weight";           ///< (d_model)
inline const char* const kHfLmHead = "lm_head.weight";                  ///< (vocab, d_model)

/// Names of layer i's tensors, with their shapes (I = d_inner, N = d_state, R = dt_rank).
struct MambaLayerNames {
  explicit MambaLayerNames(Index i)
      : norm(prefix(i) + "norm.weight"),
        in_proj_weight(prefix(i) + "mixer.in_proj.weight"),
        in_proj_bias(prefix(i) + "mixer.in_proj.bias"),
        conv1d_weight(prefix(i) + "mixer.conv1d.weight"),
        conv1d_bias(prefix(i) + "mixer.conv1d.bias"),
        x_proj_weight(prefix(i) + "mixer.x_proj.weight"),
        dt_proj_weight(prefix(i) + "mixer.dt_proj.weight"),
        dt_proj_bias(prefix(i) + "mixer.dt_proj.bias"),
        A_log(prefix(i) + "mixer.A_log"),
        D(prefix(i) + "mixer.D"),
        out_proj_weight(prefix(i) + "mixer.out_proj.weight"),
        out_proj_bias(prefix(i) + "mixer.out_proj.bias") {}

  std::string norm;             ///< (d_model) RMSNorm weight
  std::string in_proj_weight;   ///< (2I, d_model); rows [0, I) give x, [I, 2I) give z
  std::string in_proj_bias;     ///< (2I) when use_bias
  std::string conv1d_weight;    ///< (I, 1, d_conv) depthwise
  std::string conv1d_bias;      ///< (I) when use_conv_bias
  std::string x_proj_weight;    ///< (R + 2N, I); rows give dt | B | C
  std::string dt_proj_weight;   ///< (I, R)
  std::string dt_proj_bias;     ///< (I) the δ bias of the scan
  std::string A_log;            ///< (I, N); A = -exp(A_log)
  std::string D;                ///< (I) skip
  std::string out_proj_weight;  ///< (d_model, I)
  std::string out_proj_bias;    ///< (d_model) when use_bias

 private:
  static std::string prefix(Index i) { return "backbone.layers." + std::to_string(i) + "."; }
};

/// Tensor names with their shapes.
using HfTensorShapes = std::vector<std::pair<std::string, std::vector<Index>>>;

/// The model-level tensors a checkpoint of config `c` must hold, with their shapes.
inline HfTensorShapes hf_mamba_model_tensor_shapes(const MambaConfig& c) {
  HfTensorShapes out = {{kHfEmbeddings, {c.vocab_size, c.d_model}}, {kHfNormF, {c.d_model}}};
  if (!c.tie_word_embeddings)
    out.push_back({kHfLmHead, {c.vocab_size, c.d_model}});
  return out;
}

/// The tensors of layer `i` a checkpoint of config `c` must hold, with their shapes.
inline HfTensorShapes hf_mamba_layer_tensor_shapes(const MambaConfig& c, Index i) {
  const Index I = c.d_inner, N = c.d_state, R = c.dt_rank, M = c.d_model;
  const MambaLayerNames n(i);
  HfTensorShapes out = {{n.norm, {M}},
                        {n.in_proj_weight, {2 * I, M}},
                        {n.conv1d_weight, {I, 1, c.d_conv}},
                        {n.x_proj_weight, {R + 2 * N, I}},
                        {n.dt_proj_weight, {I, R}},
                        {n.dt_proj_bias, {I}},
                        {n.A_log, {I, N}},
                        {n.D, {I}},
                        {n.out_proj_weight, {M, I}}};
  if (c.use_bias) {
    out.push_back({n.in_proj_bias, {2 * I}});
    out.push_back({n.out_proj_bias, {M}});
  }
  if (c.use_conv_bias)
    out.push_back({n.conv1d_bias, {I}});
  return out;
}

/// Every tensor a checkpoint of config `c` must hold, with its shape: 9 to 12 per layer, so a
/// config of 2^31 - 1 layers asks for more memory than there is.
inline HfTensorShapes hf_mamba_tensor_shapes(const MambaConfig& c) {
  HfTensorShapes out = hf_mamba_model_tensor_shapes(c);
  for (Index i = 0; i < c.n_layer; ++i) {
    const HfTensorShapes layer = hf_mamba_layer_tensor_shapes(c, i);
    out.insert(out.end(), layer.begin(), layer.end());
  }
  return out;
}

/// How HfMambaCheckpoint::open treats the checkpoint's tensors.
struct HfOpenOptions {
  /// Accept tensors the config does not name, as transformers does (it warns and drops them).
  /// Off, such a tensor means config.json and the weights disagree (more layers than
  /// num_hidden_layers, biases that use_bias leaves out), and open throws naming it.
  /// lm_head.weight beside tied embeddings is always accepted and ignored, as in transformers.
  bool allow_unused_tensors = false;
};

/// An opened checkpoint directory. Opening validates the config, the shard index and that every
/// tensor the config implies is present, floating-point and of the right shape, and that no other
/// tensor is there unless `options` allows it.
class HfMambaCheckpoint {
 public:
  static HfMambaCheckpoint open(const std::string& dir, const HfOpenOptions& options = {}) {
    namespace fs = std::filesystem;
    struct stat st {};
    const bool found = ::stat(dir.c_str(), &st) == 0;
    const int err = errno;
    SSMKIT_CHECK(found && S_ISDIR(st.st_mode), dir, "checkpoint", "a directory",
                 found ? detail::file_kind(st.st_mode) : std::strerror(err));
    HfMambaCheckpoint ck;
    ck.dir_ = dir;
    ck.config_ = MambaConfig::load((fs::path(dir) / "config.json").string());
    const fs::path single = fs::path(dir) / "model.safetensors";
    const fs::path index = fs::path(dir) / "model.safetensors.index.json";
    if (present(single)) {
      ck.shards_.push_back(SafetensorsFile::open(single.string()));
      for (const auto& t : ck.shards_[0].tensors())
        ck.where_.emplace(t.name, 0);
    } else {
      SSMKIT_CHECK(present(index), dir, "weights",
                   "model.safetensors or model.safetensors.index.json", "neither");
      ck.open_shards(index.string());
    }
    // Layer by layer, not from hf_mamba_tensor_shapes: a config claiming more layers than the
    // files hold then fails at the first missing tensor instead of listing every name first.
    std::set<std::string> named;
    ck.check_tensors(hf_mamba_model_tensor_shapes(ck.config_), "present in the checkpoint", named);
    const std::string layers = "present in the checkpoint (config.json: num_hidden_layers " +
                               std::to_string(ck.config_.n_layer) + ")";
    for (Index i = 0; i < ck.config_.n_layer; ++i)
      ck.check_tensors(hf_mamba_layer_tensor_shapes(ck.config_, i), layers, named);
    if (ck.config_.tie_word_embeddings)
      named.insert(kHfLmHead);
    for (const auto& entry : ck.where_)
      if (named.count(entry.first) == 0)
        ck.unused_.push_back(entry.first);
    if (!options.allow_unused_tensors && !ck.unused_.empty()) {
      const auto flag = [](bool b) { return b ? "true" : "false"; };
      ssmkit::detail::throw_check(
          ck.where(ck.unused_.front()), "tensor",
          ssmkit::detail::concat("named by config.json (num_hidden_layers ", ck.config_.n_layer,
                                 ", use_bias ", flag(ck.config_.use_bias), ", use_conv_bias ",
                                 flag(ck.config_.use_conv_bias), ")"),
          ssmkit::detail::concat("one it does not name (", ck.unused_.size(),
                                 " such; HfOpenOptions::allow_unused_tensors accepts them)"));
    }
    return ck;
  }

  const MambaConfig& config() const { return config_; }
  const std::string& directory() const { return dir_; }
  bool has(const std::string& name) const { return where_.count(name) != 0; }

  /// The tensors present that the config does not name, sorted (lm_head.weight beside tied
  /// embeddings excepted); empty unless HfOpenOptions::allow_unused_tensors was set.
  const std::vector<std::string>& unused_tensors() const { return unused_; }

  /// The header entry of tensor `name` (Error naming it when the checkpoint lacks it).
  const TensorInfo& info(const std::string& name) const { return file_of(name).info(name); }

  /// The shard holding `name`, for zero-copy views.
  const SafetensorsFile& file_of(const std::string& name) const {
    const auto it = where_.find(name);
    SSMKIT_CHECK(it != where_.end(), where(name), "tensor", "present in the checkpoint", "missing");
    return shards_[it->second];
  }

  /// Tensor `name` converted to T, after checking it has exactly `expected` shape.
  template <class T, int Rank>
  HostTensor<T, Rank> load(const std::string& name, const Shape<Rank>& expected) const {
    const std::vector<Index> want(expected.begin(), expected.end());
    SSMKIT_CHECK(info(name).shape == want, where(name), "shape", shape_text(want),
                 shape_text(info(name).shape));
    return file_of(name).read_as<T, Rank>(name);
  }

  /// The tensor the lm head multiplies by: the embedding when the config ties them (transformers
  /// then ignores any lm_head.weight), lm_head.weight otherwise.
  std::string lm_head_name() const {
    return config_.tie_word_embeddings ? kHfEmbeddings : kHfLmHead;
  }

 private:
  std::string where(const std::string& name) const { return dir_ + ": tensor '" + name + "'"; }

  /// Whether anything is at `p`, even a broken link or one it cannot stat: opening it then says
  /// what is wrong, where treating it as absent would report the wrong file.
  static bool present(const std::filesystem::path& p) {
    struct stat st {};
    return ::lstat(p.c_str(), &st) == 0 || errno != ENOENT;
  }

  /// Checks that each of `shapes` is present (`presence` says why it must be), floating-point and
  /// of its shape, and adds its name to `named`.
  void check_tensors(const HfTensorShapes& shapes, const std::string& presence,
                     std::set<std::string>& named) const {
    for (const auto& [name, shape] : shapes) {
      named.insert(name);
      SSMKIT_CHECK(has(name), where(name), "tensor", presence, "missing");
      const TensorInfo& t = info(name);
      SSMKIT_CHECK(is_floating(t.dtype), where(name), "dtype", "F64, F32, F16 or BF16", t.dtype);
      SSMKIT_CHECK(t.shape == shape, where(name), "shape", shape_text(shape), shape_text(t.shape));
    }
  }

  static std::string shape_text(const std::vector<Index>& s) {
    std::string out = "(";
    for (std::size_t d = 0; d < s.size(); ++d)
      out += (d ? ", " : "") + std::to_string(s[d]);
    return out + ")";
  }

  void open_shards(const std::string& index_path) {
    const nlohmann::json index = read_json_file(index_path);
    SSMKIT_CHECK(
        index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
        index_path, "content", "an object with a \"weight_map\" object",
        index.dump().substr(0, 80));
    std::map<std::string, std::size_t> shard_ids;
    for (const auto& [name, file] : index["weight_map"].items()) {
      const std::string arg = index_path + ": weight_map['" + name + "']";
      SSMKIT_CHECK(file.is_string(), arg, "type", "a file name string", file.type_name());
      const std::string shard = file.get<std::string>();
      // A plain file name in the directory: no path may lead outside it.
      SSMKIT_CHECK(
          !shard.empty() && shard != "." && shard != ".." && shard.find('/') == std::string::npos,
          arg, "shard", "a file name inside the checkpoint directory", shard);
      auto it = shard_ids.find(shard);
      if (it == shard_ids.end()) {
        shards_.push_back(SafetensorsFile::open((std::filesystem::path(dir_) / shard).string()));
        it = shard_ids.emplace(shard, shards_.size() - 1).first;
      }
      SSMKIT_CHECK(shards_[it->second].contains(name), arg, "tensor", "present in " + shard,
                   "missing");
      where_.emplace(name, it->second);
    }
  }

  std::string dir_;
  MambaConfig config_;
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, std::size_t> where_;
  std::vector<std::string> unused_;
};

}  // namespace ssmkit::io
