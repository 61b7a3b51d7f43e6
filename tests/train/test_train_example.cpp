// Runs the train_selective_copying example briefly on short sequences: the CSV is well formed, the
// training loss falls below its starting value, the same seed gives the same curve, --device cuda
// gives the CPU's curve (skipped where the example says there is no CUDA build or no GPU), and bad
// flags fail with a message.
#include "run_program.hpp"
#include "testing.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

using ExampleRun = ssmkit::testing::ProgramRun;

ExampleRun run_example(const std::string& args) {
  return ssmkit::testing::run_program(TRAIN_SELECTIVE_COPYING, args);
}

struct Row {
  long step;
  double loss, accuracy, seconds;
};

/// Parses the CSV, failing the test on any malformed line.
std::vector<Row> read_csv(const std::filesystem::path& path) {
  std::ifstream f(path);
  std::string line;
  std::vector<Row> rows;
  EXPECT_TRUE(std::getline(f, line));
  EXPECT_EQ(line, "step,loss,accuracy,seconds");
  while (std::getline(f, line)) {
    Row r{};
    char tail = 0;
    EXPECT_EQ(std::sscanf(line.c_str(), "%ld,%lf,%lf,%lf%c", &r.step, &r.loss, &r.accuracy,
                          &r.seconds, &tail),
              4)
        << "line '" << line << "'";
    rows.push_back(r);
  }
  return rows;
}

std::filesystem::path temp_csv(const char* name) {
  return std::filesystem::temp_directory_path() /
         (std::string(name) + "_" + std::to_string(::getpid()) + ".csv");
}

TEST(TrainSelectiveCopyingExample, LossFallsAndTheCsvIsWellFormed) {
  const auto csv = temp_csv("train_example");
  const std::string args =
      "--length 32 --steps 40 --batch 8 --lr 3e-3 --eval-every 10 --seed 5 --threads 1 --csv '" +
      csv.string() + "'";
  const ExampleRun r = run_example(args);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("66624 parameters"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("final: held-out accuracy"), std::string::npos) << r.out;
  const auto rows = read_csv(csv);
  ASSERT_EQ(rows.size(), 4u);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].step, 10 * static_cast<long>(i + 1));
    EXPECT_TRUE(std::isfinite(rows[i].loss));
    EXPECT_GE(rows[i].accuracy, 0.0);
    EXPECT_LE(rows[i].accuracy, 1.0);
    if (i > 0) {
      EXPECT_GE(rows[i].seconds, rows[i - 1].seconds);
    }
  }
  // A fresh model guesses among all 18 tokens: ln 18 = 2.89 over steps 1-10. Forty steps teach
  // it at least that answers are data tokens (ln 16 = 2.77 for a uniform guess among them): the
  // mean loss of steps 31-40 must have dropped most of the way there.
  EXPECT_GT(rows.front().loss, 2.83);
  EXPECT_LT(rows.back().loss, 2.81);
  EXPECT_LT(rows.back().loss, rows.front().loss - 0.05);

  // Deterministic given the seed: the same curve again (timings aside).
  const auto csv2 = temp_csv("train_example_again");
  std::string args2 = args;
  args2.replace(args2.find(csv.string()), csv.string().size(), csv2.string());
  ASSERT_EQ(run_example(args2).status, 0);
  const auto again = read_csv(csv2);
  ASSERT_EQ(again.size(), rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(again[i].loss, rows[i].loss) << "row " << i;
    EXPECT_EQ(again[i].accuracy, rows[i].accuracy) << "row " << i;
  }
  std::filesystem::remove(csv);
  std::filesystem::remove(csv2);
}

TEST(TrainSelectiveCopyingExample, CudaDeviceFollowsTheCpuCurve) {
  const auto csv = temp_csv("train_example_cpu"), csv_gpu = temp_csv("train_example_cuda");
  const std::string args = "--length 32 --steps 40 --batch 8 --eval-every 10 --seed 7 --csv '";
  const ExampleRun gpu = run_example(args + csv_gpu.string() + "' --device cuda");
  // A build without nvcc, or a machine without a GPU: the example's own one-line refusal, and the
  // test skips. Any other failure (a CUDA call that failed, a crash) fails it.
  if (ssmkit::testing::cuda_unavailable(
          gpu, "train_selective_copying",
          {"ssmkit: --device cuda: this build has no CUDA backend (no nvcc found)",
           "ssmkit: --device cuda: no CUDA device found"})) {
    std::filesystem::remove(csv_gpu);
    GTEST_SKIP() << "--device cuda cannot run here: " << gpu.err;
  }
  ASSERT_EQ(gpu.status, 0) << gpu.err;
  const ExampleRun cpu = run_example(args + csv.string() + "' --device cpu --threads 1");
  ASSERT_EQ(cpu.status, 0) << cpu.err;
  const auto cpu_rows = read_csv(csv), gpu_rows = read_csv(csv_gpu);
  ASSERT_EQ(gpu_rows.size(), 4u);
  ASSERT_EQ(gpu_rows.size(), cpu_rows.size());
  // The same steps in float on both devices: the curves agree to far below their fall (> 0.05).
  for (std::size_t i = 0; i < cpu_rows.size(); ++i) {
    EXPECT_EQ(gpu_rows[i].step, cpu_rows[i].step);
    EXPECT_NEAR(gpu_rows[i].loss, cpu_rows[i].loss, 1e-3) << "row " << i;
    EXPECT_NEAR(gpu_rows[i].accuracy, cpu_rows[i].accuracy, 0.02) << "row " << i;
  }
  std::filesystem::remove(csv);
  std::filesystem::remove(csv_gpu);
}

TEST(TrainSelectiveCopyingExample, BadFlagsAreUsageErrors) {
  for (const char* args : {"--length 20", "--steps 0", "--bogus 1", "--lr -1", "--steps"}) {
    const ExampleRun r = run_example(args);
    EXPECT_EQ(r.status, 2) << args;
    EXPECT_NE(r.err.find("usage:"), std::string::npos) << args << ": " << r.err;
  }
}

}  // namespace
