// The Mamba block (Gu & Dao, arXiv 2312.00752, Fig. 3), as HF transformers' MambaMixer computes
// it: in_proj → x|z; x → causal conv1d → SiLU → x_proj → (δ, B, C); δ → dt_proj; selective scan
// with A = −exp(A_log), D, δ_bias = dt_proj.bias, softplus and z gating; out_proj.
#pragma once

#include "ssmkit/core/device.hpp"
#include "ssmkit/core/host_tensor.hpp"
#include "ssmkit/kernels/cpu/causal_conv1d.hpp"
#include "ssmkit/kernels/cpu/selective_scan.hpp"
#include "ssmkit/nn/linear.hpp"
#include "ssmkit/nn/workspace.hpp"

#include <cmath>
#include <string>
#include <type_traits>
#include <utility>

namespace ssmkit::nn {

/// The sizes of a block. HF names: hidden_size, intermediate_size, state_size, conv_kernel,
/// time_step_rank.
struct MambaBlockConfig {
  Index d_model = 0;
  Index d_inner = 0;
  Index d_state = 16;
  Index d_conv = 4;
  Index dt_rank = 0;

  void validate() const {
    SSMKIT_CHECK(d_model >= 1, "config.d_model", "value", ">= 1", d_model);
    SSMKIT_CHECK(d_inner >= 1, "config.d_inner", "value", ">= 1", d_inner);
    SSMKIT_CHECK(d_state >= 1 && d_state <= kMaxStateSize, "config.d_state", "value",
                 "in [1, " + std::to_string(kMaxStateSize) + "]", d_state);
    SSMKIT_CHECK(d_conv >= 1, "config.d_conv", "value", ">= 1", d_conv);
    SSMKIT_CHECK(dt_rank >= 1, "config.dt_rank", "value", ">= 1", dt_rank);
  }
};

/// The parameters of a block, in HF's shapes (conv1d.weight squeezed from (d_inner, 1, d_conv)).
/// An optional bias is a default-constructed (empty) tensor.
template <class T>
struct MambaBlockWeights {
  HostTensor<T, 2> in_proj_weight;   ///< (2·d_inner, d_model)
  HostTensor<T, 1> in_proj_bias;     ///< (2·d_inner), optional
  HostTensor<T, 2> conv1d_weight;    ///< (d_inner, d_conv)
  HostTensor<T, 1> conv1d_bias;      ///< (d_inner), optional
  HostTensor<T, 2> x_proj_weight;    ///< (dt_rank + 2·d_state, d_inner)
  HostTensor<T, 2> dt_proj_weight;   ///< (d_inner, dt_rank)
  HostTensor<T, 1> dt_proj_bias;     ///< (d_inner)
  HostTensor<T, 2> A_log;            ///< (d_inner, d_state); A = −exp(A_log)
  HostTensor<T, 1> D;                ///< (d_inner)
  HostTensor<T, 2> out_proj_weight;  ///< (d_model, d_inner)
  HostTensor<T, 1> out_proj_bias;    ///< (d_model), optional
};

/// Views of the decoding state of `batch` sequences: the last d_conv−1 conv inputs (oldest first)
/// and the SSM state h. Both absent for a forward() that starts from zero and keeps nothing.
template <class T>
struct MambaBlockStateView {
  TensorView<T, 3> conv;  ///< (batch, d_inner, d_conv − 1)
  TensorView<T, 3> ssm;   ///< (batch, d_inner, d_state)
};

/// The owning decoding state of `batch` sequences, zero at construction (an empty prefix).
template <class T>
class MambaBlockState {
 public:
  MambaBlockState() = default;
  MambaBlockState(const MambaBlockConfig& c, Index batch)
      : conv_({batch, c.d_inner, c.d_conv - 1}, "conv state"),
        ssm_({batch, c.d_inner, c.d_state}, "ssm state") {}

  Index batch() const { return ssm_.size(0); }

  /// Views of sequences [first, first + count).
  MambaBlockStateView<T> view(Index first, Index count) {
    SSMKIT_CHECK(first >= 0 && count >= 0 && first + count <= batch(), "state sequences",
                 "range [first, first + count)", "inside [0, " + std::to_string(batch()) + ")",
                 "[" + std::to_string(first) + ", " + std::to_string(first + count) + ")");
    return {rows(conv_, first, count), rows(ssm_, first, count)};
  }
  MambaBlockStateView<T> view() { return view(0, batch()); }

  void reset() {
    conv_.fill(T(0));
    ssm_.fill(T(0));
  }

  const HostTensor<T, 3>& conv() const { return conv_; }
  const HostTensor<T, 3>& ssm() const { return ssm_; }

 private:
  static TensorView<T, 3> rows(HostTensor<T, 3>& t, Index first, Index count) {
    const TensorView<T, 3> v = t.view();
    // An empty state (d_conv = 1) has no data to offset into.
    T* const p = v.empty() ? nullptr : v.data() + first * v.stride(0);
    return TensorView<T, 3>::unchecked(p, {count, v.size(1), v.size(2)}, v.strides(), Device::CPU);
  }

  HostTensor<T, 3> conv_;
  HostTensor<T, 3> ssm_;
};

template <class T, class Backend = Cpu>
class MambaBlock {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "MambaBlock on the CPU stores float or double");
  static_assert(std::is_same_v<Backend, Cpu>, "only the CPU MambaBlock exists so far");

  enum Slot { kXz, kU, kXdbl, kDelta, kY, kSlots };

 public:
  /// Scratch memory of forward() and step(); one per thread that runs blocks, shareable by all
  /// the blocks of a model.
  using Workspace = nn::Workspace<T, kSlots>;

  /// Checks every weight's shape against `config` and that A_log, D and dt_proj.bias are finite.
  MambaBlock(const MambaBlockConfig& config, MambaBlockWeights<T> weights)
      : c_(config), w_(std::move(weights)) {
    c_.validate();
    const Index di = c_.d_inner, dm = c_.d_model, N = c_.d_state;
    check_shape(w_.in_proj_weight.view(), "in_proj.weight", {2 * di, dm});
    check_optional(w_.in_proj_bias, "in_proj.bias", 2 * di);
    check_shape(w_.conv1d_weight.view(), "conv1d.weight", {di, c_.d_conv});
    check_optional(w_.conv1d_bias, "conv1d.bias", di);
    check_shape(w_.x_proj_weight.view(), "x_proj.weight", {c_.dt_rank + 2 * N, di});
    check_shape(w_.dt_proj_weight.view(), "dt_proj.weight", {di, c_.dt_rank});
    check_shape(w_.dt_proj_bias.view(), "dt_proj.bias", {di});
    check_shape(w_.A_log.view(), "A_log", {di, N});
    check_shape(w_.D.view(), "D", {di});
    check_shape(w_.out_proj_weight.view(), "out_proj.weight", {dm, di});
    check_optional(w_.out_proj_bias, "out_proj.bias", dm);
    A_ = HostTensor<T, 2>({di, N}, "A");
    weights_changed();
  }

  const MambaBlockConfig& config() const { return c_; }
  const MambaBlockWeights<T>& weights() const { return w_; }

  /// The weights, for an optimizer to change in place (values, never shapes); weights_changed()
  /// must follow before the next forward() or step().
  MambaBlockWeights<T>& mutable_weights() { return w_; }

  /// Recomputes what the block derives from its weights (A = −exp(A_log)) and checks that A_log,
  /// D and dt_proj.bias are finite.
  void weights_changed() {
    check_finite(w_.dt_proj_bias, "dt_proj.bias");
    check_finite(w_.D, "D");
    for (Index i = 0; i < A_.numel(); ++i) {
      A_.data()[i] = -std::exp(w_.A_log.data()[i]);
      SSMKIT_CHECK(std::isfinite(A_.data()[i]), "A_log", ("element " + std::to_string(i)).c_str(),
                   "finite with a finite exp", w_.A_log.data()[i]);
    }
  }

  /// out (batch, L, d_model) = block(x (batch, L, d_model)). With a state, the sequences continue
  /// from it (conv inputs and h) and it is left at their ends: a prefill. Without one they start
  /// from zero, as HF's forward does. Features must be contiguous; out may be x.
  void forward(TensorView<const T, 3> x, TensorView<T, 3> out, Workspace& ws,
               MambaBlockStateView<T> state = {}) const {
    const Index batch = x.size(0), L = x.size(1), di = c_.d_inner;
    check_device(x, "x", Device::CPU);
    check_device(out, "out", Device::CPU);
    check_shape(x, "x", {batch, L, c_.d_model});
    check_shape(out, "out", {batch, L, c_.d_model});
    check_state(state, batch);
    if (batch == 0 || L == 0)
      return;
    const Index tokens = batch * L;
    T* xz = ws.get(kXz, tokens * 2 * di);
    for_token_rows(x, [&](Index first, Index count, TensorView<const T, 2> rows_of_x) {
      linear<T>(rows_of_x, w_.in_proj_weight.view(), w_.in_proj_bias.view(),
                matrix(xz + first * 2 * di, count, 2 * di));
    });
    T* u = ws.get(kU, tokens * di);
    CausalConv1dParams<T> conv;
    conv.x = seq(xz, batch, L, di, 2 * di);
    conv.weight = w_.conv1d_weight.view();
    conv.bias = w_.conv1d_bias.view();
    conv.initial_state = state.conv;
    conv.final_state = state.conv;
    conv.out = seq(u, batch, L, di, di);
    conv.silu = true;
    cpu::causal_conv1d(conv);
    ssm_and_out_proj(u, xz + di, batch, L, state.ssm, ws, [&](TensorView<const T, 2> y) {
      for_token_rows(out, [&](Index first, Index count, TensorView<T, 2> rows_of_out) {
        linear<T>(rows(y, first, count), w_.out_proj_weight.view(), w_.out_proj_bias.view(),
                  rows_of_out);
      });
    });
  }

  /// forward() with a workspace of its own (allocates per call).
  void forward(TensorView<const T, 3> x, TensorView<T, 3> out,
               MambaBlockStateView<T> state = {}) const {
    Workspace ws;
    forward(x, out, ws, state);
  }

  /// One decoding step of every sequence: out (batch, d_model) = block(x (batch, d_model)) given
  /// the state of the tokens before, which advances by this token. out may be x.
  void step(TensorView<const T, 2> x, TensorView<T, 2> out, MambaBlockStateView<T> state,
            Workspace& ws) const {
    const Index batch = x.size(0), di = c_.d_inner;
    check_device(x, "x", Device::CPU);
    check_device(out, "out", Device::CPU);
    check_shape(x, "x", {batch, c_.d_model});
    check_shape(out, "out", {batch, c_.d_model});
    SSMKIT_CHECK(!state.ssm.absent(), "state", "presence", "a decoding state", "absent");
    check_state(state, batch);
    if (batch == 0)
      return;
    T* xz = ws.get(kXz, batch * 2 * di);
    linear<T>(x, w_.in_proj_weight.view(), w_.in_proj_bias.view(), matrix(xz, batch, 2 * di));
    T* u = ws.get(kU, batch * di);
    CausalConv1dStepParams<T> conv;
    conv.x = TensorView<const T, 2>::unchecked(xz, {batch, di}, {2 * di, 1}, Device::CPU);
    conv.weight = w_.conv1d_weight.view();
    conv.bias = w_.conv1d_bias.view();
    conv.state = state.conv;
    conv.out = matrix(u, batch, di);
    conv.silu = true;
    cpu::causal_conv1d_update(conv);
    ssm_and_out_proj(u, xz + di, batch, 1, state.ssm, ws, [&](TensorView<const T, 2> y) {
      linear<T>(y, w_.out_proj_weight.view(), w_.out_proj_bias.view(), out);
    });
  }

 private:
  /// From the conv output u (tokens, d_inner) and the gate z (rows of xz): x_proj, dt_proj, the
  /// selective scan into y (tokens, d_inner), then `project(y)`.
  template <class Project>
  void ssm_and_out_proj(const T* u, const T* z, Index batch, Index L, TensorView<T, 3> h,
                        Workspace& ws, Project&& project) const {
    const Index tokens = batch * L, di = c_.d_inner, N = c_.d_state, R = c_.dt_rank;
    const Index width = R + 2 * N;
    T* xdbl = ws.get(kXdbl, tokens * width);
    linear<T>(cmatrix(u, tokens, di), w_.x_proj_weight.view(), {}, matrix(xdbl, tokens, width));
    T* delta = ws.get(kDelta, tokens * di);
    linear<T>(TensorView<const T, 2>::unchecked(xdbl, {tokens, R}, {width, 1}, Device::CPU),
              w_.dt_proj_weight.view(), {}, matrix(delta, tokens, di));
    T* y = ws.get(kY, tokens * di);
    SelectiveScanParams<T> p;
    p.u = seq(u, batch, L, di, di);
    p.delta = seq(delta, batch, L, di, di);
    p.A = A_.view();
    // B and C: columns [R, R+N) and [R+N, R+2N) of x_proj's output, one group.
    p.B = TensorView<const T, 4>::unchecked(xdbl + R, {batch, L, 1, N}, {L * width, width, N, 1},
                                            Device::CPU);
    p.C = TensorView<const T, 4>::unchecked(xdbl + R + N, {batch, L, 1, N},
                                            {L * width, width, N, 1}, Device::CPU);
    p.D_skip = w_.D.view();
    p.delta_bias = w_.dt_proj_bias.view();
    p.z = seq(z, batch, L, di, 2 * di);
    p.h0 = h;
    p.h_final = h;
    p.out = seq(y, batch, L, di, di);
    p.delta_softplus = true;
    cpu::selective_scan(p);
    project(cmatrix(y, tokens, di));
  }

  /// Calls fn(first_token, tokens, rows) over x (batch, L, features) as (tokens, features) rows:
  /// once for the whole batch when the sequences are evenly spaced (a batch of single tokens is
  /// then one product), else once per sequence.
  template <class V, class Fn>
  static void for_token_rows(const V& x, Fn&& fn) {
    using E = typename V::element_type;
    const Index batch = x.size(0), L = x.size(1);
    if (batch <= 1 || x.stride(0) == L * x.stride(1)) {
      fn(0, batch * L,
         TensorView<E, 2>::unchecked(x.data(), {batch * L, x.size(2)}, {x.stride(1), x.stride(2)},
                                     Device::CPU));
      return;
    }
    for (Index b = 0; b < batch; ++b)
      fn(b * L, L, x[b]);
  }

  static TensorView<T, 2> matrix(T* p, Index rows, Index cols) {
    return TensorView<T, 2>::unchecked(p, {rows, cols}, {cols, 1}, Device::CPU);
  }
  static TensorView<const T, 2> cmatrix(const T* p, Index rows, Index cols) {
    return TensorView<const T, 2>::unchecked(p, {rows, cols}, {cols, 1}, Device::CPU);
  }
  static TensorView<const T, 2> rows(TensorView<const T, 2> m, Index first, Index count) {
    return TensorView<const T, 2>::unchecked(m.data() + first * m.stride(0), {count, m.size(1)},
                                             m.strides(), Device::CPU);
  }
  /// (batch, L, channels) view of token-major rows `row_stride` apart.
  template <class P>
  static auto seq(P* p, Index batch, Index L, Index channels, Index row_stride) {
    return TensorView<P, 3>::unchecked(p, {batch, L, channels}, {L * row_stride, row_stride, 1},
                                       Device::CPU);
  }

  /// Presence is the SSM state's: with d_conv = 1 the conv state keeps no inputs, so its view is
  /// empty (absent) in a decoding state too.
  void check_state(const MambaBlockStateView<T>& s, Index batch) const {
    if (s.ssm.absent()) {
      SSMKIT_CHECK(s.conv.absent(), "state", "views", "both present or both absent", "only conv");
      return;
    }
    check_device(s.conv, "state.conv", Device::CPU);
    check_device(s.ssm, "state.ssm", Device::CPU);
    check_shape(s.conv, "state.conv", {batch, c_.d_inner, c_.d_conv - 1});
    check_shape(s.ssm, "state.ssm", {batch, c_.d_inner, c_.d_state});
  }

  static void check_optional(const HostTensor<T, 1>& t, const char* name, Index n) {
    if (t.numel() != 0 || t.data() != nullptr)
      check_shape(t.view(), name, {n});
  }
  static void check_finite(const HostTensor<T, 1>& t, const char* name) {
    for (Index i = 0; i < t.numel(); ++i)
      SSMKIT_CHECK(std::isfinite(t.data()[i]), name, ("element " + std::to_string(i)).c_str(),
                   "finite", t.data()[i]);
  }

  MambaBlockConfig c_;
  MambaBlockWeights<T> w_;
  HostTensor<T, 2> A_;
};

}  // namespace ssmkit::nn
