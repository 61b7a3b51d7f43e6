// mamba_generate: continues token ids with a Hugging Face MambaForCausalLM checkpoint on the CPU
// or, with --device cuda, on the GPU (weights as float, or bfloat16 with --dtype bf16).
//
//   mamba_generate --model DIR --ids 1,2,3 --max-new-tokens N [--temperature T [--top-k K]
//                  [--top-p P]] [--seed S] [--dump-logits FILE] [--threads N]
//                  [--device cpu|cuda] [--dtype float|bf16] [--unused-tensors error|ignore]
//                  [--stop-ids LIST]
//
// Decoding is greedy unless --temperature T > 0 is given; --top-k and --top-p narrow what that
// samples from, so they are refused without it rather than silently ignored. A checkpoint tensor
// config.json does not name is an error unless --unused-tensors ignore (then a warning).
// --stop-ids 2,7 ends generation after either id is emitted (printed with the others), as
// transformers' eos_token_id; without it, max_new_tokens ids come out.
//
// stdout: the generated ids (prompt excluded), comma-separated, on one line. stderr: prefill and
// decode speed, and a progress bar when stderr is a terminal. Any error: one line, exit status 1
// (2 for a usage error).
#include <ssmkit/core/parallel.hpp>
#include <ssmkit/io/hf_mamba.hpp>
#include <ssmkit/io/safetensors.hpp>
#include <ssmkit/nn/mamba_lm.hpp>
#include <ssmkit/nn/sampling.hpp>

#ifdef MAMBA_GENERATE_CUDA
#include "generate_cuda.hpp"
#endif

#include "common/cli.hpp"

#include <unistd.h>

#include <cstdio>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

namespace {

using namespace ssmkit::examples;

constexpr int kBarWidth = 40;

constexpr const char* kUsage =
    "usage: mamba_generate --model DIR --ids 1,2,3 --max-new-tokens N [--temperature T "
    "[--top-k K] [--top-p P]] [--seed S] [--dump-logits FILE] [--threads N] [--device cpu|cuda] "
    "[--dtype float|bf16] [--unused-tensors error|ignore] [--stop-ids LIST]\n"
    "greedy unless --temperature T > 0; --top-k and --top-p only with it; --stop-ids 2,7 ends "
    "after either id (kept)";

/// `flag`'s comma-separated ids, each >= 0.
std::vector<std::int64_t> parse_ids(const std::string& flag, const std::string& text) {
  std::vector<std::int64_t> ids;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    const std::string item = text.substr(start, comma - start);
    const auto id = parse_number<std::int64_t>(flag, item);
    if (id < 0)
      throw UsageError(flag + ": " + item + " is negative");
    ids.push_back(id);
    if (comma == std::string::npos)
      break;
    start = comma + 1;
  }
  return ids;
}

using Progress = std::function<void(ssmkit::Index)>;

ssmkit::nn::GenerationResult run_cpu(const std::string& dir, const ssmkit::io::HfOpenOptions& open,
                                     const std::vector<std::int64_t>& ids, ssmkit::Index max_new,
                                     const ssmkit::nn::SamplingConfig& sampling,
                                     const std::string& dump_logits, const Progress& progress) {
  const auto model = ssmkit::nn::MambaLM<float>::from_pretrained(dir, open);
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

ssmkit::nn::GenerationResult run_cuda(const std::string& dir, const ssmkit::io::HfOpenOptions& open,
                                      const std::vector<std::int64_t>& ids, ssmkit::Index max_new,
                                      const ssmkit::nn::SamplingConfig& sampling, bool bf16,
                                      const std::string& dump_logits, const Progress& progress) {
#ifdef MAMBA_GENERATE_CUDA
  return generate_cuda(dir, open, ids, max_new, sampling, bf16, dump_logits, progress);
#else
  (void)dir, (void)open, (void)ids, (void)max_new, (void)sampling, (void)bf16, (void)dump_logits,
      (void)progress;
  throw ssmkit::Error("ssmkit: --device cuda: this build has no CUDA backend (no nvcc found)");
#endif
}

int run(int argc, char** argv) {
  const Flags flags(
      argc, argv,
      {"--model", "--ids", "--max-new-tokens", "--temperature", "--top-k", "--top-p", "--seed",
       "--dump-logits", "--threads", "--device", "--dtype", "--unused-tensors", "--stop-ids"},
      {"--model", "--ids", "--max-new-tokens"});
  const std::string device = flags.device();
  const std::string dtype = flags.get("--dtype", "float");
  if (dtype != "float" && dtype != "bf16")
    throw UsageError("--dtype: expected float or bf16, got '" + dtype + "'");
  if (dtype == "bf16" && device != "cuda")
    throw UsageError("--dtype bf16: only with --device cuda");
  const auto max_new =
      parse_number<ssmkit::Index>("--max-new-tokens", flags.get("--max-new-tokens", ""));
  if (max_new < 0)
    throw UsageError("--max-new-tokens: must be >= 0");
  flags.apply_threads();
  ssmkit::nn::SamplingConfig sampling;
  sampling.temperature = parse_number<double>("--temperature", flags.get("--temperature", "0"));
  sampling.top_k = parse_number<ssmkit::Index>("--top-k", flags.get("--top-k", "0"));
  sampling.top_p = parse_number<double>("--top-p", flags.get("--top-p", "1"));
  sampling.seed = parse_number<std::uint64_t>("--seed", flags.get("--seed", "0"));
  if (flags.has("--stop-ids"))
    sampling.stop_token_ids = parse_ids("--stop-ids", flags.get("--stop-ids", ""));
  sampling.validate();
  if (sampling.temperature == 0 && (sampling.top_k != 0 || sampling.top_p != 1))
    throw UsageError(
        "--top-k and --top-p need --temperature T > 0 (without it decoding is greedy)");
  const auto ids = parse_ids("--ids", flags.get("--ids", ""));
  const std::string unused = flags.get("--unused-tensors", "error");
  if (unused != "error" && unused != "ignore")
    throw UsageError("--unused-tensors: expected error or ignore, got '" + unused + "'");
  ssmkit::io::HfOpenOptions open;
  open.allow_unused_tensors = unused == "ignore";
  const std::string dir = flags.get("--model", "");
  if (open.allow_unused_tensors) {
    // Only for the warning: the loader keeps no list.
    const auto names = ssmkit::io::HfMambaCheckpoint::open(dir, open).unused_tensors();
    if (!names.empty())
      std::fprintf(stderr,
                   "mamba_generate: ignoring %zu tensors config.json does not name (%s%s)\n",
                   names.size(), names.front().c_str(), names.size() > 1 ? ", ..." : "");
  }

  const bool bar = isatty(STDERR_FILENO) && max_new >= 16;
  const auto progress = [&](ssmkit::Index i) {
    if (bar)
      draw_progress(i + 1, max_new, kBarWidth);
  };
  const auto r = device == "cuda" ? run_cuda(dir, open, ids, max_new, sampling, dtype == "bf16",
                                             flags.get("--dump-logits", ""), progress)
                                  : run_cpu(dir, open, ids, max_new, sampling,
                                            flags.get("--dump-logits", ""), progress);
  if (bar)  // here, not at token max_new: a stop id may end generation before it
    clear_progress(kBarWidth + 24);

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
  return run_main("mamba_generate", kUsage, [&] { return run(argc, argv); });
}
