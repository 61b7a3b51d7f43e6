// train_selective_copying: trains a 2-layer Mamba from scratch on the Selective Copying task of
// the Mamba paper (Gu & Dao, arXiv 2312.00752, §4.1.1) on the CPU or, with --device cuda, the GPU.
//
//   train_selective_copying [--length L] [--steps S] [--batch B] [--lr LR] [--seed S]
//                           [--threads T] [--eval-every E] [--target-accuracy A] [--csv FILE]
//                           [--device cpu|cuda]
//
// A sequence of --length tokens holds 16 data tokens (vocabulary of 16) at random positions among
// noise tokens, then 16 marker tokens; at the markers the model must output the data tokens in
// order (the paper's length is 4096; the default here, 128, reaches 99.5 % in minutes on two
// cores: 2.3 with AVX-512, see the README). Limits: --length 32 to 16384, --batch × --length at
// most 2^20 tokens a step (a CPU step takes about 11 KB a token, so 12 GB at the limit).
// Defaults: --length 128 --steps 16000 --batch 16 --lr 3e-3 --eval-every 400 --seed 1; AdamW
// (weight decay 0.1 on matrices), gradient norm clipped to 1, warm-up then cosine learning rate.
// Loss: cross-entropy on the 16 answers. Held-out accuracy: the fraction of answer tokens
// predicted exactly (argmax) on a fixed set of 256 sequences. stdout: the model size, one line per
// evaluation, a summary. stderr: a progress bar when it is a terminal. --csv writes
// step,loss,accuracy,seconds at each evaluation. --target-accuracy A (a fraction in (0, 1], e.g.
// 0.995) stops at the first evaluation that reaches A. --device cuda runs the training steps on
// the GPU (the CPU's arithmetic to float rounding) and evaluates a copy of the weights on the CPU;
// --threads then only speeds up the evaluation. Any error: one line, exit status 1 (2 for usage).
#include <ssmkit/core/parallel.hpp>
#include <ssmkit/nn/grad/mamba_lm_backward.hpp>
#include <ssmkit/nn/grad/mamba_lm_init.hpp>
#include <ssmkit/nn/mamba_lm.hpp>
#include <ssmkit/optim/adamw.hpp>
#include <ssmkit/optim/clip_grad_norm.hpp>

#ifdef TRAIN_SELECTIVE_COPYING_CUDA
#include "train_cuda.hpp"
#endif

#include "common/cli.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using ssmkit::Index;
using namespace ssmkit::examples;

// The progress bar: its width, and the columns cleared before a line of stdout.
constexpr int kBarWidth = 30;
constexpr int kBarColumns = 80;

constexpr const char* kUsage =
    "usage: train_selective_copying [--length L] [--steps S] [--batch B] [--lr LR] [--seed S] "
    "[--threads T] [--eval-every E] [--target-accuracy A] [--csv FILE] [--device cpu|cuda]";

// The task's vocabulary: noise, 16 data tokens, the marker.
constexpr Index kMemorize = 16;
constexpr std::int64_t kNoise = 0, kMarker = kMemorize + 1;
constexpr Index kVocab = kMemorize + 2;
constexpr Index kHeldOut = 256;  // sequences
constexpr std::int64_t kIgnore = -100;
// Bounds that keep a step (about 11 KB a token on the CPU) and the held-out set in a machine's
// memory and every product of sizes far from overflowing Index, whatever the flags say.
constexpr Index kMaxLength = Index{1} << 14;
constexpr Index kMaxTokensPerStep = Index{1} << 20;

/// A batch of sequences (batch, L) and their targets: kIgnore except at the 16 markers.
struct Batch {
  Index batch = 0, L = 0;
  std::vector<std::int64_t> ids, targets;

  ssmkit::TensorView<const std::int64_t, 2> ids_view() const {
    return ssmkit::TensorView<const std::int64_t, 2>(ids.data(), {batch, L}, "ids");
  }
  ssmkit::TensorView<const std::int64_t, 2> targets_view() const {
    return ssmkit::TensorView<const std::int64_t, 2>(targets.data(), {batch, L}, "targets");
  }
};

/// Draws `batch` sequences: 16 data tokens at sorted random positions of the first L − 16, noise
/// elsewhere, then the 16 markers whose targets are the data tokens in order.
Batch make_batch(Index batch, Index L, std::mt19937_64& rng) {
  const Index span = L - kMemorize;
  Batch b{batch, L, std::vector<std::int64_t>(static_cast<std::size_t>(batch * L), kNoise),
          std::vector<std::int64_t>(static_cast<std::size_t>(batch * L), kIgnore)};
  std::vector<Index> positions(static_cast<std::size_t>(span));
  for (Index s = 0; s < batch; ++s) {
    for (Index i = 0; i < span; ++i)
      positions[static_cast<std::size_t>(i)] = i;
    for (Index i = 0; i < kMemorize; ++i)  // a partial Fisher–Yates shuffle picks 16 of them
      std::swap(positions[static_cast<std::size_t>(i)],
                positions[static_cast<std::size_t>(i + static_cast<Index>(rng() % (span - i)))]);
    std::sort(positions.begin(), positions.begin() + kMemorize);
    std::int64_t* ids = b.ids.data() + s * L;
    std::int64_t* targets = b.targets.data() + s * L;
    for (Index i = 0; i < kMemorize; ++i) {
      const auto token = static_cast<std::int64_t>(1 + rng() % kMemorize);
      ids[positions[static_cast<std::size_t>(i)]] = token;
      ids[span + i] = kMarker;
      targets[span + i] = token;
    }
  }
  return b;
}

struct Eval {
  double loss = 0, accuracy = 0;
};

/// Mean loss and exact-token accuracy over the answers of the held-out set.
Eval evaluate(const ssmkit::nn::MambaLM<float>& model, const Batch& set) {
  constexpr Index kChunk = 32;
  const Index L = set.L;
  ssmkit::HostTensor<float, 3> logits({kChunk, L, kVocab});
  double loss = 0;
  Index correct = 0, answers = 0;
  for (Index first = 0; first < set.batch; first += kChunk) {
    const Index n = std::min(kChunk, set.batch - first);
    const ssmkit::TensorView<const std::int64_t, 2> ids(set.ids.data() + first * L, {n, L}, "ids");
    const auto out = ssmkit::TensorView<float, 3>(logits.data(), {n, L, kVocab}, "logits");
    model.forward(ids, out);
    for (Index s = 0; s < n; ++s)
      for (Index t = L - kMemorize; t < L; ++t) {
        const float* row = &out(s, t, 0);
        const std::int64_t want = set.targets[static_cast<std::size_t>((first + s) * L + t)];
        const Index best = std::max_element(row, row + kVocab) - row;
        correct += best == want;
        const float mx = row[best];
        double sum = 0;
        for (Index v = 0; v < kVocab; ++v)
          sum += std::exp(static_cast<double>(row[v] - mx));
        loss += std::log(sum) - static_cast<double>(row[want] - mx);
        ++answers;
      }
  }
  return {loss / static_cast<double>(answers),
          static_cast<double>(correct) / static_cast<double>(answers)};
}

/// Linear warm-up over the first 5 % of the steps, then a cosine decay to a tenth.
double learning_rate(double peak, Index step, Index steps) {
  const Index warmup = std::max<Index>(1, steps / 20);
  if (step < warmup)
    return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double progress =
      static_cast<double>(step - warmup) / static_cast<double>(std::max<Index>(1, steps - warmup));
  return peak * (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * progress)));
}

int run(int argc, char** argv) {
  const Flags flags(argc, argv,
                    {"--length", "--steps", "--batch", "--lr", "--seed", "--threads", "--csv",
                     "--eval-every", "--target-accuracy", "--device"});
  const std::string device = flags.device();
  const auto L = parse_number<Index>("--length", flags.get("--length", "128"));
  const auto steps = parse_number<Index>("--steps", flags.get("--steps", "16000"));
  const auto batch = parse_number<Index>("--batch", flags.get("--batch", "16"));
  const auto lr = parse_number<double>("--lr", flags.get("--lr", "3e-3"));
  const auto seed = parse_number<std::uint64_t>("--seed", flags.get("--seed", "1"));
  const auto eval_every = parse_number<Index>("--eval-every", flags.get("--eval-every", "400"));
  const auto target =
      parse_number<double>("--target-accuracy", flags.get("--target-accuracy", "2"));
  if (L < 2 * kMemorize || L > kMaxLength)
    throw UsageError("--length: must be in [" + std::to_string(2 * kMemorize) + ", " +
                     std::to_string(kMaxLength) + "]");
  if (steps < 1 || batch < 1 || eval_every < 1)
    throw UsageError("--steps, --batch and --eval-every must be >= 1");
  if (batch > kMaxTokensPerStep / L)
    throw UsageError("--batch: must be <= " + std::to_string(kMaxTokensPerStep / L) +
                     " at --length " + std::to_string(L) + " (at most " +
                     std::to_string(kMaxTokensPerStep) + " tokens a step)");
  if (!(lr > 0))
    throw UsageError("--lr: must be > 0");
  // Unset, the target (2) is out of reach: every step runs.
  if (flags.has("--target-accuracy") && !(target > 0 && target <= 1))
    throw UsageError("--target-accuracy: must be a fraction in (0, 1], e.g. 0.99 for 99 %");
  flags.apply_threads();
  std::ofstream csv;
  if (flags.has("--csv")) {
    csv.open(flags.get("--csv", ""));
    if (!csv)
      throw ssmkit::Error("ssmkit: --csv: cannot write '" + flags.get("--csv", "") + "'");
    csv << "step,loss,accuracy,seconds\n";
  }

  // The paper's selective-copying model: 2 layers, d_model 64, N 16, d_conv 4, expand 2.
  ssmkit::nn::MambaLMConfig config;
  config.vocab_size = kVocab;
  config.n_layer = 2;
  config.block = {64, 128, 16, 4, 4};
  ssmkit::nn::MambaLM<float> model(config, ssmkit::nn::init_mamba_lm<float>(config, seed));
  ssmkit::optim::AdamWOptions adam;
  adam.lr = lr;
  adam.weight_decay = 0.1;
  Index n_params = 0;
  for (const auto& p : model.parameters())
    n_params += p.value.size(0);
  // One training step (gradient, clipping to norm 1, AdamW at the given learning rate) returning
  // the loss, and what makes `model` hold the trained weights before an evaluation.
  std::function<double(const Batch&, double)> train_step;
  std::function<void()> sync_model = [] {};
  if (device == "cuda") {
#ifdef TRAIN_SELECTIVE_COPYING_CUDA
    auto trainer = std::make_shared<CudaTrainer>(model, adam);
    train_step = [trainer](const Batch& b, double rate) {
      return trainer->step(b.ids_view(), b.targets_view(), rate, 1.0);
    };
    sync_model = [trainer, &model] { trainer->download(model); };
#else
    throw ssmkit::Error("ssmkit: --device cuda: this build has no CUDA backend (no nvcc found)");
#endif
  } else {
    auto grads = std::make_shared<ssmkit::nn::MambaLMWeights<float>>(ssmkit::nn::zeros_like(model));
    // The backward's buffers, kept from step to step rather than allocated at each.
    auto buffers = std::make_shared<ssmkit::nn::MambaLMBackwardBuffers<float>>();
    auto optimizer = std::make_shared<ssmkit::optim::AdamW<float>>(adam);
    auto params = model.parameters();
    const auto grad_list = ssmkit::nn::parameters(*grads);
    std::vector<ssmkit::TensorView<float, 1>> grad_views;
    for (std::size_t k = 0; k < params.size(); ++k) {
      optimizer->add(params[k].value, grad_list[k].value, params[k].decay);
      grad_views.push_back(grad_list[k].value);
    }
    train_step = [&model, grads, buffers, optimizer, grad_views](const Batch& b, double rate) {
      const double loss = ssmkit::nn::mamba_lm_backward<float>(model, b.ids_view(),
                                                               b.targets_view(), *grads, *buffers);
      ssmkit::optim::clip_grad_norm(grad_views, 1.0);
      optimizer->options().lr = rate;
      optimizer->step();
      model.parameters_changed();
      return loss;
    };
  }
  std::printf(
      "selective copying: length %lld, batch %lld, %lld steps, lr %g, seed %llu, "
      "%d threads, %s\nmodel: 2 layers, d_model 64, d_state 16, d_conv 4, expand 2, "
      "vocab %lld: %lld parameters\n",
      static_cast<long long>(L), static_cast<long long>(batch), static_cast<long long>(steps), lr,
      static_cast<unsigned long long>(seed), ssmkit::max_threads(), device.c_str(),
      static_cast<long long>(kVocab), static_cast<long long>(n_params));
  std::fflush(stdout);

  std::mt19937_64 held_out_rng(seed ^ 0x9e3779b97f4a7c15ULL), train_rng(seed);
  const Batch held_out = make_batch(kHeldOut, L, held_out_rng);
  const bool bar = isatty(STDERR_FILENO);
  const auto start = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  double loss_sum = 0, last_loss = 0;
  Index loss_count = 0, done = 0;
  Eval eval;
  for (Index step = 0; step < steps; ++step) {
    const Batch b = make_batch(batch, L, train_rng);
    const double loss = train_step(b, learning_rate(lr, step, steps));
    if (!std::isfinite(loss))
      throw ssmkit::Error("ssmkit: the loss diverged at step " + std::to_string(step + 1) +
                          "; try a smaller --lr");
    loss_sum += loss, ++loss_count, done = step + 1;
    if (done % eval_every == 0 || done == steps) {
      sync_model();
      eval = evaluate(model, held_out);
      last_loss = loss_sum / static_cast<double>(loss_count);
      loss_sum = 0, loss_count = 0;
      if (bar)
        clear_progress(kBarColumns);
      std::printf("step %6lld  loss %.4f  held-out loss %.4f  held-out accuracy %6.2f%%  %.1f s\n",
                  static_cast<long long>(done), last_loss, eval.loss, 100 * eval.accuracy,
                  seconds());
      std::fflush(stdout);
      if (csv)
        csv << done << ',' << last_loss << ',' << eval.accuracy << ',' << seconds() << std::endl;
      if (eval.accuracy >= target)
        break;
    }
    if (bar) {
      char suffix[64];
      std::snprintf(suffix, sizeof suffix, " loss %.4f held-out %.2f%%", loss, 100 * eval.accuracy);
      draw_progress(done, steps, kBarWidth, suffix);
    }
  }
  if (bar)
    clear_progress(kBarColumns);
  std::printf(
      "final: held-out accuracy %.2f%% after %lld steps (%lld sequences of length %lld) "
      "in %.1f s, %lld parameters\n",
      100 * eval.accuracy, static_cast<long long>(done), static_cast<long long>(done * batch),
      static_cast<long long>(L), seconds(), static_cast<long long>(n_params));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return run_main("train_selective_copying", kUsage, [&] { return run(argc, argv); });
}
