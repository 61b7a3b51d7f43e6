// Launch limits across GPU generations: the dynamic shared memory check and its message, the
// scan backward's requests against the smallest opt-in limit of the GPUs ssmkit builds for, its
// grid rows within CUDA's limit, and the programmatic dependent launch taken only by code
// compiled with its wait.
#include "cuda_testing.hpp"

#include <ssmkit/core/dependent_launch.cuh>
#include <ssmkit/core/dynamic_smem.cuh>
#include <ssmkit/kernels/cuda/selective_scan_backward.cuh>

#include <gtest/gtest.h>

#include <string>

namespace ssmkit::testing {
namespace {

TEST(CudaLaunch, DynamicSmemCheckNamesKernelLimitAndRequest) {
  EXPECT_NO_THROW(cuda::detail::check_dynamic_smem(101376, 101376, "k"));
  try {
    cuda::detail::check_dynamic_smem(101377, 101376, "selective_scan_backward (pass 3)");
    FAIL() << "no error for a request past the limit";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "ssmkit: selective_scan_backward (pass 3): shared memory per block (bytes) expected "
              "<= 101376 (what this GPU offers a block), got 101377");
  }
}

// sm_86, sm_89 and sm_120 offer a block 99 KB (sm_80 163 KB, sm_90 227 KB): passes 1 and 3 must
// fit there at every state size the backward takes.
TEST(CudaLaunch, ScanBackwardSharedMemoryFitsEveryGpuFromSm80) {
  using Policy = cuda::SelectiveScanBackwardPolicy;
  constexpr std::size_t kSmallestLimit = 99 * 1024;
  for (Index N = 1; N <= cuda::kMaxBackwardStateSize; ++N) {
    const cuda::detail::ScanBackwardPlan<Policy> plan(1, 4096, 256, N, 1, true);
    const std::size_t pass1 =
        sizeof(float) * cuda::detail::local_smem_floats<Policy>(plan.chunk_len, plan.padded_n,
                                                                plan.lanes_per_channel);
    EXPECT_LE(pass1, kSmallestLimit) << "N = " << N;
    for (const bool fine : {false, true}) {
      const std::size_t pass3 =
          sizeof(float) * cuda::detail::chunk_smem_floats<Policy>(plan.chunk_len, plan.padded_n,
                                                                  static_cast<int>(N),
                                                                  plan.lanes_per_channel, fine);
      EXPECT_LE(pass3, kSmallestLimit) << "N = " << N << (fine ? ", fine checkpoints" : "");
    }
  }
}

// The serial walk takes a block per round of 32 channels where the chunked plan takes 256: at
// D = 2^21 that is 65536 grid rows, one past the limit the chunked plan was checked against, so
// the backward must stay chunked there rather than fail at launch.
TEST(CudaLaunch, ScanBackwardSerialWalkStaysInsideTheGrid) {
  using Policy = cuda::SelectiveScanBackwardPolicy;
  for (const Index D : {Index{1} << 20, Index{1} << 21}) {
    cuda::detail::ScanBackwardPlan<Policy> plan(1, 64, D, 16, 1, true);
    ASSERT_LE(plan.slices_per_group, 65535) << "D = " << D;
    cuda::detail::ScanBackwardArgs<float> a{};
    a.batch = 1;
    a.G = 1;
    a.channels_per_group = static_cast<int>(D);
    a.entry_every = plan.chunk_len / Policy::kSubChunk;
    a.entry_vec = a.same_layout = true;
    a.slices_per_group = plan.slices_per_group;
    a.channels_per_slice = plan.channels_per_slice;
    cuda::detail::choose_serial(plan, a, 132);
    EXPECT_EQ(plan.serial, D == Index{1} << 20) << "D = " << D;
    EXPECT_LE(plan.slices_per_group, 65535) << "D = " << D;
    EXPECT_EQ(a.slices_per_group, plan.slices_per_group) << "D = " << D;
  }
}

__global__ void report_arch(int* arch) {
  cuda::wait_for_producer();
#ifdef __CUDA_ARCH__
  *arch = __CUDA_ARCH__;
#endif
}

// launch_dependent reads the target a kernel was compiled for from its PTX version: it must agree
// with the __CUDA_ARCH__ the kernel sees, whether the GPU runs code built for it or PTX of an
// older target through the driver's compiler.
TEST(CudaLaunch, DependentLaunchOnlyWithTheWaitCompiledIn) {
  SSMKIT_REQUIRE_GPU();
  cuda::DeviceBuffer<int> arch(1);
  SSMKIT_CUDA_CHECK(cudaMemset(arch.data(), 0, sizeof(int)));
  cuda::launch_dependent(report_arch, dim3(1), dim3(1), 0, nullptr, arch.data());
  int seen = 0;
  SSMKIT_CUDA_CHECK(cudaMemcpy(&seen, arch.data(), sizeof(int), cudaMemcpyDeviceToHost));
  ASSERT_GT(seen, 0);
  EXPECT_EQ(cuda::detail::waits_for_producer(reinterpret_cast<const void*>(report_arch)),
            seen >= 900)
      << "__CUDA_ARCH__ " << seen;
}

}  // namespace
}  // namespace ssmkit::testing
