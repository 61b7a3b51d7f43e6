// The GPU Mamba block and language model: the few-token GEMV against an fp64 product, the block
// against the CPU block (forward, prefill + steps), LM logits and greedy tokens against
// transformers' goldens, decoding against full recomputation, graph replay against eager steps,
// generate()'s stop ids, and argument checks.
#include "cuda_testing.hpp"
#include "nn/nn_testing.hpp"

#include <ssmkit/nn/cuda/mamba_lm.cuh>
#include <ssmkit/nn/grad/mamba_lm_init.hpp>

#include <random>

using namespace ssmkit;
using namespace ssmkit::testing;

namespace {

template <class T>
std::vector<double> download(const float* p, Index n, cudaStream_t s) {
  std::vector<float> h(static_cast<std::size_t>(n));
  SSMKIT_CUDA_CHECK(cudaMemcpyAsync(h.data(), p, sizeof(float) * n, cudaMemcpyDeviceToHost, s));
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(s));
  return std::vector<double>(h.begin(), h.end());
}

/// A float device copy of host data.
cuda::DeviceBuffer<float> upload(const float* p, Index n, cudaStream_t s) {
  cuda::DeviceBuffer<float> b(n);
  b.copy_from_host_async(p, n, s);
  return b;
}

template <class W>
void check_gemv(Index tokens, Index N, Index K, bool bias_on, bool accumulate, bool norm_on,
                double tol, std::uint64_t seed) {
  SCOPED_TRACE("gemv tokens=" + std::to_string(tokens) + " N=" + std::to_string(N) +
               " K=" + std::to_string(K) + " norm=" + std::to_string(norm_on));
  TestStream stream;
  const cudaStream_t s = stream.s;
  const Index ldx = K + 3;  // unaligned rows: the scalar x path
  const auto x = random_vector<float>(static_cast<std::size_t>(tokens * ldx), seed);
  const auto w = random_vector<float>(static_cast<std::size_t>(N * K), seed + 1);
  const auto bias = random_vector<float>(static_cast<std::size_t>(N), seed + 2);
  const auto old = random_vector<float>(static_cast<std::size_t>(tokens * N), seed + 3);
  const cuda::DeviceMatrix<W> wd(TensorView<const float, 2>(w.data(), {N, K}), "w");
  std::vector<float> w_stored(w.size());  // what the device holds, rounded to W
  for (std::size_t i = 0; i < w.size(); ++i)
    w_stored[i] = static_cast<float>(to_double(from_double<W>(w[i])));
  const auto norm_w = random_vector<float>(static_cast<std::size_t>(K), seed + 4, 0.5, 1.5);
  const double eps = 1e-5;
  std::vector<double> ref(static_cast<std::size_t>(tokens * N));
  for (Index t = 0; t < tokens; ++t) {
    // x̂: the row itself, or its RMSNorm times norm_w, in double.
    std::vector<double> xh(&x[t * ldx], &x[t * ldx] + K);
    if (norm_on) {
      double ss = 0;
      for (const double v : xh)
        ss += v * v;
      const double r = 1 / std::sqrt(ss / static_cast<double>(K) + eps);
      for (Index k = 0; k < K; ++k)
        xh[k] *= r * norm_w[k];
    }
    for (Index n = 0; n < N; ++n) {
      double acc = (bias_on ? bias[n] : 0.0) + (accumulate ? old[t * N + n] : 0.0);
      for (Index k = 0; k < K; ++k)
        acc += xh[k] * w_stored[n * K + k];
      ref[t * N + n] = acc;
    }
  }
  for (const bool vec_x : {false, true}) {
    auto xd = upload(x.data(), tokens * ldx, s);
    auto bd = upload(bias.data(), N, s);
    auto nd = upload(norm_w.data(), K, s);
    auto od = upload(old.data(), tokens * N, s);
    cuda::GemvParams<W> p;
    // vec_x: the same values repacked with 16-byte rows.
    std::vector<float> packed;
    const Index ld = vec_x ? (K + 3) / 4 * 4 : ldx;
    if (vec_x) {
      packed.assign(static_cast<std::size_t>(tokens * ld), 0.f);
      for (Index t = 0; t < tokens; ++t)
        std::copy(&x[t * ldx], &x[t * ldx] + K, &packed[t * ld]);
      xd = upload(packed.data(), tokens * ld, s);
    }
    p.x = TensorView<const float, 2>(xd.data(), {tokens, K}, {ld, 1}, "x", Device::CUDA);
    p.weight = wd.view();
    if (bias_on)
      p.bias = TensorView<const float, 1>(bd.data(), {N}, "bias", Device::CUDA);
    p.out = TensorView<float, 2>(od.data(), {tokens, N}, "out", Device::CUDA);
    p.accumulate = accumulate;
    if (norm_on)
      p.norm = {TensorView<const float, 1>(nd.data(), {K}, "norm", Device::CUDA), eps};
    if (!accumulate)
      od.fill_bytes_async(0xFF, s);
    cuda::gemv(p, s);
    EXPECT_LE(rel_error(download<float>(od.data(), tokens * N, s), ref), tol) << "vec_x " << vec_x;
  }
}

TEST(CudaGemv, MatchesFp64Product) {
  SSMKIT_REQUIRE_GPU();
  // Long rows (one or a few per warp), short rows (many per warp, rows shorter than a warp's
  // words), K tails, 1..8 tokens, more rows than resident warps, with and without the fused
  // RMSNorm; float sums of up to 4099 terms, so fp32's 1e-5.
  check_gemv<float>(1, 300, 1000, true, false, false, 1e-5, 1);
  check_gemv<float>(3, 7, 4099, false, true, true, 1e-5, 2);
  check_gemv<float>(8, 1029, 64, true, true, false, 1e-5, 3);
  check_gemv<float>(2, 40000, 24, false, false, true, 1e-5, 4);
  check_gemv<__nv_bfloat16>(1, 513, 2563, true, false, true, 1e-5, 5);
  check_gemv<__nv_bfloat16>(5, 20, 777, false, false, false, 1e-5, 6);
  check_gemv<__nv_bfloat16>(8, 96, 9, true, true, true, 1e-5, 7);
}

/// The fused inner decoding step (conv step, x_proj, dt_proj, state update, gate) against the
/// same math in double on the host, for `tokens` sequences of d_inner channels, d_state N and
/// dt_rank R, with weights rounded to W as stored.
template <class W>
void check_inner_step(Index tokens, Index di, Index N, Index R, std::uint64_t seed) {
  SCOPED_TRACE("inner step tokens=" + std::to_string(tokens) + " d_inner=" + std::to_string(di));
  TestStream stream;
  const cudaStream_t s = stream.s;
  const Index K = 4, width = R + 2 * N;
  const auto rounded = [](std::vector<float> v) {
    for (float& e : v)
      e = static_cast<float>(to_double(from_double<W>(e)));
    return v;
  };
  const auto xz = random_vector<float>(static_cast<std::size_t>(tokens * 2 * di), seed);
  const auto conv_w = random_vector<float>(static_cast<std::size_t>(di * K), seed + 1, -0.5, 0.5);
  const auto conv_b = random_vector<float>(static_cast<std::size_t>(di), seed + 2, -0.1, 0.1);
  const auto xw = random_vector<float>(static_cast<std::size_t>(width * di), seed + 3, -0.1, 0.1);
  const auto dtw = random_vector<float>(static_cast<std::size_t>(di * R), seed + 4, -0.5, 0.5);
  const auto dt_b = random_vector<float>(static_cast<std::size_t>(di), seed + 5, -4, -1);
  const auto A = random_vector<float>(static_cast<std::size_t>(di * N), seed + 6, -4, -0.1);
  const auto D = random_vector<float>(static_cast<std::size_t>(di), seed + 7, 0.5, 1.5);
  const auto cs = random_vector<float>(static_cast<std::size_t>(tokens * di * (K - 1)), seed + 8);
  const auto hs = random_vector<float>(static_cast<std::size_t>(tokens * di * N), seed + 9);
  const auto xw_r = rounded(xw), dtw_r = rounded(dtw);
  // The reference, in double.
  std::vector<double> y_ref(static_cast<std::size_t>(tokens * di)), cs_ref(cs.begin(), cs.end()),
      h_ref(hs.begin(), hs.end());
  const auto silu = [](double v) { return v / (1 + std::exp(-v)); };
  for (Index t = 0; t < tokens; ++t) {
    std::vector<double> u(static_cast<std::size_t>(di)), xdbl(static_cast<std::size_t>(width));
    for (Index c = 0; c < di; ++c) {
      double* st = &cs_ref[(t * di + c) * (K - 1)];
      const double x_new = xz[t * 2 * di + c];
      double acc = conv_b[c];
      for (Index k = 0; k < K - 1; ++k)
        acc += conv_w[c * K + k] * st[k];
      acc += conv_w[c * K + K - 1] * x_new;
      for (Index k = 0; k + 1 < K - 1; ++k)
        st[k] = st[k + 1];
      st[K - 2] = x_new;
      u[c] = silu(acc);
    }
    for (Index j = 0; j < width; ++j)
      for (Index c = 0; c < di; ++c)
        xdbl[j] += xw_r[j * di + c] * u[c];
    for (Index c = 0; c < di; ++c) {
      double d = dt_b[c];
      for (Index r = 0; r < R; ++r)
        d += dtw_r[c * R + r] * xdbl[r];
      d = d > 20 ? d : std::log1p(std::exp(d));
      double y = D[c] * u[c];
      for (Index n = 0; n < N; ++n) {
        double& h = h_ref[(t * di + c) * N + n];
        h = std::exp(d * A[c * N + n]) * h + d * u[c] * xdbl[R + n];
        y += xdbl[R + N + n] * h;
      }
      y_ref[t * di + c] = y * silu(xz[t * 2 * di + di + c]);
    }
  }
  // The device.
  auto xz_d = upload(xz.data(), tokens * 2 * di, s);
  auto conv_w_d = upload(conv_w.data(), di * K, s), conv_b_d = upload(conv_b.data(), di, s);
  auto dt_b_d = upload(dt_b.data(), di, s), A_d = upload(A.data(), di * N, s);
  auto D_d = upload(D.data(), di, s), cs_d = upload(cs.data(), tokens * di * (K - 1), s);
  auto hs_d = upload(hs.data(), tokens * di * N, s);
  const cuda::DeviceMatrix<W> xw_d(TensorView<const float, 2>(xw.data(), {width, di}), "x_proj");
  const cuda::DeviceMatrix<W> dtw_d(TensorView<const float, 2>(dtw.data(), {di, R}), "dt_proj");
  cuda::DeviceBuffer<float> y_d(tokens * di);
  y_d.fill_bytes_async(0xFF, s);
  cuda::MambaInnerStepParams<W> p;
  p.xz = xz_d.view<2>({tokens, 2 * di});
  p.conv_weight = conv_w_d.view<2>({di, K});
  p.conv_bias = conv_b_d.view<1>({di});
  p.x_proj_weight = xw_d.view();
  p.dt_proj_weight = dtw_d.view();
  p.dt_bias = dt_b_d.view<1>({di});
  p.A = A_d.view<2>({di, N});
  p.D = D_d.view<1>({di});
  p.conv_state = cs_d.view<3>({tokens, di, K - 1});
  p.ssm_state = hs_d.view<3>({tokens, di, N});
  p.y = y_d.view<2>({tokens, di});
  cuda::DeviceBuffer<unsigned char> ws(
      static_cast<Index>(cuda::mamba_inner_step_workspace_size(p)));
  cuda::mamba_inner_step(p, s, ws.data(), ws.bytes());
  EXPECT_LE(rel_error(download<float>(y_d.data(), y_d.size(), s), y_ref), 1e-5) << "y";
  EXPECT_LE(rel_error(download<float>(hs_d.data(), hs_d.size(), s), h_ref), 1e-5) << "ssm state";
  EXPECT_LE(rel_error(download<float>(cs_d.data(), cs_d.size(), s), cs_ref), 1e-5) << "conv state";
  // A workspace too small is refused before anything runs.
  EXPECT_THROW(cuda::mamba_inner_step(p, s, ws.data(), ws.bytes() - 4), Error);
}

TEST(CudaMambaInnerStep, MatchesFp64Step) {
  SSMKIT_REQUIRE_GPU();
  // Sizes that are no multiples of the kernels' channel tiles (256) and x_proj row slices:
  // d_inner 300 (2 tiles, the last of 44 channels), N 12, dt_rank 5; and d_inner 2311 (10 tiles,
  // more than one round of partial sums in kernel 2, the last tile of 7 channels), N 16,
  // dt_rank 33 (x_proj rows 65, padded to 68, cut into slices of 8).
  for (const Index tokens : {Index{1}, Index{3}, cuda::kGemvMaxTokens}) {
    const auto seed = 10 * static_cast<std::uint64_t>(tokens);
    check_inner_step<float>(tokens, 300, 12, 5, seed);
    check_inner_step<__nv_bfloat16>(tokens, 300, 12, 5, seed + 1);
    check_inner_step<float>(tokens, 2311, 16, 33, seed + 2);
    check_inner_step<__nv_bfloat16>(tokens, 2311, 16, 33, seed + 3);
  }
}

/// Both decoding states of the GPU block against the CPU block's, within `tol`.
void expect_states_match(nn::DeviceMambaBlockState& gpu, const nn::MambaBlockState<float>& cpu,
                         double tol, cudaStream_t s) {
  const auto states = gpu.view();
  const auto host = [](const auto& t) {
    return std::vector<double>(t.data(), t.data() + t.numel());
  };
  EXPECT_LE(rel_error(download<float>(states.ssm.data(), states.ssm.numel(), s), host(cpu.ssm())),
            tol)
      << "ssm state";
  EXPECT_LE(
      rel_error(download<float>(states.conv.data(), states.conv.numel(), s), host(cpu.conv())), tol)
      << "conv state";
}

/// x[0, n) rounded in place to what storage as W keeps (nothing for float).
template <class W>
void round_to(float* x, Index n) {
  if constexpr (std::is_same_v<W, __nv_bfloat16>)
    for (Index i = 0; i < n; ++i)
      x[i] = __bfloat162float(__float2bfloat16(x[i]));
}

/// The weights a MambaBlock<W, Cuda> multiplies by: its four projection matrices are stored as W.
/// A CPU twin built from these computes with the GPU's weights, so the two differ only by the
/// GPU's own roundings (the activations fed to cuBLAS as bfloat16).
template <class W>
nn::MambaBlockWeights<float> as_stored(nn::MambaBlockWeights<float> w) {
  for (auto* m : {&w.in_proj_weight, &w.x_proj_weight, &w.dt_proj_weight, &w.out_proj_weight})
    round_to<W>(m->data(), m->numel());
  return w;
}

/// The block on both backends, fed the MambaMixer golden's input: a full forward, then a prefill
/// of the first tokens with a state followed by steps through the rest. `tol` bounds the forward
/// and the states, `steps_tol` the outputs of the prefill and steps.
template <class W>
void check_block(const std::string& name, double tol, double steps_tol) {
  SCOPED_TRACE(name);
  TestStream stream;
  const cudaStream_t s = stream.s;
  const MixerGolden<float> g(name);
  const nn::MambaBlock<float> cpu_block(g.config, as_stored<W>(g.copy_weights()));
  const nn::MambaBlock<W, Cuda> gpu_block(cpu_block);
  const auto& c = g.config;
  const Index batch = g.x.size(0), L = g.x.size(1), dm = c.d_model;
  HostTensor<float, 3> x({batch, L, dm}), want({batch, L, dm});
  for (Index i = 0; i < x.numel(); ++i)
    x.data()[i] = static_cast<float>(g.x.data()[i]);
  cpu_block.forward(x.view(), want.view());

  auto xd = upload(x.data(), x.numel(), s);
  cuda::DeviceBuffer<float> out(x.numel());
  out.fill_bytes_async(0xFF, s);
  typename nn::MambaBlock<W, Cuda>::Workspace ws;
  const auto xv = xd.view<3>({batch, L, dm});
  const auto ov = out.view<3>({batch, L, dm});
  gpu_block.forward(xv, ov, ws, s);
  EXPECT_LE(rel_error(download<float>(out.data(), out.size(), s),
                      std::vector<double>(want.data(), want.data() + want.numel())),
            tol)
      << "forward";

  // Prefill L1 tokens with a state, then one step per remaining token, on both backends.
  const Index L1 = L / 2;
  nn::MambaBlockState<float> cpu_state(c, batch);
  nn::DeviceMambaBlockState gpu_state(c, batch, s);
  HostTensor<float, 3> cpu_out({batch, L, dm});
  const auto head = [&](auto v, Index t0, Index n) {
    using V = decltype(v);
    return V::unchecked(v.data() + t0 * v.stride(1), {batch, n, dm}, v.strides(), v.device());
  };
  cpu_block.forward(head(TensorView<const float, 3>(x.view()), 0, L1), head(cpu_out.view(), 0, L1),
                    cpu_state.view());
  out.fill_bytes_async(0xFF, s);
  gpu_block.forward(head(TensorView<const float, 3>(xv), 0, L1), head(ov, 0, L1), ws, s,
                    gpu_state.view());
  typename nn::MambaBlock<float>::Workspace cpu_ws;
  for (Index t = L1; t < L; ++t) {
    const auto tok = [&](auto v) {
      using E = std::remove_pointer_t<decltype(v.data())>;
      return TensorView<E, 2>::unchecked(v.data() + t * v.stride(1), {batch, dm}, {v.stride(0), 1},
                                         v.device());
    };
    cpu_block.step(tok(TensorView<const float, 3>(x.view())), tok(cpu_out.view()), cpu_state.view(),
                   cpu_ws);
    gpu_block.step(tok(TensorView<const float, 3>(xv)), tok(ov), gpu_state.view(), ws, s);
  }
  EXPECT_LE(rel_error(download<float>(out.data(), out.size(), s),
                      std::vector<double>(cpu_out.data(), cpu_out.data() + cpu_out.numel())),
            steps_tol)
      << "prefill + steps";
  expect_states_match(gpu_state, cpu_state, tol, s);
}

TEST(CudaMambaBlock, MatchesCpuBlockFloat) {
  SSMKIT_REQUIRE_GPU();
  check_block<float>("bias", 1e-5, 1e-5);
  check_block<float>("n64", 1e-5, 1e-5);
}

// Against a CPU twin with the same bfloat16-rounded matrices, what differs is the rounding of
// the activations that products of more than kGemvMaxTokens tokens feed to cuBLAS as bfloat16:
// the forward (all 26-27 tokens; measured 1.0e-3 and 2.9e-3 on an H200) and, through the
// prefill's x_proj and dt_proj, the states (4.2e-4, 4.8e-4). The prefill's other products and the
// steps go through the GEMV in float, and the outputs there stay at float's level (1.2e-6,
// 5.3e-6, mostly the skip and gate terms that no bfloat16 activation touches).
TEST(CudaMambaBlock, MatchesCpuBlockBf16Weights) {
  SSMKIT_REQUIRE_GPU();
  check_block<__nv_bfloat16>("bias", kBf16Tol, 2e-5);
  check_block<__nv_bfloat16>("n64", kBf16Tol, 2e-5);
}

/// Decoding steps against the CPU block at batch sizes that take the fused inner step (one
/// sequence) and the separate kernels (more; the GEMV's limit of kGemvMaxTokens and beyond), on a
/// freshly initialised block whose sizes are no multiples of the kernels' tiles (d_inner 200,
/// N 12, dt_rank 5): outputs and both states after a few tokens. d_conv 1 leaves the conv state
/// empty. `tol` bounds the batches up to kGemvMaxTokens, `cublas_tol` the larger ones.
template <class W>
void check_steps_at_batches(double tol, double cublas_tol, Index d_conv = 4) {
  TestStream stream;
  const cudaStream_t s = stream.s;
  nn::MambaLMConfig lc;
  lc.vocab_size = 4;
  lc.n_layer = 1;
  lc.block = {100, 200, 12, d_conv, 5};
  nn::MambaInitOptions init;
  init.in_proj_bias = init.out_proj_bias = true;
  const nn::MambaBlock<float> cpu_block(
      lc.block, as_stored<W>(std::move(nn::init_mamba_lm<float>(lc, 11, init).layers[0].mixer)));
  const nn::MambaBlock<W, Cuda> gpu_block(cpu_block);
  const auto& c = lc.block;
  for (const Index batch : {Index{1}, Index{3}, cuda::kGemvMaxTokens, cuda::kGemvMaxTokens + 1}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    const double bound = batch <= cuda::kGemvMaxTokens ? tol : cublas_tol;
    const Index steps = 4, dm = c.d_model;
    HostTensor<float, 2> x({batch, dm}), want({batch, dm});
    std::mt19937_64 rng(static_cast<std::uint64_t>(batch));
    std::uniform_real_distribution<float> dist(-1.f, 1.f);
    nn::MambaBlockState<float> cpu_state(c, batch);
    nn::DeviceMambaBlockState gpu_state(c, batch, s);
    typename nn::MambaBlock<float>::Workspace cpu_ws;
    typename nn::MambaBlock<W, Cuda>::Workspace ws;
    cuda::DeviceBuffer<float> xd(batch * dm), out(batch * dm);
    for (Index t = 0; t < steps; ++t) {
      for (Index i = 0; i < x.numel(); ++i)
        x.data()[i] = dist(rng);
      cpu_block.step(TensorView<const float, 2>(x.view()), want.view(), cpu_state.view(), cpu_ws);
      xd.copy_from_host_async(x.data(), x.numel(), s);
      out.fill_bytes_async(0xFF, s);
      gpu_block.step(xd.view<2>({batch, dm}), out.view<2>({batch, dm}), gpu_state.view(), ws, s);
      EXPECT_LE(rel_error(download<float>(out.data(), out.size(), s),
                          std::vector<double>(want.data(), want.data() + want.numel())),
                bound)
          << "token " << t;
    }
    expect_states_match(gpu_state, cpu_state, bound, s);
  }
}

// bfloat16 matrices against a CPU twin with the same rounded matrices: the GEMV keeps the
// activations in float, so up to kGemvMaxTokens the float bound holds (under 1e-6 measured on an
// H200); past it cuBLAS gets bfloat16 activations (outputs 2.2-2.5e-3, states 1.1-1.5e-3).
TEST(CudaMambaBlock, StepsMatchCpuAtEveryBatch) {
  SSMKIT_REQUIRE_GPU();
  check_steps_at_batches<float>(1e-5, 1e-5);
  check_steps_at_batches<__nv_bfloat16>(1e-5, kBf16Tol);
}

TEST(CudaMambaBlock, OneTapConvStepsMatchCpu) {
  SSMKIT_REQUIRE_GPU();
  check_steps_at_batches<float>(1e-5, 1e-5, 1);
}

class CudaMambaLMGolden : public ::testing::TestWithParam<const char*> {};

template <class W>
void check_lm_logits(const std::string& name, double tol, const cuda::CudaOptions& options = {}) {
  TestStream stream;
  const auto model = nn::MambaLM<W, Cuda>::from_pretrained(mamba_data(name), options);
  const LMGolden g(name);
  cuda::DeviceBuffer<float> logits(g.logits.numel());
  logits.fill_bytes_async(0xFF, stream.s);
  model.forward(g.input_ids.view(), logits.view<3>(g.logits.shape()), stream.s);
  EXPECT_LE(rel_error(download<float>(logits.data(), logits.size(), stream.s),
                      std::vector<double>(g.logits.data(), g.logits.data() + g.logits.numel())),
            tol)
      << name;
}

TEST_P(CudaMambaLMGolden, LogitsMatchTransformersFloat) {
  SSMKIT_REQUIRE_GPU();
  // As the CPU test: float against the float64 golden, measured 2.3-4.3e-7 on an H200 (the CPU's
  // float forward 2.5-4.9e-7).
  check_lm_logits<float>(GetParam(), 1e-5);
}

TEST_P(CudaMambaLMGolden, LogitsMatchTransformersBf16Weights) {
  SSMKIT_REQUIRE_GPU();
  check_lm_logits<__nv_bfloat16>(GetParam(), 1e-2);
}

TEST_P(CudaMambaLMGolden, LogitsMatchTransformersTf32) {
  SSMKIT_REQUIRE_GPU();
  // The goldens' 2 × 12 prompt tokens go through cuBLAS, here with TF32 tensor cores.
  cuda::CudaOptions tf32;
  tf32.allow_tf32 = true;
  check_lm_logits<float>(GetParam(), 1e-2, tf32);
}

TEST_P(CudaMambaLMGolden, GreedyContinuationMatchesTransformers) {
  SSMKIT_REQUIRE_GPU();
  TestStream stream;
  const auto model = nn::MambaLM<float, Cuda>::from_pretrained(mamba_data(GetParam()));
  const LMGolden g(GetParam());
  const Index batch = g.input_ids.size(0), Lp = g.input_ids.size(1);
  const Index new_tokens = g.greedy.size(1) - Lp;
  std::vector<std::vector<std::int64_t>> prompts(static_cast<std::size_t>(batch));
  for (Index b = 0; b < batch; ++b)
    prompts[b].assign(&g.input_ids(b, 0), &g.input_ids(b, 0) + Lp);
  for (const bool graph : {false, true}) {
    const auto r = nn::generate(model, prompts, new_tokens, {}, stream.s, graph);
    for (Index b = 0; b < batch; ++b) {
      const std::vector<std::int64_t> want(&g.greedy(b, Lp), &g.greedy(b, Lp) + new_tokens);
      EXPECT_EQ(r.tokens[b], want) << "sequence " << b << " graph " << graph;
    }
  }
}

TEST_P(CudaMambaLMGolden, GreedyStopsAtStopIdsAsTransformersContinues) {
  SSMKIT_REQUIRE_GPU();
  TestStream stream;
  const auto model = nn::MambaLM<float, Cuda>::from_pretrained(mamba_data(GetParam()));
  const LMGolden g(GetParam());
  // Ended slots go on being fed their argmax on the device, eagerly or through the graph.
  for (const bool graph : {false, true}) {
    SCOPED_TRACE(graph ? "graph" : "eager");
    check_stop_ids(
        g.continuations(), {},
        [&](Index n, const nn::SamplingConfig& s, const std::function<void(Index)>& on_token) {
          return nn::generate(model, g.prompts(), n, s, stream.s, graph, on_token);
        });
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, CudaMambaLMGolden,
                         ::testing::Values("tiny_tied", "tiny_untied_bias", "tiny_n64",
                                           "tiny_inner"));

/// Prefill then steps of sampled tokens against the CPU model's logits at every step; batches
/// above kGemvMaxTokens run their products through cuBLAS.
template <class W>
void check_decode_against_cpu(Index batch, double tol) {
  SCOPED_TRACE("batch " + std::to_string(batch));
  TestStream stream;
  auto cpu = nn::MambaLM<float>::from_pretrained(mamba_data("tiny_untied_bias"));
  // The matrices a MambaLM<W, Cuda> stores as W (embedding, projections, head), rounded alike.
  for (auto& p : cpu.parameters()) {
    const std::string& n = p.name;
    const bool proj = n.size() >= 11 && n.compare(n.size() - 11, 11, "proj.weight") == 0;
    if (proj || n == io::kHfEmbeddings || n == io::kHfLmHead)
      round_to<W>(p.value.data(), p.value.size(0));
  }
  cpu.parameters_changed();
  const nn::MambaLM<W, Cuda> gpu(cpu);
  const Index V = cpu.vocab_size(), Lp = 5, steps = 6;
  std::mt19937_64 rng(batch);
  std::uniform_int_distribution<std::int64_t> token(0, V - 1);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(batch * Lp));
  for (auto& id : ids)
    id = token(rng);
  auto cpu_cache = cpu.make_cache(batch);
  auto gpu_cache = gpu.make_cache(batch, stream.s);
  const TensorView<const std::int64_t, 2> prompt(ids.data(), {batch, Lp});
  cpu.prefill(prompt, cpu_cache);
  gpu.prefill(prompt, gpu_cache);
  for (Index i = 0; i <= steps; ++i) {
    const auto want = cpu_cache.logits();
    EXPECT_LE(rel_error(download<float>(gpu_cache.logits().data(), batch * V, stream.s),
                        std::vector<double>(want.data(), want.data() + batch * V)),
              tol)
        << "step " << i;
    std::vector<std::int64_t> next(static_cast<std::size_t>(batch));
    for (auto& id : next)
      id = token(rng);
    const TensorView<const std::int64_t, 1> nv(next.data(), {batch});
    cpu.step(nv, cpu_cache);
    gpu.step(nv, gpu_cache);
  }
}

TEST(CudaMambaLM, DecodeMatchesCpuModel) {
  SSMKIT_REQUIRE_GPU();
  check_decode_against_cpu<float>(2, 1e-5);
  check_decode_against_cpu<float>(11, 1e-5);
  // The prompts' 10 and 55 tokens take cuBLAS, with bfloat16 activations (measured 1.2e-4 to
  // 2.7e-3 on an H200, against the CPU model with the same rounded matrices).
  check_decode_against_cpu<__nv_bfloat16>(2, kBf16Tol);
  check_decode_against_cpu<__nv_bfloat16>(11, kBf16Tol);
}

TEST(CudaMambaLM, PrefillThenStepsEqualFullForward) {
  SSMKIT_REQUIRE_GPU();
  TestStream stream;
  const auto model = nn::MambaLM<float, Cuda>::from_pretrained(mamba_data("tiny_n64"));
  const Index V = model.vocab_size(), batch = 2, Lp = 4, steps = 5;
  std::vector<std::vector<std::int64_t>> seqs = {{3, 141, 59, 26}, {271, 82, 8, 18}};
  auto cache = model.make_cache(batch, stream.s);
  std::vector<std::int64_t> ids;
  for (auto& q : seqs)
    ids.insert(ids.end(), q.begin(), q.end());
  model.prefill(TensorView<const std::int64_t, 2>(ids.data(), {batch, Lp}), cache);
  for (Index i = 0; i <= steps; ++i) {
    const Index L = Lp + i;
    std::vector<std::int64_t> all;
    for (auto& q : seqs)
      all.insert(all.end(), q.begin(), q.end());
    cuda::DeviceBuffer<float> full(batch * L * V);
    full.fill_bytes_async(0xFF, stream.s);
    model.forward(TensorView<const std::int64_t, 2>(all.data(), {batch, L}),
                  full.view<3>({batch, L, V}), stream.s);
    const auto f = download<float>(full.data(), full.size(), stream.s);
    const auto got = download<float>(cache.logits().data(), batch * V, stream.s);
    for (Index b = 0; b < batch; ++b)
      EXPECT_LE(rel_error(&got[b * V], &f[(b * L + L - 1) * V], V), 1e-5)
          << "sequence " << b << " after " << L << " tokens";
    const auto next = cache.next_ids_host();
    for (Index b = 0; b < batch; ++b)
      seqs[b].push_back(next[b]);
    model.step_greedy(cache, false);
  }
}

TEST(CudaMambaLM, GraphReplayEqualsEagerSteps) {
  SSMKIT_REQUIRE_GPU();
  TestStream stream;
  const auto model = nn::MambaLM<__nv_bfloat16, Cuda>::from_pretrained(mamba_data("tiny_tied"));
  const Index V = model.vocab_size(), batch = 3;
  std::vector<std::int64_t> ids = {5, 6, 7, 100, 1, 2, 9, 8, 7};
  auto eager = model.make_cache(batch, stream.s);
  auto graph = model.make_cache(batch, stream.s);
  const TensorView<const std::int64_t, 2> prompt(ids.data(), {batch, 3});
  model.prefill(prompt, eager);
  model.prefill(prompt, graph);
  for (int i = 0; i < 6; ++i) {
    model.step_greedy(eager, false);
    model.step_greedy(graph, true);
    EXPECT_EQ(eager.next_ids_host(), graph.next_ids_host()) << "step " << i;
    EXPECT_EQ(rel_error(download<float>(eager.logits().data(), batch * V, stream.s),
                        download<float>(graph.logits().data(), batch * V, stream.s)),
              0.0)
        << "step " << i;
  }
}

TEST(CudaMambaLM, SampledStopsArePrefixesOfTheRunWithoutStopIds) {
  SSMKIT_REQUIRE_GPU();
  // As on the CPU: ended slots still draw, so the other sequence's draws do not move.
  TestStream stream;
  const auto model = nn::MambaLM<float, Cuda>::from_pretrained(mamba_data("tiny_untied_bias"));
  const auto prompts = LMGolden("tiny_untied_bias").prompts();
  const nn::SamplingConfig sampling{1.2, 50, 0.95, 11};
  check_stop_ids(
      nn::generate(model, prompts, 16, sampling, stream.s).tokens, sampling,
      [&](Index n, const nn::SamplingConfig& s, const std::function<void(Index)>& on_token) {
        return nn::generate(model, prompts, n, s, stream.s, true, on_token);
      });
}

TEST(CudaMambaLM, RejectsBadInputs) {
  SSMKIT_REQUIRE_GPU();
  TestStream stream;
  const auto model = nn::MambaLM<float, Cuda>::from_pretrained(mamba_data("tiny_tied"));
  const Index V = model.vocab_size();
  std::vector<std::int64_t> ids = {1, 2, V, 3};
  cuda::DeviceBuffer<float> logits(4 * V);
  SSMKIT_EXPECT_ERROR(model.forward(TensorView<const std::int64_t, 2>(ids.data(), {1, 4}),
                                    logits.view<3>({1, 4, V}), stream.s),
                      "ids", "element (0, 2)", "vocab_size");
  ids[2] = 4;
  HostTensor<float, 3> host_logits({1, 4, V});
  SSMKIT_EXPECT_ERROR(model.forward(TensorView<const std::int64_t, 2>(ids.data(), {1, 4}),
                                    host_logits.view(), stream.s),
                      "logits", "device");
  cuda::DeviceBuffer<float> wrong(4 * (V - 1));
  SSMKIT_EXPECT_ERROR(model.forward(TensorView<const std::int64_t, 2>(ids.data(), {1, 4}),
                                    wrong.view<3>({1, 4, V - 1}), stream.s),
                      "logits", "shape");
  auto cache = model.make_cache(2, stream.s);
  SSMKIT_EXPECT_ERROR(
      model.prefill(TensorView<const std::int64_t, 2>(ids.data(), {2, 2}), cache, 1), "first");
  SSMKIT_EXPECT_ERROR(model.step(TensorView<const std::int64_t, 1>(ids.data(), {3}), cache), "ids",
                      "shape");
  SSMKIT_EXPECT_ERROR(model.make_cache(0, stream.s), "batch");
  auto default_stream = model.make_cache(1, nullptr);
  SSMKIT_EXPECT_ERROR(model.step_greedy(default_stream, true), "cache stream");
  SSMKIT_EXPECT_ERROR((nn::MambaLM<float, Cuda>::from_pretrained(mamba_data("no_such_model"))),
                      "no_such_model");
  nn::SamplingConfig stop;
  stop.stop_token_ids = {3, -1};
  SSMKIT_EXPECT_ERROR(nn::generate(model, {{1}}, 3, stop, stream.s), "stop_token_ids", "element 1",
                      ">= 0");
  stop.stop_token_ids = {V, 3};
  SSMKIT_EXPECT_ERROR(nn::generate(model, {{1}}, 3, stop, stream.s), "stop_token_ids", "element 0",
                      "vocab_size = 300");

  const MixerGolden<float> g("bias");
  const nn::MambaBlock<float, Cuda> block(g.config, g.copy_weights());
  typename nn::MambaBlock<float, Cuda>::Workspace ws;
  const Index dm = g.config.d_model;
  cuda::DeviceBuffer<float> x(2 * 3 * dm), out(2 * 3 * dm);
  SSMKIT_EXPECT_ERROR(
      block.forward(x.view<3>({2, 3, dm - 1}), out.view<3>({2, 3, dm}), ws, stream.s), "x",
      "shape");
  HostTensor<float, 3> host_x({2, 3, dm});
  SSMKIT_EXPECT_ERROR(block.forward(host_x.view(), out.view<3>({2, 3, dm}), ws, stream.s), "x",
                      "device");
  nn::DeviceMambaBlockState state(g.config, 1, stream.s);
  SSMKIT_EXPECT_ERROR(
      block.forward(x.view<3>({2, 3, dm}), out.view<3>({2, 3, dm}), ws, stream.s, state.view()),
      "state.conv", "shape");
  SSMKIT_EXPECT_ERROR(block.step(x.view<2>({1, dm}), out.view<2>({1, dm}), {}, ws, stream.s),
                      "state", "presence");
  auto bad = g.copy_weights();
  bad.D = HostTensor<float, 1>({g.config.d_inner + 1});
  SSMKIT_EXPECT_ERROR((nn::MambaBlock<float, Cuda>(g.config, std::move(bad))), "D", "shape");
}

/// Makes `device` current for a scope, then device 0 again.
struct OnDevice {
  explicit OnDevice(int device) { SSMKIT_CUDA_CHECK(cudaSetDevice(device)); }
  ~OnDevice() { cudaSetDevice(0); }
  OnDevice(const OnDevice&) = delete;
  OnDevice& operator=(const OnDevice&) = delete;
};

// Blocks, models, workspaces and cuBLAS handles remember the device they were made on; a call
// with another device current, or with a workspace of another device, throws before it launches.
TEST(CudaDevices, ObjectsOfOneDeviceRefuseAnother) {
  if (cuda::device_count() < 2)
    GTEST_SKIP() << "needs two CUDA devices";
  OnDevice zero(0);
  const MixerGolden<float> g("bias");
  const nn::MambaBlock<float, Cuda> block(g.config, g.copy_weights());
  typename nn::MambaBlock<float, Cuda>::Workspace ws0;
  const auto lm = nn::MambaLM<float, Cuda>::from_pretrained(mamba_data("tiny_tied"));
  TestStream s0;
  auto cache = lm.make_cache(1, s0.s);
  const Index dm = g.config.d_model;
  cuda::DeviceBuffer<float> x(3 * dm), out(3 * dm);
  const std::vector<std::int64_t> ids = {1, 2, 3};
  const TensorView<const std::int64_t, 2> prompt(ids.data(), {1, 3});
  {
    OnDevice one(1);
    typename nn::MambaBlock<float, Cuda>::Workspace ws1;
    EXPECT_EQ(ws1.device(), 1);
    SSMKIT_EXPECT_ERROR(block.forward(x.view<3>({1, 3, dm}), out.view<3>({1, 3, dm}), ws1, nullptr),
                        "MambaBlock", "current device", "0 (where it was made)", "got 1");
    SSMKIT_EXPECT_ERROR(lm.prefill(prompt, cache), "MambaLM", "current device", "got 1");
    SSMKIT_EXPECT_ERROR(ws0.linear().cublas().on(nullptr), "cuBLAS handle", "current device",
                        "got 1");
    OnDevice back(0);
    SSMKIT_EXPECT_ERROR(block.forward(x.view<3>({1, 3, dm}), out.view<3>({1, 3, dm}), ws1, s0.s),
                        "ws", "device", "0 (the block's)", "got 1");
    SSMKIT_EXPECT_ERROR(block.step(x.view<2>({1, dm}), out.view<2>({1, dm}), {}, ws1, s0.s), "ws",
                        "device");
  }
  // On its own device everything still runs.
  block.forward(x.view<3>({1, 3, dm}), out.view<3>({1, 3, dm}), ws0, s0.s);
  lm.prefill(prompt, cache);
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(s0.s));
}

}  // namespace
