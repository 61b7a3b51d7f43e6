// Runs the mamba_generate example on the golden models: its ids against transformers' greedy
// continuations, --dump-logits against transformers' logits, sampling flags, --stop-ids, and its
// errors.
#include "io/io_test_util.hpp"
#include "nn_testing.hpp"
#include "run_program.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

using namespace ssmkit;
using namespace ssmkit::testing;

namespace {

using ExampleRun = ssmkit::testing::ProgramRun;

ExampleRun run_example(const std::string& args) {
  return ssmkit::testing::run_program(MAMBA_GENERATE, args);
}

struct Golden {
  std::vector<std::int64_t> prompt, greedy;
  HostTensor<float, 3> logits;
  std::string ids_flag() const {
    std::string s;
    for (std::size_t i = 0; i < prompt.size(); ++i)
      s += (i ? "," : "") + std::to_string(prompt[i]);
    return s;
  }
  std::string greedy_line() const { return line(greedy); }
  /// What the example prints for `ids`.
  static std::string line(const std::vector<std::int64_t>& ids) {
    std::string s;
    for (std::size_t i = 0; i < ids.size(); ++i)
      s += (i ? "," : "") + std::to_string(ids[i]);
    return s + "\n";
  }
};

Golden golden(const std::string& name, Index seq) {
  const auto f = io::SafetensorsFile::open(mamba_data(name + "/golden.safetensors"));
  const auto ids = f.read_as<std::int64_t, 2>("input_ids");
  const auto greedy = f.read_as<std::int64_t, 2>("greedy");
  Golden g;
  const Index Lp = ids.size(1);
  g.prompt.assign(&ids(seq, 0), &ids(seq, 0) + Lp);
  g.greedy.assign(&greedy(seq, Lp), &greedy(seq, 0) + greedy.size(1));
  g.logits = f.read_as<float, 3>("logits");
  return g;
}

class GenerateExample : public ::testing::TestWithParam<const char*> {};

TEST_P(GenerateExample, GreedyIdsAndDumpedLogitsMatchTransformers) {
  const std::string name = GetParam();
  for (Index seq : {0, 1}) {
    const Golden g = golden(name, seq);
    const auto dump = std::filesystem::temp_directory_path() /
                      ("mamba_logits_" + std::to_string(::getpid()) + ".safetensors");
    const ExampleRun r = run_example("--model '" + mamba_data(name) + "' --ids " + g.ids_flag() +
                                     " --max-new-tokens " + std::to_string(g.greedy.size()) +
                                     " --dump-logits '" + dump.string() + "'");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, g.greedy_line());
    EXPECT_NE(r.err.find("prefill:"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("tokens/s"), std::string::npos) << r.err;
    const auto f = io::SafetensorsFile::open(dump.string());
    const auto& info = f.info("logits");
    EXPECT_EQ(info.dtype, DType::F32);
    const Index Lp = static_cast<Index>(g.prompt.size()), V = g.logits.size(2);
    const auto logits = f.read_as<float, 2>("logits");
    ASSERT_EQ(logits.size(0), Lp);
    ASSERT_EQ(logits.size(1), V);
    EXPECT_LE(rel_error(logits.data(), &g.logits(seq, 0, 0), Lp * V), 1e-4);
    std::filesystem::remove(dump);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, GenerateExample,
                         ::testing::Values("tiny_tied", "tiny_untied_bias", "tiny_n64",
                                           "tiny_inner"));

TEST(GenerateExampleFlags, SamplingIsSeededAndTopKOneIsGreedy) {
  const Golden g = golden("tiny_n64", 0);
  const std::string base = "--model '" + mamba_data("tiny_n64") + "' --ids " + g.ids_flag() +
                           " --max-new-tokens 16 --threads 1";
  const ExampleRun a = run_example(base + " --temperature 1.5 --top-p 0.95 --seed 5");
  const ExampleRun b = run_example(base + " --temperature 1.5 --top-p 0.95 --seed 5");
  ASSERT_EQ(a.status, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, g.greedy_line()) << "a hot sample should leave the greedy path";
  const ExampleRun k1 = run_example(base + " --temperature 1.5 --top-k 1 --seed 9");
  ASSERT_EQ(k1.status, 0) << k1.err;
  EXPECT_EQ(k1.out, g.greedy_line());
}

TEST(GenerateExampleFlags, StopIdsEndTheIdsAfterTheFirstOne) {
  // The golden's 6th token as the stop id, beside 0 (these configs' eos_token_id, which the
  // continuation never emits): the ids end with its first occurrence, and so does decoding.
  const Golden g = golden("tiny_tied", 0);
  const std::vector<std::int64_t> stops = {0, g.greedy[5]};
  const auto want = up_to_stop(g.greedy, stops);
  ASSERT_LT(want.size(), g.greedy.size());
  const ExampleRun r = run_example(
      "--model '" + mamba_data("tiny_tied") + "' --ids " + g.ids_flag() + " --max-new-tokens " +
      std::to_string(g.greedy.size()) + " --stop-ids 0," + std::to_string(stops[1]));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, Golden::line(want));
  EXPECT_NE(r.err.find("decode: " + std::to_string(want.size() - 1) + " tokens"), std::string::npos)
      << r.err;
}

void expect_one_line_error(const ExampleRun& r, int status, const std::string& needle) {
  EXPECT_EQ(r.status, status) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err.rfind("mamba_generate: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  if (status == 1) {  // usage errors add the usage line
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

TEST(GenerateExampleFlags, ErrorsAreOneLineWithNonZeroStatus) {
  const std::string model = " --model '" + mamba_data("tiny_tied") + "'";
  expect_one_line_error(run_example("--model /no/such/dir --ids 1,2 --max-new-tokens 3"), 1,
                        "/no/such/dir");
  expect_one_line_error(run_example(model + " --ids 1,2,300 --max-new-tokens 3"), 1, "vocab_size");
  expect_one_line_error(run_example(model + " --ids 1,x --max-new-tokens 3"), 2, "--ids");
  expect_one_line_error(run_example(model + " --ids 1,,2 --max-new-tokens 3"), 2, "--ids");
  expect_one_line_error(run_example(model + " --ids 1 --max-new-tokens 3 --top-p 0"), 1, "top_p");
  expect_one_line_error(run_example(model + " --ids 1 --max-new-tokens 3 --device gpu"), 2,
                        "--device");
  expect_one_line_error(run_example(model + " --ids 1 --max-new-tokens 3 --dtype bf16"), 2,
                        "--dtype");
  expect_one_line_error(run_example(model + " --ids 1"), 2, "--max-new-tokens");
  expect_one_line_error(run_example(model + " --ids 1 --max-new-tokens 3 --stop-ids 2,-1"), 2,
                        "--stop-ids");
  expect_one_line_error(run_example(model + " --ids 1 --max-new-tokens 3 --stop-ids 2,"), 2,
                        "--stop-ids");
  expect_one_line_error(run_example(model + " --ids 1 --max-new-tokens 3 --stop-ids 300"), 1,
                        "stop_token_ids");
}

// A config.json of one layer beside the weights of two: the second layer's 10 tensors are not
// named, which is refused, or with --unused-tensors ignore, warned about and generated from the
// first.
TEST(GenerateExampleFlags, UnusedTensorsAreRefusedUnlessIgnored) {
  TempDir dir;
  const std::string model = mamba_data("tiny_tied");
  std::filesystem::copy_file(model + "/model.safetensors", dir.file("model.safetensors"));
  auto config = io::read_json_file(model + "/config.json");
  config["num_hidden_layers"] = 1;
  write_text(dir.file("config.json"), config.dump());
  const std::string args = "--model '" + dir.path().string() + "' --ids 1,2 --max-new-tokens 3";
  expect_one_line_error(run_example(args), 1, "'backbone.layers.1.");
  expect_one_line_error(run_example(args + " --unused-tensors maybe"), 2, "--unused-tensors");
  const ExampleRun r = run_example(args + " --unused-tensors ignore");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("mamba_generate: ignoring 10 tensors config.json does not name "
                       "(backbone.layers.1."),
            std::string::npos)
      << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), ','), 2) << r.out;
}

// Where a GPU is there, --device cuda gives transformers' greedy ids (float weights; bf16 only
// runs). A build without the CUDA backend, or a machine with no visible device, refuses it with
// the example's own one-line message, and the test skips; any other failure fails it.
TEST_P(GenerateExample, CudaDeviceMatchesTransformers) {
  const std::string name = GetParam();
  const Golden g = golden(name, 0);
  const std::string base = "--model '" + mamba_data(name) + "' --ids " + g.ids_flag() +
                           " --max-new-tokens " + std::to_string(g.greedy.size()) +
                           " --device cuda";
  const ExampleRun r = run_example(base);
  if (ssmkit::testing::cuda_unavailable(
          r, "mamba_generate",
          {"ssmkit: --device cuda: this build has no CUDA backend (no nvcc found)",
           "ssmkit: --device cuda: no CUDA device is visible"}))
    GTEST_SKIP() << "--device cuda cannot run here: " << r.err;
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, g.greedy_line());
  EXPECT_NE(r.err.find("cuda, float weights"), std::string::npos) << r.err;
  const ExampleRun bf16 = run_example(base + " --dtype bf16");
  ASSERT_EQ(bf16.status, 0) << bf16.err;
  EXPECT_NE(bf16.err.find("cuda, bf16 weights"), std::string::npos) << bf16.err;
  // The golden's 6th token as the stop id: the ids end with its first occurrence.
  const ExampleRun stop = run_example(base + " --stop-ids " + std::to_string(g.greedy[5]));
  ASSERT_EQ(stop.status, 0) << stop.err;
  EXPECT_EQ(stop.out, Golden::line(up_to_stop(g.greedy, {g.greedy[5]})));
}

}  // namespace
