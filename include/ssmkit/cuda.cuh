// Umbrella header of ssmkit's GPU side (nvcc only); <ssmkit/ssmkit.hpp> is the CPU side.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/cufft_plan.cuh"
#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/core/dtype.cuh"
#include "ssmkit/kernels/cuda/causal_conv1d.cuh"
#include "ssmkit/kernels/cuda/fft_conv.cuh"
#include "ssmkit/kernels/cuda/selective_scan.cuh"
#include "ssmkit/kernels/cuda/selective_scan_backward.cuh"
#include "ssmkit/kernels/cuda/selective_state_update.cuh"
#include "ssmkit/kernels/cuda/ssm_kernel_dplr.cuh"
#include "ssmkit/kernels/cuda/ssm_kernel_vandermonde.cuh"
