// AdamW (Loshchilov & Hutter, arXiv 1711.05101) as torch.optim.AdamW steps: decoupled weight decay
// p ← p·(1 − lr·λ), then m, v moments with bias correction, p ← p − lr·m̂ / (sqrt(v̂) + eps).
#pragma once

#include "ssmkit/core/dtype.hpp"
#include "ssmkit/core/host_tensor.hpp"
#include "ssmkit/core/parallel.hpp"
#include "ssmkit/core/tensor_view.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace ssmkit::optim {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

namespace detail {

/// Throws ssmkit::Error naming the first option out of its range.
inline void check_adamw_options(const AdamWOptions& o) {
  SSMKIT_CHECK(std::isfinite(o.lr) && o.lr >= 0, "lr", "value", "finite and >= 0", o.lr);
  SSMKIT_CHECK(o.beta1 >= 0 && o.beta1 < 1, "beta1", "value", "in [0, 1)", o.beta1);
  SSMKIT_CHECK(o.beta2 >= 0 && o.beta2 < 1, "beta2", "value", "in [0, 1)", o.beta2);
  SSMKIT_CHECK(o.eps > 0, "eps", "value", "> 0", o.eps);
  SSMKIT_CHECK(std::isfinite(o.weight_decay) && o.weight_decay >= 0, "weight_decay", "value",
               "finite and >= 0", o.weight_decay);
}

}  // namespace detail

/// Keeps the moments of every registered parameter (in T, as PyTorch keeps them in the
/// parameter's dtype) and updates the parameters in place from their gradient buffers. As in
/// PyTorch, each parameter counts its own steps for the bias corrections: one added after others
/// have been stepped starts from step 1.
/// AdamW<T, Cuda> (optim/cuda/adamw.cuh) steps device parameters.
template <class T, class Backend = Cpu>
class AdamW {
  static_assert(std::is_same_v<Backend, Cpu>, "AdamW<T, Cuda> is in optim/cuda/adamw.cuh");

 public:
  explicit AdamW(const AdamWOptions& options = {}) : options_(options) {
    detail::check_adamw_options(options);
  }

  /// Registers a parameter and the buffer its gradient will be in (same length). `decay`: whether
  /// weight decay applies (it usually does not to biases, norms and A_log/D). No gradient may
  /// overlap a parameter, and no two parameters may overlap.
  void add(TensorView<T, 1> param, TensorView<const T, 1> grad, bool decay = true) {
    check_device(param, "param", Device::CPU);
    check_device(grad, "grad", Device::CPU);
    check_shape(grad, "grad", {param.size(0)});
    // Gradients are read while parameters are written, chunk by chunk on several threads.
    check_disjoint(grad, "grad", param, "param");
    for (const Slot& s : slots_) {  // a parameter registered twice would be updated twice
      check_disjoint(param, "param", s.param, "a parameter added before");
      check_disjoint(param, "param", s.grad, "a gradient added before");
      check_disjoint(grad, "grad", s.param, "a parameter added before");
    }
    slots_.push_back(Slot{param,
                          grad,
                          HostTensor<T, 1>({param.size(0)}, "exp_avg"),
                          HostTensor<T, 1>({param.size(0)}, "exp_avg_sq"),
                          decay,
                          0,
                          {},
                          {}});
    for (Index i = 0; i < param.size(0); i += kChunk)
      chunks_.push_back({slots_.size() - 1, i, std::min(param.size(0), i + kChunk)});
  }

  /// add() for a whole contiguous host tensor of any rank.
  template <int R>
  void add(HostTensor<T, R>& param, const HostTensor<T, R>& grad, bool decay = true) {
    SSMKIT_CHECK(param.shape() == grad.shape(), "grad", "shape",
                 ssmkit::detail::shape_string<R>(param.shape()) + " (the parameter's)",
                 ssmkit::detail::shape_string<R>(grad.shape()));
    add(TensorView<T, 1>(param.data(), {param.numel()}, "param"),
        TensorView<const T, 1>(grad.data(), {grad.numel()}, "grad"), decay);
  }

  /// One update of every registered parameter from its gradient buffer.
  void step() {
    using Acc = accum_t<T>;
    detail::check_adamw_options(options_);
    ++steps_;
    for (Slot& s : slots_) {  // the bias corrections of each parameter's own step count
      ++s.steps;
      const double bc1 = 1 - std::pow(options_.beta1, static_cast<double>(s.steps));
      const double bc2 = 1 - std::pow(options_.beta2, static_cast<double>(s.steps));
      s.step_size = static_cast<Acc>(options_.lr / bc1);
      s.bc2_sqrt = static_cast<Acc>(std::sqrt(bc2));
    }
    const Acc lr = static_cast<Acc>(options_.lr), b1 = static_cast<Acc>(options_.beta1);
    const Acc b2 = static_cast<Acc>(options_.beta2), eps = static_cast<Acc>(options_.eps);
    // One parallel region for all parameters: a model has many small tensors, each too short to
    // be worth waking the threads for on its own.
    parallel_for(0, static_cast<Index>(chunks_.size()), [&](Index c) {
      const Chunk& k = chunks_[static_cast<std::size_t>(c)];
      Slot& s = slots_[k.slot];
      const Acc shrink = s.decay ? Acc(1) - lr * static_cast<Acc>(options_.weight_decay) : Acc(1);
      T* m = s.exp_avg.data();
      T* v = s.exp_avg_sq.data();
      for (Index i = k.begin; i < k.end; ++i) {
        const Acc g = static_cast<Acc>(s.grad(i));
        const Acc mi = static_cast<Acc>(m[i]) + (g - static_cast<Acc>(m[i])) * (Acc(1) - b1);
        const Acc vi = static_cast<Acc>(v[i]) * b2 + (Acc(1) - b2) * g * g;
        m[i] = static_cast<T>(mi);
        v[i] = static_cast<T>(vi);
        const Acc p = static_cast<Acc>(s.param(i)) * shrink;
        s.param(i) = static_cast<T>(p - s.step_size * mi / (std::sqrt(vi) / s.bc2_sqrt + eps));
      }
    });
  }

  /// The options; change lr here for a schedule.
  AdamWOptions& options() { return options_; }
  /// Calls of step() so far.
  long steps() const { return steps_; }

 private:
  static constexpr Index kChunk = 4096;  ///< elements per parallel task

  struct Slot {
    TensorView<T, 1> param;
    TensorView<const T, 1> grad;
    HostTensor<T, 1> exp_avg, exp_avg_sq;
    bool decay;
    long steps;                      ///< this parameter's steps so far
    accum_t<T> step_size, bc2_sqrt;  ///< lr / (1 − β1^t) and sqrt(1 − β2^t) at its step t
  };

  AdamWOptions options_;
  std::vector<Slot> slots_;
  struct Chunk {
    std::size_t slot;
    Index begin, end;
  };
  std::vector<Chunk> chunks_;
  long steps_ = 0;
};

}  // namespace ssmkit::optim
