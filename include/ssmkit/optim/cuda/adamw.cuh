// AdamW (Loshchilov & Hutter, arXiv 1711.05101) on the GPU: the update of optim::AdamW, same
// options and order of operations, for float parameters in device memory. One kernel launch steps
// every registered parameter: a block per 4096-element chunk finds its parameter in a device
// table of segments (uploaded when the set of parameters changes).
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/optim/adamw.hpp"
#include "ssmkit/optim/cuda/segments.cuh"

#include <cuda_runtime.h>

#include <cmath>
#include <type_traits>
#include <vector>

namespace ssmkit::optim {

namespace detail {

constexpr int kAdamThreads = 256;
constexpr Index kAdamChunk = 4096;  ///< elements per block

/// A registered parameter: its views' data and strides, its moments' offset in the optimizer's
/// moment buffers, the first block (chunk) that steps it, and the optimizer's step count when it
/// was added (its own count is the difference).
struct AdamSegment {
  float* param;
  const float* grad;
  Index param_s, grad_s, n, moment_offset, first_block;
  long steps_before;
  bool decay;
};

/// The per-step constants, each rounded to float as the CPU step rounds it, and what the bias
/// corrections of each parameter's own step count are computed from (in double, as on the CPU).
struct AdamStep {
  float one_minus_b1, b2, one_minus_b2, shrink, eps;
  double lr, beta1, beta2;
  long steps;  ///< the optimizer's, this one included
};

template <class T>
__global__ void __launch_bounds__(kAdamThreads)
    adamw_step_kernel(const AdamSegment* segments, int count, T* exp_avg, T* exp_avg_sq,
                      const AdamStep k) {
  Index begin = 0, end = 0;
  const AdamSegment s = find_segment(segments, count, blockIdx.x, kAdamChunk, begin, end);
  const T shrink = s.decay ? k.shrink : T(1);
  const double t = static_cast<double>(k.steps - s.steps_before);
  const T step_size = static_cast<T>(k.lr / (1 - pow(k.beta1, t)));
  const T bc2_sqrt = static_cast<T>(sqrt(1 - pow(k.beta2, t)));
  T* m = exp_avg + s.moment_offset;
  T* v = exp_avg_sq + s.moment_offset;
  for (Index i = begin + threadIdx.x; i < end; i += kAdamThreads) {
    const T g = s.grad[i * s.grad_s];
    const T mi = m[i] + (g - m[i]) * k.one_minus_b1;
    const T vi = v[i] * k.b2 + k.one_minus_b2 * g * g;
    m[i] = mi;
    v[i] = vi;
    const T p = s.param[i * s.param_s] * shrink;
    s.param[i * s.param_s] = p - step_size * mi / (sqrtf(vi) / bc2_sqrt + k.eps);
  }
}

}  // namespace detail

/// AdamW over float parameters and gradients in device memory, the moments (float, zero at the
/// start) in device memory too. Steps are ordered on the stream passed to step(); the first step
/// after add() uploads the parameter table and synchronises that stream once. Each parameter
/// counts its own steps, as on the CPU and in PyTorch.
template <class T>
class AdamW<T, Cuda> {
  static_assert(std::is_same_v<T, float>, "AdamW<T, Cuda> steps float parameters");

 public:
  explicit AdamW(const AdamWOptions& options = {}) : options_(options) {
    detail::check_adamw_options(options);
  }

  /// Registers a parameter and the buffer its gradient will be in (same length), both on
  /// Device::CUDA. `decay`: whether weight decay applies (it usually does not to biases, norms
  /// and A_log/D). No gradient may overlap a parameter, and no two parameters may overlap.
  void add(TensorView<float, 1> param, TensorView<const float, 1> grad, bool decay = true) {
    check_device(param, "param", Device::CUDA);
    check_device(grad, "grad", Device::CUDA);
    check_shape(grad, "grad", {param.size(0)});
    const Index n = param.size(0);
    if (n == 0)
      return;
    // One launch reads every gradient while it writes every parameter.
    check_disjoint(grad, "grad", param, "param");
    for (const detail::AdamSegment& s : segments_) {  // updated twice, and racing, if added twice
      const auto before = [&](const float* p, Index stride) {
        return TensorView<const float, 1>::unchecked(p, {s.n}, {stride}, Device::CUDA);
      };
      check_disjoint(param, "param", before(s.param, s.param_s), "a parameter added before");
      check_disjoint(param, "param", before(s.grad, s.grad_s), "a gradient added before");
      check_disjoint(grad, "grad", before(s.param, s.param_s), "a parameter added before");
    }
    segments_.push_back(detail::AdamSegment{param.data(), grad.data(), param.stride(0),
                                            grad.stride(0), n, elements_, blocks_, steps_, decay});
    elements_ += n;
    blocks_ += (n + detail::kAdamChunk - 1) / detail::kAdamChunk;
  }

  /// One update of every registered parameter from its gradient buffer: one kernel launch.
  void step(cudaStream_t stream) {
    detail::check_adamw_options(options_);
    upload(stream);
    ++steps_;
    const float lr = static_cast<float>(options_.lr), b1 = static_cast<float>(options_.beta1);
    const float b2 = static_cast<float>(options_.beta2);
    detail::AdamStep k{};
    k.one_minus_b1 = 1.f - b1;
    k.b2 = b2;
    k.one_minus_b2 = 1.f - b2;
    k.shrink = 1.f - lr * static_cast<float>(options_.weight_decay);
    k.eps = static_cast<float>(options_.eps);
    k.lr = options_.lr;
    k.beta1 = options_.beta1;
    k.beta2 = options_.beta2;
    k.steps = steps_;
    if (blocks_ == 0)
      return;
    SSMKIT_CHECK(blocks_ <= 2147483647, "param", "4096-element chunks", "< 2^31 on CUDA", blocks_);
    detail::adamw_step_kernel<float>
        <<<static_cast<unsigned>(blocks_), detail::kAdamThreads, 0, stream>>>(
            table_.data(), static_cast<int>(segments_.size()), exp_avg_.data(), exp_avg_sq_.data(),
            k);
    SSMKIT_CUDA_CHECK_LAUNCH("adamw_step_kernel");
  }

  /// The options; change lr here for a schedule.
  AdamWOptions& options() { return options_; }
  /// Calls of step() so far.
  long steps() const { return steps_; }

 private:
  /// After add(): grows the moments (keeping those of the parameters stepped so far, zeroing the
  /// new ones) and uploads the table, then waits for the copies so the old buffers can go.
  void upload(cudaStream_t stream) {
    if (uploaded_ == segments_.size())
      return;
    cuda::DeviceBuffer<float> m(elements_, "exp_avg"), v(elements_, "exp_avg_sq");
    const std::size_t kept = static_cast<std::size_t>(exp_avg_.size()) * sizeof(float);
    const std::size_t fresh = static_cast<std::size_t>(elements_) * sizeof(float) - kept;
    if (kept > 0) {
      SSMKIT_CUDA_CHECK(
          cudaMemcpyAsync(m.data(), exp_avg_.data(), kept, cudaMemcpyDeviceToDevice, stream));
      SSMKIT_CUDA_CHECK(
          cudaMemcpyAsync(v.data(), exp_avg_sq_.data(), kept, cudaMemcpyDeviceToDevice, stream));
    }
    SSMKIT_CUDA_CHECK(cudaMemsetAsync(m.data() + exp_avg_.size(), 0, fresh, stream));
    SSMKIT_CUDA_CHECK(cudaMemsetAsync(v.data() + exp_avg_sq_.size(), 0, fresh, stream));
    cuda::DeviceBuffer<detail::AdamSegment> table(static_cast<Index>(segments_.size()),
                                                  "AdamW segments");
    table.copy_from_host_async(segments_.data(), table.size(), stream);
    SSMKIT_CUDA_CHECK(cudaStreamSynchronize(stream));
    exp_avg_ = std::move(m);
    exp_avg_sq_ = std::move(v);
    table_ = std::move(table);
    uploaded_ = segments_.size();
  }

  AdamWOptions options_;
  std::vector<detail::AdamSegment> segments_;
  Index elements_ = 0, blocks_ = 0;
  std::size_t uploaded_ = 0;  ///< segments in table_
  cuda::DeviceBuffer<detail::AdamSegment> table_;
  cuda::DeviceBuffer<float> exp_avg_, exp_avg_sq_;
  long steps_ = 0;
};

}  // namespace ssmkit::optim
