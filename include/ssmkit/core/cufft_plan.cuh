// cuFFT failures as ssmkit::Error (the call's text and the cufftResult's name), and an owning
// handle of one batched 1-D real transform (R2C/D2Z or C2R/Z2D), destroyed with its owner.
#pragma once

#include "ssmkit/core/cuda_check.cuh"

#include <cufft.h>

#include <utility>

namespace ssmkit::detail {

inline const char* cufft_result_name(cufftResult r) {
  switch (r) {
    case CUFFT_SUCCESS:
      return "CUFFT_SUCCESS";
    case CUFFT_INVALID_PLAN:
      return "CUFFT_INVALID_PLAN";
    case CUFFT_ALLOC_FAILED:
      return "CUFFT_ALLOC_FAILED";
    case CUFFT_INVALID_TYPE:
      return "CUFFT_INVALID_TYPE";
    case CUFFT_INVALID_VALUE:
      return "CUFFT_INVALID_VALUE";
    case CUFFT_INTERNAL_ERROR:
      return "CUFFT_INTERNAL_ERROR";
    case CUFFT_EXEC_FAILED:
      return "CUFFT_EXEC_FAILED";
    case CUFFT_SETUP_FAILED:
      return "CUFFT_SETUP_FAILED";
    case CUFFT_INVALID_SIZE:
      return "CUFFT_INVALID_SIZE";
    case CUFFT_UNALIGNED_DATA:
      return "CUFFT_UNALIGNED_DATA";
    case CUFFT_INVALID_DEVICE:
      return "CUFFT_INVALID_DEVICE";
    case CUFFT_NO_WORKSPACE:
      return "CUFFT_NO_WORKSPACE";
    case CUFFT_NOT_IMPLEMENTED:
      return "CUFFT_NOT_IMPLEMENTED";
    case CUFFT_NOT_SUPPORTED:
      return "CUFFT_NOT_SUPPORTED";
    default:
      return "unknown cufftResult";
  }
}

[[noreturn]] inline void throw_cufft(cufftResult r, const char* call, const char* file, int line) {
  throw Error(concat("ssmkit: cuFFT call ", call, " failed at ", file, ":", line, ": ",
                     cufft_result_name(r), " (", static_cast<int>(r), ")"));
}

}  // namespace ssmkit::detail

/// Evaluates a cuFFT call and throws ssmkit::Error unless it returned CUFFT_SUCCESS.
#define SSMKIT_CUFFT_CHECK(call)                                               \
  do {                                                                         \
    const cufftResult ssmkit_cufft_ = (call);                                  \
    if (ssmkit_cufft_ != CUFFT_SUCCESS)                                        \
      ::ssmkit::detail::throw_cufft(ssmkit_cufft_, #call, __FILE__, __LINE__); \
  } while (0)

namespace ssmkit::cuda {

/// Real transforms of one precision: the cuFFT types and exec calls of T (float or double).
template <class T>
struct CufftReal;
template <>
struct CufftReal<float> {
  using complex = cufftComplex;
  static constexpr cufftType forward = CUFFT_R2C, inverse = CUFFT_C2R;
  static cufftResult exec_forward(cufftHandle h, float* in, complex* out) {
    return cufftExecR2C(h, in, out);
  }
  static cufftResult exec_inverse(cufftHandle h, complex* in, float* out) {
    return cufftExecC2R(h, in, out);
  }
};
template <>
struct CufftReal<double> {
  using complex = cufftDoubleComplex;
  static constexpr cufftType forward = CUFFT_D2Z, inverse = CUFFT_Z2D;
  static cufftResult exec_forward(cufftHandle h, double* in, complex* out) {
    return cufftExecD2Z(h, in, out);
  }
  static cufftResult exec_inverse(cufftHandle h, complex* in, double* out) {
    return cufftExecZ2D(h, in, out);
  }
};

/// `batch` contiguous real rows of length n (distance n) and their half spectra (distance
/// n/2 + 1), transformed one way. Move-only; the handle is destroyed with the object.
class CufftPlan {
 public:
  CufftPlan() = default;
  CufftPlan(long long n, long long batch, cufftType type) : n_(n), batch_(batch), type_(type) {
    SSMKIT_CHECK(n >= 1, "cuFFT plan", "length", ">= 1", n);
    SSMKIT_CHECK(batch >= 1, "cuFFT plan", "batch", ">= 1", batch);
    SSMKIT_CUFFT_CHECK(cufftCreate(&handle_));
    const bool to_complex = type == CUFFT_R2C || type == CUFFT_D2Z;
    long long len = n, real_dist = n, complex_dist = n / 2 + 1;
    std::size_t work = 0;
    const cufftResult r =
        cufftMakePlanMany64(handle_, 1, &len, nullptr, 1, to_complex ? real_dist : complex_dist,
                            nullptr, 1, to_complex ? complex_dist : real_dist, type, batch, &work);
    if (r != CUFFT_SUCCESS) {
      cufftDestroy(handle_);
      ssmkit::detail::throw_cufft(r, "cufftMakePlanMany64", __FILE__, __LINE__);
    }
    valid_ = true;
  }
  CufftPlan(CufftPlan&& o) noexcept
      : handle_(o.handle_),
        valid_(std::exchange(o.valid_, false)),
        n_(o.n_),
        batch_(o.batch_),
        type_(o.type_) {}
  CufftPlan& operator=(CufftPlan&& o) noexcept {
    if (this != &o) {
      release();
      handle_ = o.handle_;
      valid_ = std::exchange(o.valid_, false);
      n_ = o.n_;
      batch_ = o.batch_;
      type_ = o.type_;
    }
    return *this;
  }
  CufftPlan(const CufftPlan&) = delete;
  CufftPlan& operator=(const CufftPlan&) = delete;
  ~CufftPlan() { release(); }

  bool matches(long long n, long long batch, cufftType type) const {
    return valid_ && n_ == n && batch_ == batch && type_ == type;
  }
  /// The handle, bound to `stream` for the next exec call.
  cufftHandle on(cudaStream_t stream) const {
    SSMKIT_CUFFT_CHECK(cufftSetStream(handle_, stream));
    return handle_;
  }

 private:
  void release() noexcept {
    if (valid_)
      cufftDestroy(handle_);  // errors here cannot be reported from a destructor
    valid_ = false;
  }

  cufftHandle handle_{};
  bool valid_ = false;
  long long n_ = 0, batch_ = 0;
  cufftType type_ = CUFFT_R2C;
};

}  // namespace ssmkit::cuda
