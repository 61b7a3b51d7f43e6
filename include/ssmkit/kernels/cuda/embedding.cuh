// Embedding lookup on the GPU: out[t, f] = float(table[ids[t], f]) for a batch of token ids held
// in device memory (a decoding loop's argmax output, so no copy to the host).
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/dtype.cuh"
#include "ssmkit/core/tensor_view.hpp"

#include <cuda_runtime.h>

#include <cstdint>

namespace ssmkit::cuda {

namespace detail {

constexpr int kEmbedThreads = 256;

/// One block per token. Ids outside the table (never produced by a validated caller) read row 0
/// rather than foreign memory.
template <class W>
__global__ void __launch_bounds__(kEmbedThreads)
    embedding_kernel(const std::int64_t* ids, Index ids_s, const W* table, Index ldt, Index vocab,
                     float* out, Index ldo, int features) {
  const std::int64_t id = ids[static_cast<Index>(blockIdx.x) * ids_s];
  const W* row = table + (id >= 0 && id < vocab ? id : 0) * ldt;
  float* o = out + static_cast<Index>(blockIdx.x) * ldo;
  for (int f = static_cast<int>(threadIdx.x); f < features; f += kEmbedThreads)
    o[f] = to_float(row[f]);
}

}  // namespace detail

/// out (tokens, features) = table (vocab, features) rows `ids` (tokens), ordered on `stream`.
/// All on Device::CUDA. Ids are the caller's to validate (they live on the device).
template <class W>
void embedding(TensorView<const std::int64_t, 1> ids, TensorView<const W, 2> table,
               TensorView<float, 2> out, cudaStream_t stream) {
  check_device(ids, "ids", Device::CUDA);
  check_device(table, "table", Device::CUDA);
  check_device(out, "out", Device::CUDA);
  const Index tokens = ids.size(0), features = table.size(1);
  check_shape(out, "out", {tokens, features});
  SSMKIT_CHECK(table.stride(1) == 1, "table", "feature stride", "1", table.stride(1));
  SSMKIT_CHECK(out.stride(1) == 1, "out", "feature stride", "1", out.stride(1));
  SSMKIT_CHECK(tokens <= 2147483647, "ids", "tokens", "< 2^31 on CUDA", tokens);
  SSMKIT_CHECK(features <= 2147483647, "table", "features", "< 2^31 on CUDA", features);
  SSMKIT_CHECK(table.size(0) >= 1 || tokens == 0, "table", "vocab size = size(0)",
               ">= 1 when there are ids", table.size(0));
  if (tokens == 0)
    return;
  detail::embedding_kernel<W><<<static_cast<unsigned>(tokens), detail::kEmbedThreads, 0, stream>>>(
      ids.data(), ids.stride(0), table.data(), table.stride(0), table.size(0), out.data(),
      out.stride(0), static_cast<int>(features));
  SSMKIT_CUDA_CHECK_LAUNCH("embedding_kernel");
}

}  // namespace ssmkit::cuda
