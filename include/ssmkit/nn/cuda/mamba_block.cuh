// The Mamba block on the GPU (Gu & Dao, arXiv 2312.00752, Fig. 3), the same math as the CPU
// nn::MambaBlock: in_proj → x|z; causal conv1d + SiLU; x_proj → (δ, B, C); dt_proj; selective
// scan (a whole sequence) or, for a decoding token, the fused inner step (kernels/cuda/
// mamba_inner_step.cuh) for one sequence and the conv step + selective state update for more;
// out_proj.
// MambaBlock<T, Cuda> stores its projection matrices as T (float or __nv_bfloat16); activations,
// the small parameters (conv, A, D, biases) and the states are float.
#pragma once

#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/kernels/cuda/causal_conv1d.cuh"
#include "ssmkit/kernels/cuda/mamba_inner_step.cuh"
#include "ssmkit/kernels/cuda/selective_scan.cuh"
#include "ssmkit/kernels/cuda/selective_state_update.cuh"
#include "ssmkit/nn/cuda/linear.cuh"
#include "ssmkit/nn/mamba_block.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

namespace ssmkit::nn {

/// The decoding state of `batch` sequences in device memory (float): conv (batch, d_inner,
/// d_conv − 1) and ssm (batch, d_inner, d_state), as MambaBlockState on the CPU. Move-only.
class DeviceMambaBlockState {
 public:
  DeviceMambaBlockState() = default;
  /// Zero states (empty prefixes), set on `stream`.
  DeviceMambaBlockState(const MambaBlockConfig& c, Index batch, cudaStream_t stream)
      : batch_(batch),
        d_inner_(c.d_inner),
        taps_(c.d_conv - 1),
        N_(c.d_state),
        conv_(batch * c.d_inner * (c.d_conv - 1), "conv state"),
        ssm_(batch * c.d_inner * c.d_state, "ssm state") {
    reset(stream);
  }

  Index batch() const { return batch_; }

  /// Device views of sequences [first, first + count).
  MambaBlockStateView<float> view(Index first, Index count) {
    SSMKIT_CHECK(first >= 0 && count >= 0 && first + count <= batch_, "state sequences",
                 "range [first, first + count)", "inside [0, " + std::to_string(batch_) + ")",
                 "[" + std::to_string(first) + ", " + std::to_string(first + count) + ")");
    return {
        TensorView<float, 3>::unchecked(conv_.data() + first * d_inner_ * taps_,
                                        {count, d_inner_, taps_}, {d_inner_ * taps_, taps_, 1},
                                        Device::CUDA),
        TensorView<float, 3>::unchecked(ssm_.data() + first * d_inner_ * N_, {count, d_inner_, N_},
                                        {d_inner_ * N_, N_, 1}, Device::CUDA)};
  }
  MambaBlockStateView<float> view() { return view(0, batch_); }

  void reset(cudaStream_t stream) {
    conv_.fill_bytes_async(0, stream);
    ssm_.fill_bytes_async(0, stream);
  }

 private:
  Index batch_ = 0, d_inner_ = 0, taps_ = 0, N_ = 0;
  cuda::DeviceBuffer<float> conv_;
  cuda::DeviceBuffer<float> ssm_;
};

template <class T>
class MambaBlock<T, Cuda> {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, __nv_bfloat16>,
                "the CUDA MambaBlock stores its projections as float or __nv_bfloat16");

 public:
  /// Scratch device memory of forward() and step(), shareable by the blocks of a model on the
  /// device current when it is made. It grows to the largest call (so reserve() it before
  /// capturing calls in a CUDA graph) and holds the cuBLAS handle the products run on.
  class Workspace {
   public:
    explicit Workspace(const cuda::CudaOptions& options = {})
        : device_(cuda::current_device()), linear_(options) {}

    /// The device its memory is on.
    int device() const { return device_; }

    /// Room for calls of up to `tokens` tokens of a block with config `c`.
    void reserve(const MambaBlockConfig& c, Index tokens) {
      grow(xz_, tokens * 2 * c.d_inner);
      grow(u_, tokens * c.d_inner);
      grow(xdbl_, tokens * x_proj_ld(c));
      grow(delta_, tokens * c.d_inner);
      grow(y_, tokens * c.d_inner);
      const Index step_tokens = std::min(tokens, cuda::kGemvMaxTokens);
      grow(inner_, static_cast<Index>(cuda::mamba_inner_step_workspace_size(step_tokens, c.d_inner,
                                                                            c.d_state, c.dt_rank)));
      linear_.reserve(tokens, std::max(c.d_model, c.d_inner));
    }

    /// What the block's products run on, for the model's head.
    cuda::LinearWorkspace& linear() { return linear_; }

   private:
    friend class MambaBlock;
    template <class E>
    static void grow(cuda::DeviceBuffer<E>& b, Index n) {
      if (b.size() < n)
        b = cuda::DeviceBuffer<E>(n, "block workspace");
    }

    int device_;
    cuda::LinearWorkspace linear_;
    cuda::DeviceBuffer<float> xz_, u_, xdbl_, delta_, y_;
    cuda::DeviceBuffer<unsigned char> scan_, inner_;
  };

  /// Uploads a (validated) CPU block's weights to the current device, synchronously.
  explicit MambaBlock(const MambaBlock<float, Cpu>& host)
      : c_(host.config()),
        device_(cuda::current_device()),
        in_proj_(host.weights().in_proj_weight.view(), "in_proj.weight"),
        x_proj_(host.weights().x_proj_weight.view(), "x_proj.weight"),
        dt_proj_(host.weights().dt_proj_weight.view(), "dt_proj.weight"),
        out_proj_(host.weights().out_proj_weight.view(), "out_proj.weight") {
    const MambaBlockWeights<float>& w = host.weights();
    const auto vec = [](const auto& t, const char* name) {
      return cuda::upload_vector(t.data(), t.numel(), name);
    };
    in_bias_ = vec(w.in_proj_bias, "in_proj.bias");
    out_bias_ = vec(w.out_proj_bias, "out_proj.bias");
    conv_weight_ = vec(w.conv1d_weight, "conv1d.weight");
    conv_bias_ = vec(w.conv1d_bias, "conv1d.bias");
    dt_bias_ = vec(w.dt_proj_bias, "dt_proj.bias");
    D_ = vec(w.D, "D");
    std::vector<float> A(static_cast<std::size_t>(w.A_log.numel()));
    for (std::size_t i = 0; i < A.size(); ++i)
      A[i] = -std::exp(w.A_log.data()[i]);  // as the CPU block computes it
    A_ = cuda::upload_vector(A.data(), w.A_log.numel(), "A");
  }

  /// Checks `weights` against `config` as the CPU block does, then uploads them.
  MambaBlock(const MambaBlockConfig& config, MambaBlockWeights<float> weights)
      : MambaBlock(MambaBlock<float, Cpu>(config, std::move(weights))) {}

  const MambaBlockConfig& config() const { return c_; }

  /// Bytes of device memory the weights take.
  std::size_t weight_bytes() const {
    std::size_t n = in_proj_.bytes() + x_proj_.bytes() + dt_proj_.bytes() + out_proj_.bytes();
    for (const auto* b : {&in_bias_, &out_bias_, &conv_weight_, &conv_bias_, &dt_bias_, &D_, &A_})
      n += b->bytes();
    return n;
  }

  /// out (batch, L, d_model) = block(x̂), or out += block(x̂) when `accumulate` (a residual
  /// stream), with x̂ = x (batch, L, d_model) or, given `norm`, RMSNorm(x)·norm.weight (the layer's
  /// pre-norm, fused into in_proj); ordered on `stream`, device memory, features contiguous. With
  /// a state (device views) the sequences continue from it and it is left at their ends;
  /// without, they start from zero. out may be x (x is consumed before out is written).
  void forward(TensorView<const float, 3> x, TensorView<float, 3> out, Workspace& ws,
               cudaStream_t stream, MambaBlockStateView<float> state = {}, bool accumulate = false,
               const cuda::RowNorm& norm = {}) const {
    check_devices(ws);
    const Index batch = x.size(0), L = x.size(1), di = c_.d_inner;
    check_rows(x, "x", batch, L);
    check_rows(out, "out", batch, L);
    check_state(state, batch);
    if (batch == 0 || L == 0)
      return;
    const Index tokens = batch * L;
    ws.reserve(c_, tokens);
    float* xz = ws.xz_.data();
    for_token_rows(x, [&](Index first, TensorView<const float, 2> rows) {
      cuda::linear<T>(ws.linear_, rows, in_proj_.view(), cuda::vector_view(in_bias_),
                      mat(xz + first * 2 * di, rows.size(0), 2 * di, 2 * di), stream, false, norm);
    });
    CausalConv1dParams<float> conv;
    conv.x = seq(xz, batch, L, di, 2 * di);
    conv.weight = conv_weight();
    conv.bias = cuda::vector_view(conv_bias_);
    conv.initial_state = state.conv;
    conv.final_state = state.conv;
    conv.out = seq(ws.u_.data(), batch, L, di, di);
    conv.silu = true;
    cuda::causal_conv1d(conv, stream);
    SelectiveScanParams<float> p = ssm_params(ws, batch, L, stream);
    p.h0 = state.ssm;
    p.h_final = state.ssm;
    const std::size_t need = cuda::selective_scan_workspace_size(p);
    if (ws.scan_.bytes() < need)
      ws.scan_ = cuda::DeviceBuffer<unsigned char>(static_cast<Index>(need), "scan workspace");
    cuda::selective_scan(p, stream, ws.scan_.data(), ws.scan_.bytes());
    for_token_rows(out, [&](Index first, TensorView<float, 2> rows) {
      cuda::linear<T>(ws.linear_, cmat(ws.y_.data() + first * di, rows.size(0), di, di),
                      out_proj_.view(), cuda::vector_view(out_bias_), rows, stream, accumulate);
    });
  }

  /// One decoding token of every sequence: out (batch, d_model) = block(x̂), or out += block(x̂)
  /// when `accumulate`, x̂ from x (batch, d_model) as in forward(), given the state (device
  /// views) of the tokens before, which advances by this token. out may be x. Ordered on
  /// `stream`; allocates nothing once `ws` has room for `batch` tokens, so it can be captured in
  /// a CUDA graph.
  void step(TensorView<const float, 2> x, TensorView<float, 2> out,
            MambaBlockStateView<float> state, Workspace& ws, cudaStream_t stream,
            bool accumulate = false, const cuda::RowNorm& norm = {}) const {
    check_devices(ws);
    const Index batch = x.size(0), di = c_.d_inner;
    check_matrix(x, "x", batch);
    check_matrix(out, "out", batch);
    SSMKIT_CHECK(!state.ssm.absent(), "state", "presence", "a decoding state", "absent");
    check_state(state, batch);
    if (batch == 0)
      return;
    ws.reserve(c_, batch);
    float* xz = ws.xz_.data();
    cuda::linear<T>(ws.linear_, x, in_proj_.view(), cuda::vector_view(in_bias_),
                    mat(xz, batch, 2 * di, 2 * di), stream, false, norm);
    if (batch <= kFusedStepBatch) {
      cuda::MambaInnerStepParams<T> p;
      p.xz = cmat(xz, batch, 2 * di, 2 * di);
      p.conv_weight = conv_weight();
      p.conv_bias = cuda::vector_view(conv_bias_);
      p.x_proj_weight = x_proj_.view();
      p.dt_proj_weight = dt_proj_.view();
      p.dt_bias = cuda::vector_view(dt_bias_);
      p.A = A_view();
      p.D = cuda::vector_view(D_);
      p.conv_state = state.conv;
      p.ssm_state = state.ssm;
      p.y = mat(ws.y_.data(), batch, di, di);
      cuda::mamba_inner_step(p, stream, ws.inner_.data(), ws.inner_.bytes());
    } else {
      CausalConv1dStepParams<float> conv;
      conv.x = cmat(xz, batch, di, 2 * di);
      conv.weight = conv_weight();
      conv.bias = cuda::vector_view(conv_bias_);
      conv.state = state.conv;
      conv.out = mat(ws.u_.data(), batch, di, di);
      conv.silu = true;
      cuda::causal_conv1d_update(conv, stream);
      SelectiveScanParams<float> p = ssm_params(ws, batch, 1, stream);
      p.h0 = state.ssm;
      p.h_final = state.ssm;
      cuda::selective_state_update(p, stream);
    }
    cuda::linear<T>(ws.linear_, cmat(ws.y_.data(), batch, di, di), out_proj_.view(),
                    cuda::vector_view(out_bias_), out, stream, accumulate);
  }

 private:
  /// Sequences up to which step() runs the fused inner step (kernels/cuda/mamba_inner_step.cuh):
  /// on an H200 it beat the separate kernels for one sequence (the 130M-shaped model decodes
  /// ~10 % faster) and lost at 8 (d_inner 5120: 115-125 µs against 97 µs per layer step).
  static constexpr Index kFusedStepBatch = 1;

  /// x_proj's output row stride: a multiple of 4 floats keeps dt_proj's input vectorisable.
  static Index x_proj_ld(const MambaBlockConfig& c) {
    return (c.dt_rank + 2 * c.d_state + 3) / 4 * 4;
  }

  /// The block's device must be current, and the workspace must be on it.
  void check_devices(const Workspace& ws) const {
    cuda::check_current_device(device_, "MambaBlock");
    SSMKIT_CHECK(ws.device_ == device_, "ws", "device", std::to_string(device_) + " (the block's)",
                 ws.device_);
  }

  /// x_proj and dt_proj of the conv output in ws.u_, and the scan's arguments (no states).
  SelectiveScanParams<float> ssm_params(Workspace& ws, Index batch, Index L,
                                        cudaStream_t stream) const {
    const Index tokens = batch * L, di = c_.d_inner, N = c_.d_state, R = c_.dt_rank;
    const Index ld = x_proj_ld(c_);
    float* xdbl = ws.xdbl_.data();
    cuda::linear<T>(ws.linear_, cmat(ws.u_.data(), tokens, di, di), x_proj_.view(), {},
                    mat(xdbl, tokens, R + 2 * N, ld), stream);
    cuda::linear<T>(ws.linear_, cmat(xdbl, tokens, R, ld), dt_proj_.view(), {},
                    mat(ws.delta_.data(), tokens, di, di), stream);
    SelectiveScanParams<float> p;
    p.u = seq(ws.u_.data(), batch, L, di, di);
    p.delta = seq(ws.delta_.data(), batch, L, di, di);
    p.A = A_view();
    // B and C: columns [R, R+N) and [R+N, R+2N) of x_proj's output, one group.
    p.B = TensorView<const float, 4>::unchecked(xdbl + R, {batch, L, 1, N}, {L * ld, ld, N, 1},
                                                Device::CUDA);
    p.C = TensorView<const float, 4>::unchecked(xdbl + R + N, {batch, L, 1, N}, {L * ld, ld, N, 1},
                                                Device::CUDA);
    p.D_skip = cuda::vector_view(D_);
    p.delta_bias = cuda::vector_view(dt_bias_);
    p.z = seq(ws.xz_.data() + di, batch, L, di, 2 * di);
    p.out = seq(ws.y_.data(), batch, L, di, di);
    p.delta_softplus = true;
    return p;
  }

  TensorView<const float, 2> A_view() const {
    return TensorView<const float, 2>::unchecked(A_.data(), {c_.d_inner, c_.d_state},
                                                 {c_.d_state, 1}, Device::CUDA);
  }

  TensorView<const float, 2> conv_weight() const {
    return TensorView<const float, 2>::unchecked(conv_weight_.data(), {c_.d_inner, c_.d_conv},
                                                 {c_.d_conv, 1}, Device::CUDA);
  }

  static TensorView<float, 2> mat(float* p, Index rows, Index cols, Index ld) {
    return TensorView<float, 2>::unchecked(p, {rows, cols}, {ld, 1}, Device::CUDA);
  }
  static TensorView<const float, 2> cmat(const float* p, Index rows, Index cols, Index ld) {
    return TensorView<const float, 2>::unchecked(p, {rows, cols}, {ld, 1}, Device::CUDA);
  }
  template <class P>
  static TensorView<P, 3> seq(P* p, Index batch, Index L, Index channels, Index row_stride) {
    return TensorView<P, 3>::unchecked(p, {batch, L, channels}, {L * row_stride, row_stride, 1},
                                       Device::CUDA);
  }
  /// Calls fn(first_token, rows) over v (batch, L, features) as (tokens, features) rows: once
  /// when the sequences are evenly spaced (one product for the batch), else once per sequence.
  template <class E, class Fn>
  static void for_token_rows(const TensorView<E, 3>& v, Fn&& fn) {
    const Index batch = v.size(0), L = v.size(1);
    if (batch <= 1 || v.stride(0) == L * v.stride(1)) {
      fn(0, TensorView<E, 2>::unchecked(v.data(), {batch * L, v.size(2)}, {v.stride(1), 1},
                                        Device::CUDA));
      return;
    }
    for (Index b = 0; b < batch; ++b)
      fn(b * L, TensorView<E, 2>::unchecked(v.data() + b * v.stride(0), {L, v.size(2)},
                                            {v.stride(1), 1}, Device::CUDA));
  }

  template <class E>
  void check_rows(const TensorView<E, 3>& v, const char* arg, Index batch, Index L) const {
    check_device(v, arg, Device::CUDA);
    check_shape(v, arg, {batch, L, c_.d_model});
    SSMKIT_CHECK(v.stride(2) == 1, arg, "feature stride", "1", v.stride(2));
  }
  template <class E>
  void check_matrix(const TensorView<E, 2>& v, const char* arg, Index batch) const {
    check_device(v, arg, Device::CUDA);
    check_shape(v, arg, {batch, c_.d_model});
    SSMKIT_CHECK(v.stride(1) == 1, arg, "feature stride", "1", v.stride(1));
  }
  /// Presence is the SSM state's: with d_conv = 1 the conv state keeps no inputs, so its view is
  /// empty (absent) in a decoding state too.
  void check_state(const MambaBlockStateView<float>& s, Index batch) const {
    if (s.ssm.absent()) {
      SSMKIT_CHECK(s.conv.absent(), "state", "views", "both present or both absent", "only conv");
      return;
    }
    check_device(s.conv, "state.conv", Device::CUDA);
    check_device(s.ssm, "state.ssm", Device::CUDA);
    check_shape(s.conv, "state.conv", {batch, c_.d_inner, c_.d_conv - 1});
    check_shape(s.ssm, "state.ssm", {batch, c_.d_inner, c_.d_state});
  }

  MambaBlockConfig c_;
  int device_;  // where the weights live
  cuda::DeviceMatrix<T> in_proj_, x_proj_, dt_proj_, out_proj_;
  cuda::DeviceBuffer<float> in_bias_, out_bias_, conv_weight_, conv_bias_, dt_bias_, D_, A_;
};

}  // namespace ssmkit::nn
