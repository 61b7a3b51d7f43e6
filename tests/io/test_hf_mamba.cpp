// HF Mamba checkpoints: a sharded bfloat16 MambaForCausalLM saved by transformers, a single-file
// checkpoint written here, and corrupted configs, indexes and weights, each an ssmkit::Error.
#include "io_test_util.hpp"
#include "testing.hpp"

#include <ssmkit/io/hf_mamba.hpp>
#include <ssmkit/io/safetensors.hpp>

#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

namespace ssmkit {
namespace {

namespace fs = std::filesystem;
using io::HfMambaCheckpoint;
using io::MambaConfig;
using testing::TempDir;

const std::string kData = std::string(SSMKIT_TEST_DATA_DIR) + "/io/";

void expect_config(const MambaConfig& c, const nlohmann::json& ref) {
  EXPECT_EQ(c.d_model, ref["d_model"].get<Index>());
  EXPECT_EQ(c.n_layer, ref["n_layer"].get<Index>());
  EXPECT_EQ(c.vocab_size, ref["vocab_size"].get<Index>());
  EXPECT_EQ(c.d_state, ref["d_state"].get<Index>());
  EXPECT_EQ(c.expand, ref["expand"].get<Index>());
  EXPECT_EQ(c.d_inner, ref["d_inner"].get<Index>());
  EXPECT_EQ(c.d_conv, ref["d_conv"].get<Index>());
  EXPECT_EQ(c.dt_rank, ref["dt_rank"].get<Index>());
  EXPECT_EQ(c.use_bias, ref["use_bias"].get<bool>());
  EXPECT_EQ(c.use_conv_bias, ref["use_conv_bias"].get<bool>());
  EXPECT_EQ(c.norm_eps, ref["norm_eps"].get<double>());
  EXPECT_EQ(c.tie_word_embeddings, ref["tie_word_embeddings"].get<bool>());
}

/// Sum and sum of squares of tensor `name` loaded as double (dispatching on its rank).
std::pair<double, double> sums(const HfMambaCheckpoint& ck, const std::string& name) {
  const auto& shape = ck.info(name).shape;
  const auto add = [](const auto& t) {
    double s = 0, s2 = 0;
    for (Index i = 0; i < t.numel(); ++i) {
      s += t.data()[i];
      s2 += t.data()[i] * t.data()[i];
    }
    return std::make_pair(s, s2);
  };
  switch (shape.size()) {
    case 1:
      return add(ck.load<double, 1>(name, {shape[0]}));
    case 2:
      return add(ck.load<double, 2>(name, {shape[0], shape[1]}));
    default:
      return add(ck.load<double, 3>(name, {shape[0], shape[1], shape[2]}));
  }
}

// tests/data/io/tiny_sharded: MambaForCausalLM (untied, biases, bf16) saved by transformers in four
// shards; tiny_sharded.json: the config values transformers derived and every tensor's sums.
TEST(HfMamba, ReadsAShardedCheckpointSavedByTransformers) {
  const auto ref = io::read_json_file(kData + "tiny_sharded.json");
  const auto ck = HfMambaCheckpoint::open(kData + "tiny_sharded");
  expect_config(ck.config(), ref["config"]);
  EXPECT_EQ(ck.lm_head_name(), "lm_head.weight");

  // Our list of names and shapes is exactly transformers' state_dict.
  const auto expected = io::hf_mamba_tensor_shapes(ck.config());
  ASSERT_EQ(expected.size(), ref["tensors"].size());
  for (const auto& [name, shape] : expected) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(ref["tensors"].contains(name));
    EXPECT_EQ(shape, ref["tensors"][name]["shape"].get<std::vector<Index>>());
    ASSERT_TRUE(ck.has(name));
    EXPECT_EQ(ck.info(name).dtype, DType::BF16);
    const auto [s, s2] = sums(ck, name);
    const double want_s2 = ref["tensors"][name]["sum_sq"].get<double>();
    EXPECT_NEAR(s, ref["tensors"][name]["sum"].get<double>(), 1e-12 * (1 + want_s2));
    EXPECT_NEAR(s2, want_s2, 1e-12 * want_s2);
  }
  // Layer 1's tensors come from a later shard than the embedding.
  EXPECT_NE(&ck.file_of(io::kHfEmbeddings), &ck.file_of(io::MambaLayerNames(1).out_proj_weight));
}

TEST(HfMamba, MinimalConfigTakesTransformersDefaults) {
  const auto ref = io::read_json_file(kData + "tiny_sharded.json")["minimal_config"];
  expect_config(MambaConfig::from_json(ref["json"], "minimal"), ref["derived"]);
}

/// Writes config.json (`config`) and model.safetensors holding every tensor of `c` as fresh
/// random T, plus `extra` tensors; returns the values written, by name.
template <class T>
std::map<std::string, std::vector<float>> write_checkpoint(const fs::path& dir,
                                                           const nlohmann::json& config,
                                                           const MambaConfig& c,
                                                           const io::HfTensorShapes& extra = {}) {
  testing::write_text((dir / "config.json").string(), config.dump(2));
  io::SafetensorsWriter w;
  std::map<std::string, std::vector<float>> values;
  std::uint64_t seed = 100;
  io::HfTensorShapes all = io::hf_mamba_tensor_shapes(c);
  all.insert(all.end(), extra.begin(), extra.end());
  for (const auto& [name, shape] : all) {
    Index n = 1;
    for (Index s : shape)
      n *= s;
    const auto v = testing::random_vector<T>(static_cast<std::size_t>(n), seed++);
    for (const T& x : v)
      values[name].push_back(static_cast<float>(x));
    if (shape.size() == 1)
      w.add(name, TensorView<const T, 1>(v.data(), {shape[0]}));
    else if (shape.size() == 2)
      w.add(name, TensorView<const T, 2>(v.data(), {shape[0], shape[1]}));
    else
      w.add(name, TensorView<const T, 3>(v.data(), {shape[0], shape[1], shape[2]}));
  }
  w.write((dir / "model.safetensors").string());
  return values;
}

nlohmann::json tied_config() {
  return {{"model_type", "mamba"},
          {"hidden_size", 40},
          {"num_hidden_layers", 2},
          {"vocab_size", 50},
          {"state_size", 4},
          {"expand", 2},
          {"conv_kernel", 3},
          {"time_step_rank", "auto"},
          {"use_bias", false},
          {"use_conv_bias", false},
          {"layer_norm_epsilon", 1e-6},
          {"tie_word_embeddings", true}};
}

TEST(HfMamba, SingleFileTiedCheckpointConvertsOnLoad) {
  TempDir dir;
  const auto config = tied_config();
  const MambaConfig c = MambaConfig::from_json(config, "tied");
  EXPECT_EQ(c.dt_rank, 3);  // "auto": ceil(40 / 16)
  const auto values = write_checkpoint<Eigen::half>(dir.path(), config, c);
  const auto ck = HfMambaCheckpoint::open(dir.path().string());
  EXPECT_EQ(ck.lm_head_name(), io::kHfEmbeddings);
  EXPECT_FALSE(ck.has(io::kHfLmHead));
  EXPECT_FALSE(ck.has(io::MambaLayerNames(0).in_proj_bias));
  const io::MambaLayerNames l1(1);
  const auto x_proj = ck.load<float, 2>(l1.x_proj_weight, {c.dt_rank + 2 * c.d_state, c.d_inner});
  const auto& ref = values.at(l1.x_proj_weight);
  EXPECT_EQ(testing::rel_error(x_proj.data(), ref.data(), x_proj.numel()), 0.0);
  const auto conv = ck.load<double, 3>(l1.conv1d_weight, {c.d_inner, 1, c.d_conv});
  EXPECT_EQ(testing::rel_error(conv.data(), values.at(l1.conv1d_weight).data(), conv.numel()), 0.0);
  SSMKIT_EXPECT_ERROR((ck.load<float, 2>(l1.A_log, {c.d_inner, c.d_state + 1})), l1.A_log, "shape",
                      "(80, 5)", "(80, 4)");
  SSMKIT_EXPECT_ERROR((ck.load<float, 1>("backbone.layers.2.mixer.D", {c.d_inner})),
                      "backbone.layers.2.mixer.D", "missing");
}

TEST(HfMamba, StoredIntermediateSizeSizesTheMixer) {
  // transformers sets the stored keys over its derived expand * hidden_size (80 here).
  auto j = tied_config();
  EXPECT_EQ(MambaConfig::from_json(j, "cfg.json").d_inner, 80);
  j["intermediate_size"] = 72;
  EXPECT_EQ(MambaConfig::from_json(j, "cfg.json").d_inner, 72);
  j["expand"] = 1 << 20;  // no longer multiplied out, so no longer out of range
  EXPECT_EQ(MambaConfig::from_json(j, "cfg.json").d_inner, 72);
}

// ---- corrupted configs: each names the key ----
struct BadConfig {
  std::string kind;
  nlohmann::json patch;  ///< merged into the valid config; null values remove the key
  std::vector<std::string> needles;
};

void PrintTo(const BadConfig& c, std::ostream* os) {
  *os << c.kind;
}

class CorruptConfig : public ::testing::TestWithParam<BadConfig> {};

TEST_P(CorruptConfig, NamesTheKey) {
  nlohmann::json j = tied_config();
  j.merge_patch(GetParam().patch);
  const std::vector<std::string>& needles = GetParam().needles;
  try {
    MambaConfig::from_json(j, "cfg.json");
    ADD_FAILURE() << "accepted " << j.dump();
  } catch (const Error& e) {
    for (const auto& needle : needles)
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cfg.json"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, CorruptConfig,
    ::testing::Values(
        BadConfig{"missing_hidden_size", {{"hidden_size", nullptr}}, {"'hidden_size'", "missing"}},
        BadConfig{"missing_num_hidden_layers",
                  {{"num_hidden_layers", nullptr}},
                  {"'num_hidden_layers'", "missing"}},
        BadConfig{"missing_vocab_size", {{"vocab_size", nullptr}}, {"'vocab_size'", "missing"}},
        BadConfig{"hidden_size_string", {{"hidden_size", "40"}}, {"'hidden_size'", "an integer"}},
        BadConfig{"hidden_size_float", {{"hidden_size", 40.0}}, {"'hidden_size'", "an integer"}},
        BadConfig{"negative_state_size", {{"state_size", -4}}, {"'state_size'", "[1, 2^31 - 1]"}},
        BadConfig{"zero_layers", {{"num_hidden_layers", 0}}, {"'num_hidden_layers'", "got 0"}},
        BadConfig{"huge_vocab", {{"vocab_size", 1ll << 40}}, {"'vocab_size'", "[1, 2^31 - 1]"}},
        BadConfig{"boolean_conv_kernel", {{"conv_kernel", true}}, {"'conv_kernel'", "an integer"}},
        BadConfig{"fractional_expand", {{"expand", 2.5}}, {"'expand'", "an integer"}},
        BadConfig{"huge_expand_times_hidden_size",
                  {{"expand", 1 << 20}, {"hidden_size", 1 << 20}},
                  {"'expand'", "hidden_size (d_inner)", "got 1099511627776"}},
        BadConfig{
            "zero_intermediate_size", {{"intermediate_size", 0}}, {"'intermediate_size'", "got 0"}},
        BadConfig{"time_step_rank_word", {{"time_step_rank", "big"}}, {"'time_step_rank'", "auto"}},
        BadConfig{"time_step_rank_zero", {{"time_step_rank", 0}}, {"'time_step_rank'"}},
        BadConfig{"use_bias_integer", {{"use_bias", 1}}, {"'use_bias'", "a boolean"}},
        BadConfig{"use_conv_bias_string", {{"use_conv_bias", "true"}}, {"'use_conv_bias'"}},
        BadConfig{"tie_word_embeddings_null_object",
                  {{"tie_word_embeddings", nlohmann::json::object()}},
                  {"'tie_word_embeddings'", "a boolean"}},
        BadConfig{"epsilon_string", {{"layer_norm_epsilon", "1e-5"}}, {"'layer_norm_epsilon'"}},
        BadConfig{"epsilon_negative", {{"layer_norm_epsilon", -1e-5}}, {"'layer_norm_epsilon'"}},
        BadConfig{"model_type_mamba2", {{"model_type", "mamba2"}}, {"'model_type'", "mamba2"}},
        BadConfig{"hidden_act_gelu", {{"hidden_act", "gelu"}}, {"'hidden_act'", "gelu"}}),
    [](const auto& info) { return info.param.kind; });

TEST(CorruptConfigFile, NotAnObjectNotJsonOrAbsent) {
  TempDir dir;
  SSMKIT_EXPECT_ERROR(MambaConfig::from_json(nlohmann::json::array({1, 2}), "arr"), "arr",
                      "a JSON object");
  testing::write_text(dir.file("config.json"), "{\"hidden_size\": 40,");
  SSMKIT_EXPECT_ERROR(MambaConfig::load(dir.file("config.json")), "config.json", "valid JSON");
  SSMKIT_EXPECT_ERROR(MambaConfig::load(dir.file("absent.json")), "absent.json", "readable");
}

// ---- corrupted checkpoint directories ----

/// A copy of the transformers sharded checkpoint in a scratch directory.
struct ShardedCopy {
  TempDir dir;
  ShardedCopy() { fs::copy(kData + "tiny_sharded", dir.path(), fs::copy_options::recursive); }
  std::string index_path() const { return dir.file("model.safetensors.index.json"); }
  nlohmann::json index() const { return io::read_json_file(index_path()); }
  void set_index(const nlohmann::json& j) const { testing::write_text(index_path(), j.dump()); }
  std::string path() const { return dir.path().string(); }
};

TEST(CorruptCheckpoint, TheShardedCopyOpens) {
  ShardedCopy copy;
  EXPECT_EQ(HfMambaCheckpoint::open(copy.path()).config().n_layer, 2);
}

TEST(CorruptCheckpoint, IndexPointsToAMissingShard) {
  ShardedCopy copy;
  fs::remove(copy.dir.file("model-00003-of-00004.safetensors"));
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(copy.path()), "model-00003-of-00004.safetensors",
                      "readable");
}

TEST(CorruptCheckpoint, IndexMapsATensorToTheWrongShard) {
  ShardedCopy copy;
  auto j = copy.index();
  j["weight_map"][io::kHfNormF] = "model-00001-of-00004.safetensors";
  copy.set_index(j);
  const auto has_norm_f =
      io::SafetensorsFile::open(copy.dir.file("model-00001-of-00004.safetensors"))
          .contains(io::kHfNormF);
  ASSERT_FALSE(has_norm_f);
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(copy.path()), "backbone.norm_f.weight",
                      "present in model-00001-of-00004.safetensors");
}

TEST(CorruptCheckpoint, IndexShardOutsideTheDirectory) {
  ShardedCopy copy;
  auto j = copy.index();
  j["weight_map"][io::kHfNormF] = "../model-00004-of-00004.safetensors";
  copy.set_index(j);
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(copy.path()), "weight_map['backbone.norm_f.weight']",
                      "inside the checkpoint directory");
}

TEST(CorruptCheckpoint, IndexWithoutAWeightMapObject) {
  ShardedCopy copy;
  copy.set_index({{"weight_map", {"model-00001-of-00004.safetensors"}}});
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(copy.path()), "index.json", "\"weight_map\" object");
  copy.set_index({{"weight_map", {{io::kHfNormF, 4}}}});
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(copy.path()), "backbone.norm_f.weight",
                      "a file name string");
  testing::write_text(copy.index_path(), "{\"weight_map\": {\"a\": \"b\", \"a\": \"c\"}}");
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(copy.path()), "index.json", "'a' twice");
}

TEST(CorruptCheckpoint, IndexOmitsARequiredTensor) {
  ShardedCopy copy;
  auto j = copy.index();
  j["weight_map"].erase(io::MambaLayerNames(1).x_proj_weight);
  copy.set_index(j);
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(copy.path()), "backbone.layers.1.mixer.x_proj.weight",
                      "missing");
}

TEST(CorruptCheckpoint, TruncatedShard) {
  ShardedCopy copy;
  const std::string shard = copy.dir.file("model-00002-of-00004.safetensors");
  auto bytes = testing::read_bytes(shard);
  bytes.resize(bytes.size() - 100);
  testing::write_bytes(shard, bytes);
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(copy.path()), "model-00002-of-00004.safetensors",
                      "data_offsets end");
}

TEST(CorruptCheckpoint, MissingPieces) {
  TempDir dir;
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(dir.file("nope")), "nope", "a directory");
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(dir.path().string()), "config.json", "readable");
  testing::write_text(dir.file("config.json"), tied_config().dump());
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(dir.path().string()),
                      "model.safetensors or model.safetensors.index.json", "neither");
}

/// Writes a single-file checkpoint of tied_config() patched by `patch` with the tensors of
/// `tensors_of` (a config that may differ), then expects open to fail with `needles`.
void expect_bad_single_file(const nlohmann::json& patch, const MambaConfig& tensors_of,
                            const std::vector<std::string>& needles) {
  TempDir dir;
  nlohmann::json config = tied_config();
  config.merge_patch(patch);
  write_checkpoint<float>(dir.path(), config, tensors_of);
  try {
    HfMambaCheckpoint::open(dir.path().string());
    ADD_FAILURE() << "opened";
  } catch (const Error& e) {
    for (const auto& needle : needles)
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(CorruptCheckpoint, MisshapedTensor) {
  MambaConfig other = MambaConfig::from_json(tied_config(), "c");
  other.d_state = 5;  // A_log, x_proj sized for N = 5, config says 4
  expect_bad_single_file(nlohmann::json::object(), other, {"backbone.layers.0.mixer.", "shape"});
}

TEST(CorruptCheckpoint, UntiedWithoutLmHead) {
  const MambaConfig tied = MambaConfig::from_json(tied_config(), "c");
  expect_bad_single_file({{"tie_word_embeddings", false}}, tied, {"lm_head.weight", "missing"});
}

TEST(CorruptCheckpoint, BiasesDeclaredButAbsent) {
  const MambaConfig no_bias = MambaConfig::from_json(tied_config(), "c");
  expect_bad_single_file({{"use_bias", true}}, no_bias, {"in_proj.bias", "missing"});
  expect_bad_single_file({{"use_conv_bias", true}}, no_bias, {"conv1d.bias", "missing"});
}

// A tensor the config does not name means the config and the weights disagree: open throws naming
// it, unless the caller accepts such tensors (then they are listed). lm_head.weight beside tied
// embeddings is what transformers writes for some models and ignores, so it is no such tensor.
TEST(CorruptCheckpoint, TensorsTheConfigDoesNotName) {
  const nlohmann::json config = tied_config();
  const MambaConfig c = MambaConfig::from_json(config, "c");
  MambaConfig three_layers = c, biased = c;
  three_layers.n_layer = 3;
  biased.use_bias = true;
  TempDir layers, biases, head;
  write_checkpoint<float>(layers.path(), config, three_layers);
  write_checkpoint<float>(biases.path(), config, biased);
  write_checkpoint<float>(head.path(), config, c, {{io::kHfLmHead, {c.vocab_size, c.d_model}}});

  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(layers.path().string()),
                      "'backbone.layers.2.mixer.A_log'", "num_hidden_layers 2",
                      "(9 such; HfOpenOptions::allow_unused_tensors");
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(biases.path().string()),
                      "'backbone.layers.0.mixer.in_proj.bias'", "use_bias false", "(4 such");
  EXPECT_TRUE(HfMambaCheckpoint::open(head.path().string()).unused_tensors().empty());

  io::HfOpenOptions allow;
  allow.allow_unused_tensors = true;
  const auto ck = HfMambaCheckpoint::open(biases.path().string(), allow);
  const std::vector<std::string> want = {
      "backbone.layers.0.mixer.in_proj.bias", "backbone.layers.0.mixer.out_proj.bias",
      "backbone.layers.1.mixer.in_proj.bias", "backbone.layers.1.mixer.out_proj.bias"};
  EXPECT_EQ(ck.unused_tensors(), want);
  EXPECT_EQ(HfMambaCheckpoint::open(layers.path().string(), allow).unused_tensors().size(), 9u);
}

// The tensors are checked layer by layer: a config claiming 2^31 - 1 layers fails at the first
// layer the file lacks, without first listing the names of every layer (which took all memory).
TEST(CorruptCheckpoint, HugeLayerCountFailsAtTheFirstMissingLayer) {
  TempDir dir;
  nlohmann::json config = tied_config();
  write_checkpoint<float>(dir.path(), config, MambaConfig::from_json(config, "c"));
  config["num_hidden_layers"] = 2147483647;
  testing::write_text(dir.file("config.json"), config.dump());
  const auto start = std::chrono::steady_clock::now();
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(dir.path().string()),
                      "'backbone.layers.2.norm.weight'", "num_hidden_layers 2147483647", "missing");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

// What is at the path, or why it cannot be looked at, is reported as an ssmkit::Error (not a
// std::filesystem::filesystem_error) that says so.
TEST(CorruptCheckpoint, PathsThatAreNotWhatTheyShouldBe) {
  TempDir dir;
  testing::write_text(dir.file("file"), "x");
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(dir.file("file")), "a directory",
                      "got a regular file");
  fs::create_symlink("loop", dir.path() / "loop");
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(dir.file("loop")), "loop", "a directory");
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(std::string(5000, 'a')), "a directory");

  fs::create_directories(dir.path() / "ck" / "config.json");
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(dir.file("ck")), "config.json", "a regular file",
                      "got a directory");
  fs::remove(dir.path() / "ck" / "config.json");
  ASSERT_EQ(::mkfifo(dir.file("ck/config.json").c_str(), 0600), 0) << std::strerror(errno);
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(dir.file("ck")), "config.json", "got a FIFO");
  fs::remove(dir.path() / "ck" / "config.json");
  testing::write_text(dir.file("ck/config.json"), tied_config().dump());
  // A link to itself: reported as the weights file it is, not as absent.
  fs::create_symlink("model.safetensors", dir.path() / "ck" / "model.safetensors");
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(dir.file("ck")), "model.safetensors", "readable");
}

TEST(CorruptCheckpoint, IntegerWeights) {
  TempDir dir;
  const auto config = tied_config();
  const MambaConfig c = MambaConfig::from_json(config, "c");
  write_checkpoint<std::int32_t>(dir.path(), config, c);
  SSMKIT_EXPECT_ERROR(HfMambaCheckpoint::open(dir.path().string()), "dtype",
                      "F64, F32, F16 or BF16", "got I32");
}

}  // namespace
}  // namespace ssmkit
