// mamba_generate: continues token ids with a Hugging Face MambaForCausalLM checkpoint on the CPU
// or, with --device cuda, on the GPU (weights as float, or bfloat16 with --dtype bf16).
//
//   mamba_generate --model DIR --ids 1,2,3 --max-new-tokens N [--temperature T] [--top-k K]
//                  [--top-p P] [--seed S] [--dump-logits FILE] [--threads N]
//                  [--device cpu|cuda] [--dtype float|bf16]
//
// stdout: the generated ids (prompt excluded), comma-separated, on one line. stderr: prefill and
// decode speed, and a progress bar when stderr is a terminal. Any error: one line, exit status 1
// (2 for a usage error).
#include <ssmkit/core/parallel.hpp>
#include <ssmkit/io/safetensors.hpp>
#include <ssmkit/nn/mamba_lm.hpp>
#include <ssmkit/nn/sampling.hpp>

#ifdef MAMBA_GENERATE_CUDA
#include "generate_cuda.hpp"
#endif

#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <system_error>
#include <vector>

namespace {

constexpr const char* kUsage =
    "usage: mamba_generate --model DIR --ids 1,2,3 --max-new-tokens N [--temperature T] "
    "[--top-k K] [--top-p P] [--seed S] [--dump-logits FILE] [--threads N] [--device cpu|cuda] "
    "[--dtype float|bf16]";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class N>
N parse_number(const std::string& flag, const std::string& text) {
  N value{};
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end || text.empty())
    throw UsageError(flag + ": '" + text + "' is not a valid number");
  return value;
}

// std::from_chars for double is in GCC 11+ and recent libc++; strtod keeps older ones working.
template <>
double parse_number<double>(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size())
    throw UsageError(flag + ": '" + text + "' is not a valid number");
  return value;
}

std::vector<std::int64_t> parse_ids(const std::string& text) {
  std::vector<std::int64_t> ids;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    const std::string item = text.substr(start, comma - start);
    const auto id = parse_number<std::int64_t>("--ids", item);
    if (id < 0)
      throw UsageError("--ids: " + item + " is negative");
    ids.push_back(id);
    if (comma == std::string::npos)
      break;
    start = comma + 1;
  }
  return ids;
}

std::map<std::string, std::string> parse_flags(int argc, char** argv) {
  static const char* const known[] = {"--model",   "--ids",    "--max-new-tokens", "--temperature",
                                      "--top-k",   "--top-p",  "--seed",           "--dump-logits",
                                      "--threads", "--device", "--dtype"};
  std::map<std::string, std::string> flags;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "-h" || flag == "--help")
      throw UsageError("help");
    bool ok = false;
    for (const char* k : known)
      ok = ok || flag == k;
    if (!ok)
      throw UsageError("unknown flag '" + flag + "'");
    if (i + 1 >= argc)
      throw UsageError(flag + " needs a value");
    flags[flag] = argv[++i];
  }
  for (const char* required : {"--model", "--ids", "--max-new-tokens"})
    if (!flags.count(required))
      throw UsageError(std::string(required) + " is required");
  return flags;
}

/// A one-line bar redrawn in place on stderr.
void draw_progress(ssmkit::Index done, ssmkit::Index total) {
  constexpr int kWidth = 40;
  const int filled = static_cast<int>(kWidth * done / total);
  std::fprintf(stderr, "\r[%s%s] %lld/%lld", std::string(filled, '#').c_str(),
               std::string(kWidth - filled, ' ').c_str(), static_cast<long long>(done),
               static_cast<long long>(total));
  if (done == total)
    std::fprintf(stderr, "\r%s\r", std::string(kWidth + 24, ' ').c_str());
  std::fflush(stderr);
}

using Progress = std::function<void(ssmkit::Index)>;

ssmkit::nn::GenerationResult run_cpu(const std::string& dir, const std::vector<std::int64_t>& ids,
                                     ssmkit::Index max_new,
                                     const ssmkit::nn::SamplingConfig& sampling,
                                     const std::string& dump_logits, const Progress& progress) {
  const auto model = ssmkit::nn::MambaLM<float>::from_pretrained(dir);
  if (!dump_logits.empty()) {
    // Its own pass over the prompt: generation only keeps the last position's logits.
    const auto L = static_cast<ssmkit::Index>(ids.size());
    ssmkit::HostTensor<float, 3> logits({1, L, model.vocab_size()});
    model.forward(ssmkit::TensorView<const std::int64_t, 2>(ids.data(), {1, L}, "ids"),
                  logits.view());
    ssmkit::io::SafetensorsWriter w;
    w.add("logits", logits.view()[0]);
    w.write(dump_logits);
  }
  return ssmkit::nn::generate(model, {ids}, max_new, sampling, progress);
}

ssmkit::nn::GenerationResult run_cuda(const std::string& dir, const std::vector<std::int64_t>& ids,
                                      ssmkit::Index max_new,
                                      const ssmkit::nn::SamplingConfig& sampling, bool bf16,
                                      const std::string& dump_logits, const Progress& progress) {
#ifdef MAMBA_GENERATE_CUDA
  return generate_cuda(dir, ids, max_new, sampling, bf16, dump_logits, progress);
#else
  (void)dir, (void)ids, (void)max_new, (void)sampling, (void)bf16, (void)dump_logits,
      (void)progress;
  throw ssmkit::Error("ssmkit: --device cuda: this build has no CUDA backend (no nvcc found)");
#endif
}

int run(int argc, char** argv) {
  const auto flags = parse_flags(argc, argv);
  const auto get = [&](const char* k, const char* fallback) {
    const auto it = flags.find(k);
    return it == flags.end() ? std::string(fallback) : it->second;
  };
  const std::string device = get("--device", "cpu");
  if (device != "cpu" && device != "cuda")
    throw UsageError("--device: expected cpu or cuda, got '" + device + "'");
  const std::string dtype = get("--dtype", "float");
  if (dtype != "float" && dtype != "bf16")
    throw UsageError("--dtype: expected float or bf16, got '" + dtype + "'");
  if (dtype == "bf16" && device != "cuda")
    throw UsageError("--dtype bf16: only with --device cuda");
  const auto max_new = parse_number<ssmkit::Index>("--max-new-tokens", get("--max-new-tokens", ""));
  if (max_new < 0)
    throw UsageError("--max-new-tokens: must be >= 0");
  if (flags.count("--threads")) {
    const int threads = parse_number<int>("--threads", get("--threads", ""));
    if (threads < 1)
      throw UsageError("--threads: must be >= 1");
    ssmkit::set_num_threads(threads);
  }
  ssmkit::nn::SamplingConfig sampling;
  sampling.temperature = parse_number<double>("--temperature", get("--temperature", "0"));
  sampling.top_k = parse_number<ssmkit::Index>("--top-k", get("--top-k", "0"));
  sampling.top_p = parse_number<double>("--top-p", get("--top-p", "1"));
  sampling.seed = parse_number<std::uint64_t>("--seed", get("--seed", "0"));
  sampling.validate();
  const auto ids = parse_ids(get("--ids", ""));

  const bool bar = isatty(STDERR_FILENO) && max_new >= 16;
  const auto progress = [&](ssmkit::Index i) {
    if (bar)
      draw_progress(i + 1, max_new);
  };
  const auto r = device == "cuda" ? run_cuda(get("--model", ""), ids, max_new, sampling,
                                             dtype == "bf16", get("--dump-logits", ""), progress)
                                  : run_cpu(get("--model", ""), ids, max_new, sampling,
                                            get("--dump-logits", ""), progress);

  std::string line;
  for (std::size_t i = 0; i < r.tokens[0].size(); ++i)
    line += (i ? "," : "") + std::to_string(r.tokens[0][i]);
  std::cout << line << std::endl;
  std::fprintf(stderr, "prefill: %lld tokens in %.3f s (%.1f tokens/s)\n",
               static_cast<long long>(r.prefill_tokens), r.prefill_seconds,
               r.prefill_tokens / std::max(r.prefill_seconds, 1e-9));
  std::fprintf(stderr, "decode: %lld tokens in %.3f s (%.1f tokens/s), %s\n",
               static_cast<long long>(r.decode_tokens), r.decode_seconds,
               r.decode_tokens / std::max(r.decode_seconds, 1e-9),
               device == "cuda" ? ("cuda, " + dtype + " weights").c_str()
                                : (std::to_string(ssmkit::max_threads()) + " threads").c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const UsageError& e) {
    if (std::string(e.what()) == "help") {
      std::cout << kUsage << "\n";
      return 0;
    }
    std::cerr << "mamba_generate: " << e.what() << "\n" << kUsage << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    for (char& c : msg)  // one line, whatever the message holds
      if (c == '\n')
        c = ' ';
    std::cerr << "mamba_generate: " << msg << "\n";
    return 1;
  }
}
