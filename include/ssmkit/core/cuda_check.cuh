// Turns CUDA runtime failures into ssmkit::Error: the failing call's text, the runtime's error
// name and message, and where it happened. Kernel launches are checked with
// SSMKIT_CUDA_CHECK_LAUNCH.
#pragma once

#include "ssmkit/core/error.hpp"

#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <vector>

namespace ssmkit::detail {

[[noreturn]] inline void throw_cuda(cudaError_t status, const char* call, const char* file,
                                    int line) {
  throw Error(concat("ssmkit: CUDA call ", call, " failed at ", file, ":", line, ": ",
                     cudaGetErrorName(status), " (", cudaGetErrorString(status), ")"));
}

}  // namespace ssmkit::detail

/// Evaluates a CUDA runtime call and throws ssmkit::Error unless it returned cudaSuccess.
#define SSMKIT_CUDA_CHECK(call)                                                \
  do {                                                                         \
    const cudaError_t ssmkit_status_ = (call);                                 \
    if (ssmkit_status_ != cudaSuccess)                                         \
      ::ssmkit::detail::throw_cuda(ssmkit_status_, #call, __FILE__, __LINE__); \
  } while (0)

/// Checks the kernel launch that just happened (a bad configuration surfaces here, not at the
/// launch itself); `kernel` names it in the message.
#define SSMKIT_CUDA_CHECK_LAUNCH(kernel)                                                     \
  do {                                                                                       \
    const cudaError_t ssmkit_status_ = cudaGetLastError();                                   \
    if (ssmkit_status_ != cudaSuccess)                                                       \
      ::ssmkit::detail::throw_cuda(ssmkit_status_, "launch of " kernel, __FILE__, __LINE__); \
  } while (0)

namespace ssmkit::cuda {

/// Number of CUDA devices, 0 when there is no driver or no device (never throws).
inline int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" status so later calls start clean
    return 0;
  }
  return n;
}

/// The current device.
inline int current_device() {
  int device = 0;
  SSMKIT_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

/// Throws ssmkit::Error unless `device`, where `what` was made (its memory, cuBLAS handle or
/// cuFFT plans), is the current device.
inline void check_current_device(int device, const char* what) {
  const int current = current_device();
  SSMKIT_CHECK(current == device, what, "current device",
               std::to_string(device) + " (where it was made)", current);
}

namespace detail {

/// ask(device) > 0 for the current device, asked once per device and thread; Tag tells the
/// caches apart.
template <class Tag, class Ask>
int per_device(Ask&& ask) {
  const int device = current_device();
  thread_local std::vector<int> values;  // by device; 0 until asked
  if (device >= static_cast<int>(values.size()))
    values.resize(static_cast<std::size_t>(device) + 1, 0);
  int& v = values[static_cast<std::size_t>(device)];
  if (v == 0)
    v = ask(device);
  return v;
}

}  // namespace detail

/// Multiprocessor count of the current device (launch heuristics and the workspace sizes that
/// follow them use it).
inline int multiprocessor_count() {
  struct Tag;
  return detail::per_device<Tag>([](int device) {
    int count = 0;
    SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    return count;
  });
}

}  // namespace ssmkit::cuda
