// An owning, typed CUDA device allocation (RAII): the GPU counterpart of HostTensor. It hands out
// validated views tagged Device::CUDA and copies to and from the host on a caller's stream.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/tensor_view.hpp"

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace ssmkit::cuda {

/// `count` elements of T in device memory, uninitialised. Move-only.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;

  explicit DeviceBuffer(Index count, const char* name = "device buffer") : count_(count) {
    SSMKIT_CHECK(count >= 0, name, "element count", ">= 0", count);
    if (count > 0)
      SSMKIT_CUDA_CHECK(cudaMalloc(&data_, bytes()));
  }

  DeviceBuffer(DeviceBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { release(); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  Index size() const { return count_; }
  std::size_t bytes() const { return static_cast<std::size_t>(count_) * sizeof(T); }

  /// A view of the buffer with `shape` and `strides` (contiguous row-major when omitted); the
  /// view's extent is checked against the allocation.
  template <int Rank>
  TensorView<T, Rank> view(const Shape<Rank>& shape, const Shape<Rank>& strides,
                           const char* name = "device buffer") {
    return TensorView<T, Rank>(data_, shape, strides, name, Device::CUDA, count_);
  }
  template <int Rank>
  TensorView<T, Rank> view(const Shape<Rank>& shape, const char* name = "device buffer") {
    return view<Rank>(shape, contiguous_strides<Rank>(shape), name);
  }

  /// Copies `count` elements from host memory `src` into the buffer's start, ordered on `stream`.
  void copy_from_host_async(const T* src, Index count, cudaStream_t stream) {
    check_count(count, "copy_from_host_async(count)");
    SSMKIT_CUDA_CHECK(cudaMemcpyAsync(data_, src, static_cast<std::size_t>(count) * sizeof(T),
                                      cudaMemcpyHostToDevice, stream));
  }

  /// Copies the buffer's first `count` elements to host memory `dst`, ordered on `stream`.
  void copy_to_host_async(T* dst, Index count, cudaStream_t stream) const {
    check_count(count, "copy_to_host_async(count)");
    SSMKIT_CUDA_CHECK(cudaMemcpyAsync(dst, data_, static_cast<std::size_t>(count) * sizeof(T),
                                      cudaMemcpyDeviceToHost, stream));
  }

  /// Sets every byte to `value`, ordered on `stream` (0xFF poisons floats with NaN).
  void fill_bytes_async(int value, cudaStream_t stream) {
    if (count_ > 0)
      SSMKIT_CUDA_CHECK(cudaMemsetAsync(data_, value, bytes(), stream));
  }

 private:
  void check_count(Index count, const char* arg) const {
    SSMKIT_CHECK(count >= 0 && count <= count_, arg, "element count",
                 "in [0, " + std::to_string(count_) + "]", count);
  }
  void release() noexcept {
    if (data_ != nullptr)
      cudaFree(data_);  // errors here cannot be reported from a destructor
    data_ = nullptr;
    count_ = 0;
  }

  T* data_ = nullptr;
  Index count_ = 0;
};

namespace detail {

/// Throws ssmkit::Error unless `workspace` holds `need` bytes (none needed when need is 0) and is
/// 16-byte aligned, as cudaMalloc and the stream-ordered pool return it: kernels store their
/// partial results there as float vectors.
inline void check_workspace(const void* workspace, std::size_t workspace_bytes, std::size_t need) {
  if (need == 0)
    return;
  SSMKIT_CHECK(workspace != nullptr && workspace_bytes >= need, "workspace", "bytes",
               ">= " + std::to_string(need), workspace == nullptr ? 0 : workspace_bytes);
  SSMKIT_CHECK(reinterpret_cast<std::uintptr_t>(workspace) % 16 == 0, "workspace",
               "address modulo 16", "0 (16-byte aligned)",
               reinterpret_cast<std::uintptr_t>(workspace) % 16);
}

}  // namespace detail

/// Calls fn(workspace, bytes) with `bytes` of device memory taken from the stream-ordered pool
/// (nullptr when bytes is 0) and handed back to it afterwards, also when fn throws.
template <class F>
void with_pool_workspace(std::size_t bytes, cudaStream_t stream, F&& fn) {
  void* ws = nullptr;
  if (bytes > 0)
    SSMKIT_CUDA_CHECK(cudaMallocAsync(&ws, bytes, stream));
  try {
    fn(ws, bytes);
  } catch (...) {
    if (ws != nullptr)
      cudaFreeAsync(ws, stream);
    throw;
  }
  if (ws != nullptr)
    SSMKIT_CUDA_CHECK(cudaFreeAsync(ws, stream));
}

}  // namespace ssmkit::cuda
