// The CUDA selective scan backward on the target shapes (benchmarks/RESULTS.md, top) (N=16, z, D,
// δ_bias, softplus; fp32 and bf16; token-major, channel-major, and the token-major layout a Mamba
// block hands over, with z and dz halves of wider rows), timed with CUDA events, against
// mamba_ssm's backward (DESIGN.md's H100 figures, or --mamba-ssm FILE: its times measured on this
// GPU by tools/bench_mamba_ssm.py); and the time of each of its passes. Prints markdown tables.
//   bench_cuda_scan_backward [--runs N] [--quick] [--shape I] [--dtype fp32|bf16]
//                            [--layout token|channel|block] [--mamba-ssm FILE]
//   (--quick: the first shape only; --shape I: the I-th only, from 0; --dtype, --layout: those
//   rows only, for profiling one of them)
#include "bench_scan_backward.cuh"

#include <ssmkit/kernels/cuda/selective_scan.cuh>
#include <ssmkit/kernels/cuda/selective_scan_backward.cuh>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace ssmkit::bench {
namespace {

struct BackwardTiming {
  double total_ms, local_ms, join_ms, chunks_ms, finish_ms, workspace_mb;
  // From the forward's checkpoints (every chunk, then every sub-chunk: fine): the backward, and
  // the forward with and without taking them.
  double checkpoints_ms, forward_ms, forward_checkpoints_ms, fine_ms, forward_fine_ms;
};

template <class T>
BackwardTiming time_backward(const BackwardShape& shape, Layout layout, int runs) {
  using Policy = cuda::SelectiveScanBackwardPolicy;
  BackwardProblem<T> pr(shape, layout);
  const std::size_t bytes = cuda::selective_scan_backward_workspace_size<Policy>(pr.p);
  cuda::DeviceBuffer<char> ws(static_cast<Index>(bytes));
  SSMKIT_CUDA_CHECK(cudaDeviceSynchronize());
  BackwardTiming t{};
  t.workspace_mb = static_cast<double>(bytes) / 1e6;
  t.total_ms = median_ms(3, runs, [&](int) {
    cuda::selective_scan_backward<Policy>(pr.p, nullptr, ws.data(), bytes);
  });
  // Each pass alone, on the state the full call leaves (the join rewrites its input in place,
  // which changes its numbers, not its work).
  const cuda::detail::ScanBackwardPlan<Policy> plan(shape.batch, shape.L, shape.D, shape.N, 1);
  const auto a = cuda::detail::make_backward_args(pr.p, plan, reinterpret_cast<float*>(ws.data()));
  t.local_ms =
      median_ms(1, runs, [&](int) { cuda::detail::launch_backward_local(a, plan, nullptr); });
  t.join_ms =
      median_ms(1, runs, [&](int) { cuda::detail::launch_backward_join(a, plan, nullptr); });
  t.chunks_ms =
      median_ms(1, runs, [&](int) { cuda::detail::launch_backward_chunks(a, plan, nullptr); });
  t.finish_ms = median_ms(1, runs, [&](int) {
    cuda::detail::launch_backward_clear(a, plan, nullptr);
    cuda::detail::launch_backward_finish(a, plan, nullptr);
  });

  // The forward (its output in du, which the backward overwrites) taking checkpoints at the
  // backward's chunk, then sub-chunk length, and the backward from them.
  SelectiveScanParams<T, float> f = pr.p.forward(pr.p.du);
  const std::size_t fbytes = cuda::selective_scan_workspace_size(f);
  cuda::DeviceBuffer<char> fws(static_cast<Index>(std::max<std::size_t>(fbytes, 1)));
  t.forward_ms =
      median_ms(3, runs, [&](int) { cuda::selective_scan(f, nullptr, fws.data(), fbytes); });
  const auto from_checkpoints = [&](Index every, double& forward_ms, double& backward_ms) {
    const Index count = (shape.L + every - 1) / every;
    cuda::DeviceBuffer<float> ck(count * shape.batch * shape.D * shape.N);
    f.checkpoints = ck.view<4>({count, shape.batch, shape.D, shape.N});
    f.checkpoint_interval = every;
    forward_ms =
        median_ms(3, runs, [&](int) { cuda::selective_scan(f, nullptr, fws.data(), fbytes); });
    SelectiveScanBackwardParams<T, float> from = pr.p;
    from.checkpoints = f.checkpoints;
    from.checkpoint_interval = every;
    const std::size_t cbytes = cuda::selective_scan_backward_workspace_size<Policy>(from);
    cuda::DeviceBuffer<char> cws(static_cast<Index>(cbytes));
    backward_ms = median_ms(3, runs, [&](int) {
      cuda::selective_scan_backward<Policy>(from, nullptr, cws.data(), cbytes);
    });
  };
  from_checkpoints(selective_scan_checkpoint_interval(shape.N), t.forward_checkpoints_ms,
                   t.checkpoints_ms);
  from_checkpoints(kSelectiveScanFineCheckpointInterval, t.forward_fine_ms, t.fine_ms);
  return t;
}

}  // namespace
}  // namespace ssmkit::bench

int main(int argc, char** argv) {
  using namespace ssmkit::bench;
  const BenchArgs args = parse_bench_args(argc, argv, 10);
  const int runs = args.runs;
  std::string only_dtype, only_layout;  // empty: every row
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--dtype") == 0)
      only_dtype = argv[++i];
    else if (std::strcmp(argv[i], "--layout") == 0)
      only_layout = argv[++i];
  }
  if (!only_dtype.empty() && only_dtype != "fp32" && only_dtype != "bf16") {
    std::fprintf(stderr, "bench_cuda_scan_backward: --dtype %s: expected fp32 or bf16\n",
                 only_dtype.c_str());
    return 2;
  }
  if (!only_layout.empty() && only_layout != "token" && only_layout != "channel" &&
      only_layout != "block") {
    std::fprintf(stderr,
                 "bench_cuda_scan_backward: --layout %s: expected token, channel or block\n",
                 only_layout.c_str());
    return 2;
  }
  try {
    cudaDeviceProp prop{};
    if (!describe_device(prop, "\n\n"))
      return 1;
    std::vector<BackwardShape> shapes =
        selected_shapes<BackwardShape>({{8, 2048, 2048, 16, 2.80, 2.51},
                                        {1, 5120, 16384, 16, 7.08, 6.44},
                                        {2, 1536, 131072, 16, 33.3, 30.2}},
                                       args);
    use_mamba_ssm_times(shapes, args, "bwd");
    std::printf("## selective scan backward (N=16, z, D, delta_bias, softplus)\n\n");
    std::printf(
        "Without checkpoints, then from the forward's checkpoints every chunk (passes 1 and 2 "
        "form the adjoints alone; mamba_ssm's backward likewise starts from states its forward "
        "saved) and every sub-chunk (fine: pass 3 has no walk forwards either), and what taking "
        "them adds to the forward.\n\n");
    std::printf(
        "| shape | dtype | layout | time ms | mamba_ssm bwd ms | x faster | pass 1 ms | join ms | "
        "pass 3 ms | finish ms | workspace MB | from checkpoints ms | x faster | from fine ms | "
        "x faster | forward ms | + checkpoints ms | + fine ms |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const BackwardShape& s : shapes)
      for (const bool bf16 : {false, true})
        for (const Layout layout : {Layout::token, Layout::channel, Layout::block}) {
          if ((!only_dtype.empty() && only_dtype != (bf16 ? "bf16" : "fp32")) ||
              (!only_layout.empty() && only_layout != layout_name(layout)))
            continue;
          const BackwardTiming t = bf16 ? time_backward<__nv_bfloat16>(s, layout, runs)
                                        : time_backward<float>(s, layout, runs);
          const double mamba = bf16 ? s.mamba_bf16_ms : s.mamba_fp32_ms;
          std::printf(
              "| B=%lld D=%lld L=%lld | %s | %s | %.3f | %.2f | %.2f | %.3f | %.3f | %.3f | "
              "%.3f | %.0f | %.3f | %.2f | %.3f | %.2f | %.3f | %.3f | %.3f |\n",
              static_cast<long long>(s.batch), static_cast<long long>(s.D),
              static_cast<long long>(s.L), bf16 ? "bf16" : "fp32", layout_name(layout), t.total_ms,
              mamba, mamba / t.total_ms, t.local_ms, t.join_ms, t.chunks_ms, t.finish_ms,
              t.workspace_mb, t.checkpoints_ms, mamba / t.checkpoints_ms, t.fine_ms,
              mamba / t.fine_ms, t.forward_ms, t.forward_checkpoints_ms - t.forward_ms,
              t.forward_fine_ms - t.forward_ms);
          std::fflush(stdout);
        }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_scan_backward: %s\n", e.what());
    return 1;
  }
  return 0;
}
