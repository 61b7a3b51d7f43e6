// Gradients of a Mamba block (Gu & Dao, arXiv 2312.00752, Fig. 3) on the GPU, the chain of the
// CPU nn::mamba_block_backward in the same order: the forward is recomputed from the block's
// input, then the backward runs through out_proj, the selective scan, dt_proj, x_proj, the
// SiLU-conv1d and in_proj. Weights and gradients are views of DeviceMambaLMWeights (float).
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/kernels/cuda/causal_conv1d.cuh"
#include "ssmkit/kernels/cuda/causal_conv1d_backward.cuh"
#include "ssmkit/kernels/cuda/selective_scan.cuh"
#include "ssmkit/kernels/cuda/selective_scan_backward.cuh"
#include "ssmkit/nn/cuda/grad/device_mamba_lm_weights.cuh"
#include "ssmkit/nn/cuda/grad/linear_backward.cuh"
#include "ssmkit/nn/mamba_block.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <initializer_list>
#include <string>

namespace ssmkit::nn {

/// How often the recomputed forward leaves the selective scan's state for its backward (state
/// sizes N <= 64; larger ones take none).
enum class ScanCheckpoints {
  /// Every selective_scan_checkpoint_interval(N) steps (64 at N <= 16): B·L·d_inner·N/64 floats.
  coarse,
  /// Every kSelectiveScanFineCheckpointInterval (8) steps: 8× the memory; the backward's last
  /// pass walks to no state, and where batch·d_inner fills the GPU it needs no other pass (H100,
  /// B=8 d_inner=2048 L=2048 N=16: the scan's forward + backward 1.51 ms against 1.97 coarse).
  fine,
};

/// Scratch device memory of mamba_block_forward() and mamba_block_backward(): the recomputed
/// forward's internals, their gradients, the scan's checkpoints, the kernels' workspace and the
/// cuBLAS handle. It grows to the largest call: reserve() allocates the buffers of a (batch, L)
/// up front, the scan's and conv's workspace is sized by the first call; later calls of that
/// size allocate nothing.
class MambaBlockBackwardWorkspace {
 public:
  explicit MambaBlockBackwardWorkspace(const cuda::CudaOptions& options = {},
                                       ScanCheckpoints checkpoints = ScanCheckpoints::fine)
      : device_(cuda::current_device()), linear_(options), checkpoints_kind_(checkpoints) {}

  /// The device its memory is on, the one current when it was made; calls with it need it
  /// current.
  int device() const { return device_; }

  /// Room for blocks of config `c` on (batch, L) sequences.
  void reserve(const MambaBlockConfig& c, Index batch, Index L) {
    const Index tokens = batch * L, di = c.d_inner, width = c.dt_rank + 2 * c.d_state;
    for (auto* b : {&xz_, &dxz_})
      grow(*b, tokens * 2 * di);
    for (auto* b : {&u_, &delta_, &y_, &dy_, &du_, &ddelta_})
      grow(*b, tokens * di);
    for (auto* b : {&xdbl_, &dxdbl_})
      grow(*b, tokens * width);
    for (auto* b : {&A_, &dA_})
      grow(*b, di * c.d_state);
    grow(checkpoints_, checkpoint_count(c, L) * batch * di * c.d_state);
    linear_.reserve(tokens);
  }

  cuda::LinearBackwardWorkspace& linear() { return linear_; }

 private:
  friend void mamba_block_forward(const MambaBlockConfig&,
                                  const MambaBlockWeightViews<const float>&,
                                  TensorView<const float, 3>, TensorView<float, 3>,
                                  MambaBlockBackwardWorkspace&, cudaStream_t, bool);
  friend void mamba_block_backward(const MambaBlockConfig&,
                                   const MambaBlockWeightViews<const float>&,
                                   TensorView<const float, 3>, TensorView<const float, 3>,
                                   TensorView<float, 3>, const MambaBlockWeightViews<float>&,
                                   MambaBlockBackwardWorkspace&, cudaStream_t);

  /// The selective scan's inputs (SelectiveScanParams or SelectiveScanBackwardParams) as
  /// mamba_block_forward leaves them here for (batch, L) sequences.
  template <class Scan>
  void scan_inputs(Scan& s, const MambaBlockConfig& c, const MambaBlockWeightViews<const float>& w,
                   Index batch, Index L);

  /// Steps between the scan's checkpoints, and how many a sequence has: the forward takes them
  /// where the backward can start from them (N <= 64, see selective_scan_checkpoint_interval).
  Index checkpoint_interval(const MambaBlockConfig& c) const {
    return checkpoints_kind_ == ScanCheckpoints::fine
               ? kSelectiveScanFineCheckpointInterval
               : selective_scan_checkpoint_interval(c.d_state);
  }
  Index checkpoint_count(const MambaBlockConfig& c, Index L) const {
    const Index every = checkpoint_interval(c);
    return c.d_state <= 64 ? (L + every - 1) / every : 0;
  }

  static void grow(cuda::DeviceBuffer<float>& b, Index n) {
    if (b.size() < n)
      b = cuda::DeviceBuffer<float>(n, "block backward workspace");
  }
  void* scratch(std::size_t bytes) {
    if (scratch_.bytes() < bytes)
      scratch_ = cuda::DeviceBuffer<unsigned char>(static_cast<Index>(bytes), "kernel workspace");
    return scratch_.data();
  }

  int device_;
  cuda::LinearBackwardWorkspace linear_;
  cuda::DeviceBuffer<float> xz_, u_, xdbl_, delta_, y_, A_;
  cuda::DeviceBuffer<float> dxz_, dy_, du_, ddelta_, dxdbl_, dA_;
  ScanCheckpoints checkpoints_kind_;
  cuda::DeviceBuffer<float> checkpoints_;      // the forward's, which the backward starts from
  cuda::DeviceBuffer<unsigned char> scratch_;  // scan and conv workspaces, one call at a time
};

namespace detail {

constexpr int kBlockGradThreads = 256;

inline unsigned elementwise_blocks(Index n) {
  return static_cast<unsigned>(
      std::min<Index>((n + kBlockGradThreads - 1) / kBlockGradThreads, Index{65535} * 8));
}

/// A = −exp(A_log), as the CPU block derives it.
static __global__ void __launch_bounds__(kBlockGradThreads)
    neg_exp_kernel(const float* A_log, float* A, Index n) {
  for (Index i = blockIdx.x * Index{kBlockGradThreads} + threadIdx.x; i < n;
       i += Index{gridDim.x} * kBlockGradThreads)
    A[i] = -expf(A_log[i]);
}

/// dA_log = dA·A (dA/dA_log = −exp(A_log) = A).
static __global__ void __launch_bounds__(kBlockGradThreads)
    chain_A_log_kernel(const float* dA, const float* A, float* dA_log, Index n) {
  for (Index i = blockIdx.x * Index{kBlockGradThreads} + threadIdx.x; i < n;
       i += Index{gridDim.x} * kBlockGradThreads)
    dA_log[i] = dA[i] * A[i];
}

/// acc += x over n contiguous floats.
static __global__ void __launch_bounds__(kBlockGradThreads)
    add_kernel(float* acc, const float* x, Index n) {
  for (Index i = blockIdx.x * Index{kBlockGradThreads} + threadIdx.x; i < n;
       i += Index{gridDim.x} * kBlockGradThreads)
    acc[i] += x[i];
}

inline void add(float* acc, const float* x, Index n, cudaStream_t stream) {
  if (n == 0)
    return;
  add_kernel<<<elementwise_blocks(n), kBlockGradThreads, 0, stream>>>(acc, x, n);
  SSMKIT_CUDA_CHECK_LAUNCH("add_kernel");
}

/// Throws unless every view of `w` is on the device with the shape `c` gives it (optional
/// biases absent or present); `like`, when given, fixes which biases are present.
template <class E>
void check_block_views(const MambaBlockConfig& c, const MambaBlockWeightViews<E>& w,
                       const std::string& arg,
                       const MambaBlockWeightViews<const float>* like = nullptr) {
  const Index dm = c.d_model, di = c.d_inner, N = c.d_state, R = c.dt_rank;
  auto need = [&](const auto& v, const char* name, const auto& shape) {
    const std::string a = arg + "." + name;
    SSMKIT_CHECK(!v.absent(), a.c_str(), "presence", "a view", "absent");
    check_shape(v, a.c_str(), shape);
    check_device(v, a.c_str(), Device::CUDA);
  };
  auto optional = [&](const auto& v, const char* name, Index n, const auto* mirror) {
    const std::string a = arg + "." + name;
    if (mirror != nullptr)
      SSMKIT_CHECK(v.absent() == mirror->absent(), a.c_str(), "presence",
                   mirror->absent() ? "absent, as the weight's" : "present, as the weight's",
                   v.absent() ? "absent" : "present");
    if (v.absent())
      return;
    check_shape(v, a.c_str(), {n});
    check_device(v, a.c_str(), Device::CUDA);
  };
  need(w.in_proj_weight, "in_proj_weight", Shape<2>{2 * di, dm});
  optional(w.in_proj_bias, "in_proj_bias", 2 * di, like ? &like->in_proj_bias : nullptr);
  need(w.conv1d_weight, "conv1d_weight", Shape<2>{di, c.d_conv});
  optional(w.conv1d_bias, "conv1d_bias", di, like ? &like->conv1d_bias : nullptr);
  need(w.x_proj_weight, "x_proj_weight", Shape<2>{R + 2 * N, di});
  need(w.dt_proj_weight, "dt_proj_weight", Shape<2>{di, R});
  need(w.dt_proj_bias, "dt_proj_bias", Shape<1>{di});
  need(w.A_log, "A_log", Shape<2>{di, N});
  need(w.D, "D", Shape<1>{di});
  need(w.out_proj_weight, "out_proj_weight", Shape<2>{dm, di});
  optional(w.out_proj_bias, "out_proj_bias", dm, like ? &like->out_proj_bias : nullptr);
  const std::array<TensorView<E, 2>, 6> matrices{w.in_proj_weight, w.conv1d_weight,
                                                 w.x_proj_weight,  w.dt_proj_weight,
                                                 w.A_log,          w.out_proj_weight};
  for (const auto& m : matrices)
    SSMKIT_CHECK(m.stride(1) == 1, (arg + " matrices").c_str(), "inner stride", "1", m.stride(1));
  // exp(A_log) and its chain rule run over A_log as one array.
  SSMKIT_CHECK(w.A_log.stride(0) == N || di <= 1, (arg + ".A_log").c_str(), "row stride",
               std::to_string(N) + " (contiguous)", w.A_log.stride(0));
}

template <class E>
void check_sequence(const TensorView<E, 3>& v, const char* arg, Index batch, Index L, Index dm) {
  check_device(v, arg, Device::CUDA);
  check_shape(v, arg, {batch, L, dm});
  SSMKIT_CHECK(v.is_contiguous(), arg, "layout", "contiguous", "strided");
}

template <class P>
TensorView<P, 2> rows(P* p, Index rows, Index cols, Index ld) {
  return TensorView<P, 2>::unchecked(p, {rows, cols}, {ld, 1}, Device::CUDA);
}
/// (batch, L, channels) of token-major rows `ld` apart.
template <class P>
TensorView<P, 3> sequence(P* p, Index batch, Index L, Index channels, Index ld) {
  return TensorView<P, 3>::unchecked(p, {batch, L, channels}, {L * ld, ld, 1}, Device::CUDA);
}
/// B or C, columns [col, col + N) of x_proj's output rows, one group.
template <class P>
TensorView<P, 4> state_rows(P* xdbl, Index col, Index batch, Index L, Index N, Index width) {
  return TensorView<P, 4>::unchecked(xdbl + col, {batch, L, 1, N}, {L * width, width, N, 1},
                                     Device::CUDA);
}

}  // namespace detail

template <class Scan>
void MambaBlockBackwardWorkspace::scan_inputs(Scan& s, const MambaBlockConfig& c,
                                              const MambaBlockWeightViews<const float>& w,
                                              Index batch, Index L) {
  using detail::sequence;
  const Index di = c.d_inner, N = c.d_state, R = c.dt_rank, width = R + 2 * N;
  s.u = sequence<const float>(u_.data(), batch, L, di, di);
  s.delta = sequence<const float>(delta_.data(), batch, L, di, di);
  s.A = detail::rows<const float>(A_.data(), di, N, N);
  s.B = detail::state_rows<const float>(xdbl_.data(), R, batch, L, N, width);
  s.C = detail::state_rows<const float>(xdbl_.data(), R + N, batch, L, N, width);
  s.D_skip = w.D;
  s.delta_bias = w.dt_proj_bias;
  s.z = sequence<const float>(xz_.data() + di, batch, L, di, 2 * di);
  s.delta_softplus = true;
  const Index count = checkpoint_count(c, L);
  if (count > 0 && batch > 0 && di > 0) {
    const Shape<4> shape{count, batch, di, N};
    s.checkpoints = decltype(s.checkpoints)::unchecked(checkpoints_.data(), shape,
                                                       contiguous_strides<4>(shape), Device::CUDA);
    s.checkpoint_interval = checkpoint_interval(c);
  }
}

/// out (batch, L, d_model) = block(x), or out += block(x) with `accumulate` (a residual stream),
/// for a block of config `c` with weights `w` (device views), from zero states; x and out device,
/// contiguous, not overlapping; out may be absent. Leaves the internals in `ws`. Ordered on
/// `stream`; throws ssmkit::Error.
inline void mamba_block_forward(const MambaBlockConfig& c,
                                const MambaBlockWeightViews<const float>& w,
                                TensorView<const float, 3> x, TensorView<float, 3> out,
                                MambaBlockBackwardWorkspace& ws, cudaStream_t stream,
                                bool accumulate = false) {
  const Index batch = x.size(0), L = x.size(1), dm = c.d_model, di = c.d_inner;
  const Index N = c.d_state, R = c.dt_rank, width = R + 2 * N, tokens = batch * L;
  c.validate();
  cuda::check_current_device(ws.device_, "ws");
  detail::check_block_views(c, w, "weights");
  detail::check_sequence(x, "x", batch, L, dm);
  if (!out.absent())
    detail::check_sequence(out, "out", batch, L, dm);
  if (tokens == 0)
    return;
  ws.reserve(c, batch, L);
  using detail::rows;
  using detail::sequence;
  cuda::LinearBackwardWorkspace& lin = ws.linear_;
  float *xz = ws.xz_.data(), *u = ws.u_.data(), *xdbl = ws.xdbl_.data();
  cuda::linear_forward(lin, rows(x.data(), tokens, dm, dm), w.in_proj_weight, w.in_proj_bias,
                       rows(xz, tokens, 2 * di, 2 * di), stream);
  CausalConv1dParams<float> conv;
  conv.x = sequence<const float>(xz, batch, L, di, 2 * di);
  conv.weight = w.conv1d_weight;
  conv.bias = w.conv1d_bias;
  conv.out = sequence(u, batch, L, di, di);
  conv.silu = true;
  cuda::causal_conv1d(conv, stream);
  cuda::linear_forward(lin, rows<const float>(u, tokens, di, di), w.x_proj_weight, {},
                       rows(xdbl, tokens, width, width), stream);
  cuda::linear_forward(lin, rows<const float>(xdbl, tokens, R, width), w.dt_proj_weight, {},
                       rows(ws.delta_.data(), tokens, di, di), stream);
  const Index dn = di * N;
  detail::neg_exp_kernel<<<detail::elementwise_blocks(dn), detail::kBlockGradThreads, 0, stream>>>(
      w.A_log.data(), ws.A_.data(), dn);
  SSMKIT_CUDA_CHECK_LAUNCH("neg_exp_kernel");
  SelectiveScanParams<float> s;
  ws.scan_inputs(s, c, w, batch, L);
  s.out = sequence(ws.y_.data(), batch, L, di, di);
  const std::size_t scan_bytes = cuda::selective_scan_workspace_size(s);
  cuda::selective_scan(s, stream, ws.scratch(scan_bytes), scan_bytes);
  if (!out.absent())
    cuda::linear_forward(lin, rows<const float>(ws.y_.data(), tokens, di, di), w.out_proj_weight,
                         w.out_proj_bias, rows(out.data(), tokens, dm, dm), stream, accumulate);
}

/// Given the block's input x and dout = ∂ℓ/∂out (batch, L, d_model, device, contiguous), for a
/// forward from zero states: writes dx (which must not overlap them) and overwrites every view of
/// `grads` (laid out as `w`) with the gradient of the matching weight, A_log's included. Ordered
/// on `stream`. As nn::mamba_block_backward on the CPU; throws ssmkit::Error.
inline void mamba_block_backward(const MambaBlockConfig& c,
                                 const MambaBlockWeightViews<const float>& w,
                                 TensorView<const float, 3> x, TensorView<const float, 3> dout,
                                 TensorView<float, 3> dx, const MambaBlockWeightViews<float>& grads,
                                 MambaBlockBackwardWorkspace& ws, cudaStream_t stream) {
  const Index batch = x.size(0), L = x.size(1), dm = c.d_model, di = c.d_inner;
  const Index N = c.d_state, R = c.dt_rank, width = R + 2 * N, tokens = batch * L;
  c.validate();
  cuda::check_current_device(ws.device_, "ws");
  detail::check_block_views(c, grads, "grads", &w);
  detail::check_sequence(dout, "dout", batch, L, dm);
  detail::check_sequence(dx, "dx", batch, L, dm);
  // The forward again (it checks w and x), keeping what the backward reads.
  mamba_block_forward(c, w, x, {}, ws, stream);
  if (tokens == 0) {  // every gradient is zero; rows of `width` floats, `stride` apart
    const auto zero = [&](float* data, Index rows, Index stride, Index width) {
      SSMKIT_CUDA_CHECK(cudaMemset2DAsync(data, sizeof(float) * std::max(stride, width), 0,
                                          sizeof(float) * width, rows, stream));
    };
    for (const auto& g :
         {grads.in_proj_bias, grads.conv1d_bias, grads.dt_proj_bias, grads.D, grads.out_proj_bias})
      if (!g.absent())
        zero(g.data(), g.size(0), g.stride(0), 1);
    for (const auto& g : {grads.in_proj_weight, grads.conv1d_weight, grads.x_proj_weight,
                          grads.dt_proj_weight, grads.A_log, grads.out_proj_weight})
      zero(g.data(), g.size(0), g.stride(0), g.size(1));
    return;
  }
  using detail::rows;
  using detail::sequence;
  cuda::LinearBackwardWorkspace& lin = ws.linear_;
  float *xz = ws.xz_.data(), *u = ws.u_.data(), *xdbl = ws.xdbl_.data(), *y = ws.y_.data();
  float *dxz = ws.dxz_.data(), *dy = ws.dy_.data(), *du = ws.du_.data();
  float *dxdbl = ws.dxdbl_.data(), *ddelta = ws.ddelta_.data();

  cuda::linear_backward(lin, rows<const float>(y, tokens, di, di), w.out_proj_weight,
                        rows(dout.data(), tokens, dm, dm), rows(dy, tokens, di, di),
                        grads.out_proj_weight, grads.out_proj_bias, stream);
  SelectiveScanBackwardParams<float> s;
  ws.scan_inputs(s, c, w, batch, L);
  s.dout = sequence<const float>(dy, batch, L, di, di);
  s.du = sequence(du, batch, L, di, di);
  s.ddelta = sequence(ddelta, batch, L, di, di);
  s.dA = rows(ws.dA_.data(), di, N, N);
  s.dB = detail::state_rows(dxdbl, R, batch, L, N, width);
  s.dC = detail::state_rows(dxdbl, R + N, batch, L, N, width);
  s.dD_skip = grads.D;
  s.ddelta_bias = grads.dt_proj_bias;
  s.dz = sequence(dxz + di, batch, L, di, 2 * di);
  const std::size_t scan_bytes = cuda::selective_scan_backward_workspace_size(s);
  cuda::selective_scan_backward(s, stream, ws.scratch(scan_bytes), scan_bytes);
  const Index dn = di * N;
  detail::
      chain_A_log_kernel<<<detail::elementwise_blocks(dn), detail::kBlockGradThreads, 0, stream>>>(
          ws.dA_.data(), ws.A_.data(), grads.A_log.data(), dn);
  SSMKIT_CUDA_CHECK_LAUNCH("chain_A_log_kernel");
  cuda::linear_backward(lin, rows<const float>(xdbl, tokens, R, width), w.dt_proj_weight,
                        rows<const float>(ddelta, tokens, di, di), rows(dxdbl, tokens, R, width),
                        grads.dt_proj_weight, {}, stream);
  // du already holds the scan's ∂ℓ/∂u; x_proj's adds to it.
  cuda::linear_backward(lin, rows<const float>(u, tokens, di, di), w.x_proj_weight,
                        rows<const float>(dxdbl, tokens, width, width), rows(du, tokens, di, di),
                        grads.x_proj_weight, {}, stream, false, /*accumulate_dx=*/true);
  CausalConv1dBackwardParams<float> conv;
  conv.x = sequence<const float>(xz, batch, L, di, 2 * di);
  conv.weight = w.conv1d_weight;
  conv.bias = w.conv1d_bias;
  conv.silu = true;
  conv.dout = sequence<const float>(du, batch, L, di, di);
  conv.dx = sequence(dxz, batch, L, di, 2 * di);
  conv.dweight = grads.conv1d_weight;
  conv.dbias = grads.conv1d_bias;
  const std::size_t conv_bytes = cuda::causal_conv1d_backward_workspace_size(conv);
  cuda::causal_conv1d_backward(conv, stream, ws.scratch(conv_bytes), conv_bytes);
  cuda::linear_backward(lin, rows(x.data(), tokens, dm, dm), w.in_proj_weight,
                        rows<const float>(dxz, tokens, 2 * di, 2 * di),
                        rows(dx.data(), tokens, dm, dm), grads.in_proj_weight, grads.in_proj_bias,
                        stream);
}

}  // namespace ssmkit::nn
