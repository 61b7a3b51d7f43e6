// An alternative pass 3 of the CUDA scan backward, one lane per channel with all 16 states in
// the lane (benchmarks/cuda/NOTES.md, backward, "Eighteenth session"), run after the library's
// own passes 1 and 2 and before its rounding pass, checked against and timed beside the
// library's whole backward from fine checkpoints. A prototype kept for that comparison, not a
// kernel of the library: fp32, token-major, N = 16, one group, D a multiple of 128, L of 64.
//   bench_cuda_scan_backward_lane_per_channel [--runs N] [--quick] [--shape I]
#include "bench_scan_backward.cuh"

#include <ssmkit/core/dynamic_smem.cuh>
#include <ssmkit/kernels/cuda/selective_scan.cuh>
#include <ssmkit/kernels/cuda/selective_scan_backward.cuh>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

namespace ssmkit::bench {
namespace {

using Policy = cuda::SelectiveScanBackwardPolicy;
using Args = cuda::detail::ScanBackwardArgs<float>;
using cuda::detail::ex2_mufu;
using cuda::detail::kLog2e;

constexpr int kN = 16, kChunk = 64, kSub = 8, kHist = 4, kWarps = 4, kThreads = 32 * kWarps;

/// Lane L keeps state 4·(g ^ m) + j of its channel in slot 4·g + j, m = (L >> 3) & 3: the dB/dC
/// sum's halving stages over lane bits 4 and 3 then add a fixed half of the slots each.
__device__ __forceinline__ int state_of_group(int g, int m) {
  return 4 * (g ^ m);
}

/// dB and dC (slot order) summed over the warp's 32 channels; lane L returns the sum for
/// (dC if (L >> 2) & 1 else dB, state 4·((L >> 3) & 3) + (L & 3)).
__device__ __forceinline__ float warp_sum_bc(float (&dB)[kN], float (&dC)[kN], int lane) {
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    dB[i] += __shfl_xor_sync(0xffffffffu, dB[i + 8], 16);
    dC[i] += __shfl_xor_sync(0xffffffffu, dC[i + 8], 16);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    dB[i] += __shfl_xor_sync(0xffffffffu, dB[i + 4], 8);
    dC[i] += __shfl_xor_sync(0xffffffffu, dC[i + 4], 8);
  }
  const bool b2 = (lane & 4) != 0, b1 = (lane & 2) != 0, b0 = (lane & 1) != 0;
  float v[4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
    v[i] = (b2 ? dC[i] : dB[i]) + __shfl_xor_sync(0xffffffffu, b2 ? dB[i] : dC[i], 4);
#pragma unroll
  for (int i = 0; i < 2; ++i)
    v[i] = (b1 ? v[i + 2] : v[i]) + __shfl_xor_sync(0xffffffffu, b1 ? v[i] : v[i + 2], 2);
  return (b0 ? v[1] : v[0]) + __shfl_xor_sync(0xffffffffu, b0 ? v[0] : v[1], 1);
}

/// Floats of shared memory per block: a sub-chunk's B and C rows, its dB/dC sums, each warp's
/// kHist steps of states ([step][group][lane] as float4), step records (Δ, Δ·u, softplus') and
/// next checkpoint: 54 KB, 4 blocks per SM.
constexpr int kSmemFloats = kSub * 2 * kN + kSub * 32 + kWarps * kHist * 4 * 32 * 4 +
                            kWarps * kSub * 3 * 32 + kWarps * 4 * 32 * 4;

/// 16 bytes from global to shared memory without registers (cp.async), and the wait for this
/// thread's copies.
__device__ __forceinline__ void copy16_async(float* dst, const float* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(
                   static_cast<unsigned>(__cvta_generic_to_shared(dst))),
               "l"(src));
}
__device__ __forceinline__ void wait_copies() {
  asm volatile("cp.async.wait_all;" ::: "memory");
}

/// Pass 3: a block takes one 64-step chunk of 128 channels; per 8-step sub-chunk, from the last,
/// each lane walks forwards from the fine checkpoint (copied a sub-chunk ahead) keeping 4 steps of
/// its 16 states in shared memory (the first half of the sub-chunk is walked twice), then runs
/// the adjoint back through them. Writes du, dδ, dz and the library's float accumulators
/// (a.dBC_acc, a.dA_acc, a.dD_acc, a.dbias_acc), from the adjoints leaving each chunk (a.chunk_q,
/// passes 1 and 2).
__global__ void __launch_bounds__(kThreads, 4) lane_per_channel_pass3(const Args a) {
  extern __shared__ __align__(16) float smem[];
  float* bc = smem;                  // [kSub][B|C][kN]
  float* rows = bc + kSub * 2 * kN;  // [kSub][32]: the warps' dB/dC sums, added by atomics
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  float* hist = rows + kSub * 32 + warp * (kHist * 4 * 32 * 4);
  float* rec = rows + kSub * 32 + kWarps * kHist * 4 * 32 * 4 + warp * (kSub * 3 * 32);
  // [group][lane] float4: the next sub-chunk's checkpoint, copied while this one runs
  float* ckb =
      rows + kSub * 32 + kWarps * kHist * 4 * 32 * 4 + kWarps * kSub * 3 * 32 + warp * (4 * 32 * 4);
  const int c = static_cast<int>(blockIdx.x), b = static_cast<int>(blockIdx.z);
  const int d = static_cast<int>(blockIdx.y) * kThreads + static_cast<int>(threadIdx.x);
  const int tc = c * kChunk, D = a.D;
  const auto stage = [&](int sc) {  // threads 0-63: one float4 of the sub-chunk's B or C rows
    if (threadIdx.x < 64) {
      const int which = static_cast<int>(threadIdx.x) / 32, k = lane / 4, j = lane % 4;
      const Index src = (static_cast<Index>(b) * a.L + tc + sc * kSub + k) * kN;
      reinterpret_cast<float4*>(bc)[(k * 2 + which) * 4 + j] =
          reinterpret_cast<const float4*>((which != 0 ? a.C : a.B) + src)[j];
    }
  };
  stage(kChunk / kSub - 1);
  for (int e = static_cast<int>(threadIdx.x); e < kSub * 32; e += kThreads)
    rows[e] = 0.f;
  const int m = (lane >> 3) & 3;
  float a2[kN], q[kN], gA[kN];
  const Index row = (static_cast<Index>(c) * a.batch + b) * D + d;
#pragma unroll
  for (int g = 0; g < 4; ++g) {
    const int n0 = state_of_group(g, m);
    const float4 v = *reinterpret_cast<const float4*>(a.A + d * kN + n0);
    a2[4 * g] = v.x * kLog2e, a2[4 * g + 1] = v.y * kLog2e, a2[4 * g + 2] = v.z * kLog2e,
           a2[4 * g + 3] = v.w * kLog2e;
    const float4 w = *reinterpret_cast<const float4*>(a.chunk_q + row * kN + n0);
    q[4 * g] = w.x, q[4 * g + 1] = w.y, q[4 * g + 2] = w.z, q[4 * g + 3] = w.w;
    gA[4 * g] = gA[4 * g + 1] = gA[4 * g + 2] = gA[4 * g + 3] = 0.f;
  }
  const float bias = a.delta_bias[d], skip = a.D_skip[d];
  float dD = 0.f, dbias = 0.f;
  const auto fetch_checkpoint = [&](int sc) {  // this lane's 4 vectors of sub-chunk sc's entry
    const float* ck =
        a.checkpoints + ((static_cast<Index>(c * (kChunk / kSub) + sc) * a.batch + b) * D + d) * kN;
#pragma unroll
    for (int g = 0; g < 4; ++g)
      copy16_async(ckb + (g * 32 + lane) * 4, ck + state_of_group(g, m));
    asm volatile("cp.async.commit_group;" ::: "memory");
  };
  fetch_checkpoint(kChunk / kSub - 1);
  __syncthreads();
  for (int sc = kChunk / kSub - 1; sc >= 0; --sc) {
    const int t0 = tc + sc * kSub;
    const Index at0 = (static_cast<Index>(b) * a.L + t0) * D + d;
    if (sc > 0) {  // the next sub-chunk's inputs into L2 (one line per lane)
      const int which = lane / 8;
      const float* src = which == 0 ? a.delta : which == 1 ? a.u : which == 2 ? a.z : a.dout;
      asm volatile(
          "prefetch.global.L2 [%0];" ::"l"(src + at0 - static_cast<Index>(kSub - lane % 8) * D));
    }
#pragma unroll
    for (int half = kSub / kHist - 1; half >= 0; --half) {
      const int first = half * kHist;  // the history holds steps [first, first + kHist)
      const bool prepare = half == kSub / kHist - 1;
      float h[kN];
      wait_copies();
#pragma unroll
      for (int g = 0; g < 4; ++g) {
        const float4 v = *reinterpret_cast<const float4*>(ckb + (g * 32 + lane) * 4);
        h[4 * g] = v.x, h[4 * g + 1] = v.y, h[4 * g + 2] = v.z, h[4 * g + 3] = v.w;
      }
      if (half == 0 && sc > 0)  // the buffer's last read for this sub-chunk: fetch the next
        fetch_checkpoint(sc - 1);
      float next_delta = prepare ? a.delta[at0] : 0.f, next_u = prepare ? a.u[at0] : 0.f;
#pragma unroll 1
      for (int k = 0; k < first + kHist; ++k) {
        float dt, du;
        if (prepare) {  // first walk over these steps: Δ, Δ·u, u, softplus' recorded
          const float raw = next_delta + bias, u = next_u;
          const Index at = at0 + static_cast<Index>(min(k + 1, kSub - 1)) * D;
          next_delta = a.delta[at], next_u = a.u[at];
          dt = cuda::detail::softplus_f(raw);
          du = dt * u;
          rec[(k * 3) * 32 + lane] = dt;
          rec[(k * 3 + 1) * 32 + lane] = du;
          rec[(k * 3 + 2) * 32 + lane] = raw > 20.f ? 1.f : cuda::detail::sigmoid_f(raw);
        } else {
          dt = rec[(k * 3) * 32 + lane], du = rec[(k * 3 + 1) * 32 + lane];
        }
        const float* br = bc + k * 2 * kN;
#pragma unroll
        for (int g = 0; g < 4; ++g) {
          const float4 bv = *reinterpret_cast<const float4*>(br + state_of_group(g, m));
          const float bb[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
          for (int j = 0; j < 4; ++j)
            h[4 * g + j] = fmaf(ex2_mufu(dt * a2[4 * g + j]), h[4 * g + j], du * bb[j]);
        }
        if (k >= first) {
#pragma unroll
          for (int g = 0; g < 4; ++g)
            *reinterpret_cast<float4*>(hist + (((k - first) * 4 + g) * 32 + lane) * 4) =
                make_float4(h[4 * g], h[4 * g + 1], h[4 * g + 2], h[4 * g + 3]);
        }
      }
      __syncwarp();
      float next_z = a.z[at0 + static_cast<Index>(first + kHist - 1) * D];
      float next_dout = a.dout[at0 + static_cast<Index>(first + kHist - 1) * D];
      float next_u_back = a.u[at0 + static_cast<Index>(first + kHist - 1) * D];
#pragma unroll 1
      for (int k = first + kHist - 1; k >= first; --k) {
        const Index at = at0 + static_cast<Index>(k) * D;
        const float zz = next_z, dout = next_dout, u = next_u_back;
        const Index at_next = at0 + static_cast<Index>(max(k - 1, 0)) * D;
        next_z = a.z[at_next], next_dout = a.dout[at_next], next_u_back = a.u[at_next];
        const float sz = cuda::detail::sigmoid_f(zz);
        const float dy = dout * zz * sz, fz = dout * sz * fmaf(zz, 1.f - sz, 1.f);
        const float dt = rec[(k * 3) * 32 + lane], du = rec[(k * 3 + 1) * 32 + lane],
                    dsp = rec[(k * 3 + 2) * 32 + lane];
        const float* br = bc + k * 2 * kN;
        float dB[kN], dC[kN];
        float y = 0.f, gB = 0.f, sA = 0.f;
#pragma unroll
        for (int g = 0; g < 4; ++g) {
          const int n0 = state_of_group(g, m);
          const float4 bv = *reinterpret_cast<const float4*>(br + n0);
          const float4 cv = *reinterpret_cast<const float4*>(br + kN + n0);
          const float4 hv =
              *reinterpret_cast<const float4*>(hist + (((k - first) * 4 + g) * 32 + lane) * 4);
          const float bb[4] = {bv.x, bv.y, bv.z, bv.w}, cc[4] = {cv.x, cv.y, cv.z, cv.w},
                      hh[4] = {hv.x, hv.y, hv.z, hv.w};
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const int s = 4 * g + j;
            const float gs = fmaf(cc[j], dy, q[s]);
            y = fmaf(cc[j], hh[j], y);
            dC[s] = hh[j] * dy;
            dB[s] = gs * du;
            const float w = gs * fmaf(-du, bb[j], hh[j]);  // g·Ā_t·h_{t-1} = g·(h_t − Δ·u·B_t)
            gA[s] = fmaf(dt, w, gA[s]);
            sA = fmaf(a2[s], w, sA);
            gB = fmaf(gs, bb[j], gB);
            q[s] = ex2_mufu(dt * a2[s]) * gs;
          }
        }
        atomicAdd(rows + k * 32 + lane, warp_sum_bc(dB, dC, lane));
        const float draw = fmaf(sA, 0.69314718f, u * gB) * dsp;
        dbias += draw;
        dD = fmaf(dy, u, dD);
        a.du[at] = fmaf(dt, gB, dy * skip);
        a.ddelta[at] = draw;
        a.dz[at] = fmaf(skip, u, y) * fz;
      }
      __syncwarp();
    }
    __syncthreads();
    if (sc > 0)
      stage(sc - 1);
    for (int e = static_cast<int>(threadIdx.x); e < kSub * 32; e += kThreads) {
      const int k = e / 32, l = e % 32;
      const float sum = rows[e];
      rows[e] = 0.f;
      const int which = (l >> 2) & 1, n = 4 * ((l >> 3) & 3) + (l & 3);
      atomicAdd(a.dBC_acc + ((static_cast<Index>(b) * a.L + t0 + k) * 2 + which) * kN + n, sum);
    }
    __syncthreads();
  }
#pragma unroll
  for (int g = 0; g < 4; ++g)
#pragma unroll
    for (int j = 0; j < 4; ++j)
      atomicAdd(a.dA_acc + d * kN + state_of_group(g, m) + j, gA[4 * g + j]);
  atomicAdd(a.dD_acc + d, dD);
  atomicAdd(a.dbias_acc + d, dbias);
}

/// Relative L2 error of x against ref.
double rel_error(const cuda::DeviceBuffer<float>& x, const cuda::DeviceBuffer<float>& ref) {
  std::vector<float> hx(static_cast<std::size_t>(x.size())), hr(hx.size());
  x.copy_to_host_async(hx.data(), x.size(), nullptr);
  ref.copy_to_host_async(hr.data(), ref.size(), nullptr);
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  double num = 0, den = 0;
  for (std::size_t i = 0; i < hx.size(); ++i) {
    num += (double(hx[i]) - hr[i]) * (double(hx[i]) - hr[i]);
    den += double(hr[i]) * hr[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

void run_shape(const BackwardShape& s, int runs) {
  SSMKIT_CHECK(s.N == kN, "N", "value", "16", s.N);
  SSMKIT_CHECK(s.D % kThreads == 0, "D", "value", "a multiple of 128", s.D);
  SSMKIT_CHECK(s.L % kChunk == 0, "L", "value", "a multiple of 64", s.L);
  // The same inputs twice (same seeds), each with its gradients: the library's backward, and the
  // prototype's pass 3 between the library's other passes.
  BackwardProblem<float> lib(s, Layout::token), proto(s, Layout::token);
  SelectiveScanBackwardParams<float, float>& p = lib.p;
  SelectiveScanBackwardParams<float, float>& q = proto.p;
  // The forward's fine checkpoints (its output in du, which the backward overwrites).
  SelectiveScanParams<float, float> f = p.forward(p.du);
  const Index every = kSelectiveScanFineCheckpointInterval, count = s.L / every;
  cuda::DeviceBuffer<float> ck(count * s.batch * s.D * s.N);
  f.checkpoints = ck.view<4>({count, s.batch, s.D, s.N});
  f.checkpoint_interval = every;
  const std::size_t fbytes = cuda::selective_scan_workspace_size(f);
  cuda::DeviceBuffer<char> fws(static_cast<Index>(std::max<std::size_t>(fbytes, 1)));
  cuda::selective_scan(f, nullptr, fws.data(), fbytes);
  p.checkpoints = q.checkpoints = f.checkpoints;
  p.checkpoint_interval = q.checkpoint_interval = every;
  const std::size_t bytes = cuda::selective_scan_backward_workspace_size<Policy>(p);
  cuda::DeviceBuffer<char> ws(static_cast<Index>(bytes)), qws(static_cast<Index>(bytes));
  const cuda::detail::ScanBackwardPlan<Policy> plan(s.batch, s.L, s.D, s.N, 1, true);
  SSMKIT_CHECK(plan.chunk_len == kChunk, "chunk_len", "value", "64", plan.chunk_len);
  const Args a = cuda::detail::make_backward_args(q, plan, reinterpret_cast<float*>(qws.data()));
  const std::size_t smem = kSmemFloats * sizeof(float);
  cuda::allow_dynamic_smem(lane_per_channel_pass3, smem, "lane_per_channel_pass3");
  const dim3 grid(static_cast<unsigned>(s.L / kChunk), static_cast<unsigned>(s.D / kThreads),
                  static_cast<unsigned>(s.batch));
  const auto pass3 = [&] {
    lane_per_channel_pass3<<<grid, kThreads, smem>>>(a);
    SSMKIT_CUDA_CHECK_LAUNCH("lane_per_channel_pass3");
  };
  const auto prototype = [&] {
    cuda::detail::launch_backward_clear(a, plan, nullptr);
    cuda::detail::launch_backward_local(a, plan, nullptr);
    cuda::detail::launch_backward_join(a, plan, nullptr);
    pass3();
    cuda::detail::launch_backward_finish(a, plan, nullptr);
  };
  const auto library = [&] { cuda::selective_scan_backward<Policy>(p, nullptr, ws.data(), bytes); };
  library();
  prototype();
  SSMKIT_CUDA_CHECK(cudaDeviceSynchronize());
  std::printf("| B=%lld D=%lld L=%lld | %.1e | %.1e | %.1e | %.1e | %.1e | %.1e | %.1e | %.1e |",
              static_cast<long long>(s.batch), static_cast<long long>(s.D),
              static_cast<long long>(s.L), rel_error(proto.du, lib.du),
              rel_error(proto.ddelta, lib.ddelta), rel_error(proto.dz, lib.dz),
              rel_error(proto.dB, lib.dB), rel_error(proto.dC, lib.dC), rel_error(proto.dA, lib.dA),
              rel_error(proto.dD, lib.dD), rel_error(proto.dbias, lib.dbias));
  const double lib_ms = median_ms(3, runs, [&](int) { library(); });
  const double proto_ms = median_ms(3, runs, [&](int) { prototype(); });
  const Args lib_args =
      cuda::detail::make_backward_args(p, plan, reinterpret_cast<float*>(ws.data()));
  const double lib_pass3 = median_ms(
      3, runs, [&](int) { cuda::detail::launch_backward_chunks(lib_args, plan, nullptr); });
  const double proto_pass3 = median_ms(3, runs, [&](int) { pass3(); });
  std::printf(" %.3f | %.3f | %.3f | %.3f |\n", lib_ms, proto_ms, lib_pass3, proto_pass3);
}

}  // namespace
}  // namespace ssmkit::bench

int main(int argc, char** argv) {
  using namespace ssmkit::bench;
  const BenchArgs args = parse_bench_args(argc, argv, 10);
  try {
    cudaDeviceProp prop{};
    if (!describe_device(prop, "\n\n"))
      return 1;
    std::printf(
        "## Scan backward with pass 3 one lane per channel (prototype), fp32 token-major, "
        "from fine checkpoints\n\n");
    std::printf(
        "Relative L2 error of each gradient against the library's; times in ms (pass 3 "
        "alone: the library's chunked pass 3, and the prototype's).\n\n");
    std::printf(
        "| shape | du | dδ | dz | dB | dC | dA | dD | dδ_bias | library ms | prototype ms "
        "| library pass 3 ms | prototype pass 3 ms |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    const BackwardShape shapes[] = {
        {8, 2048, 2048, 16, 0, 0}, {1, 5120, 16384, 16, 0, 0}, {2, 1536, 131072, 16, 0, 0}};
    for (int i = 0; i < 3; ++i)
      if ((args.shape < 0 && (!args.quick || i == 0)) || args.shape == i)
        run_shape(shapes[i], args.runs);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_scan_backward_lane_per_channel: %s\n", e.what());
    return 1;
  }
  return 0;
}
