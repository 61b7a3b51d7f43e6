// Umbrella header of ssmkit's GPU kernels (nvcc only); <ssmkit/ssmkit.hpp> is the CPU side. The
// GPU modules and optimizers have their own headers: ssmkit/nn/cuda/*.cuh (MambaBlock, MambaLM),
// ssmkit/nn/cuda/grad/*.cuh (the LM's backward), ssmkit/optim/cuda/*.cuh (AdamW, clipping).
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/cufft_plan.cuh"
#include "ssmkit/core/dependent_launch.cuh"
#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/core/dtype.cuh"
#include "ssmkit/kernels/cuda/argmax.cuh"
#include "ssmkit/kernels/cuda/causal_conv1d.cuh"
#include "ssmkit/kernels/cuda/causal_conv1d_backward.cuh"
#include "ssmkit/kernels/cuda/cross_entropy.cuh"
#include "ssmkit/kernels/cuda/embedding.cuh"
#include "ssmkit/kernels/cuda/embedding_backward.cuh"
#include "ssmkit/kernels/cuda/fft_conv.cuh"
#include "ssmkit/kernels/cuda/gemv.cuh"
#include "ssmkit/kernels/cuda/mamba_inner_step.cuh"
#include "ssmkit/kernels/cuda/rms_norm.cuh"
#include "ssmkit/kernels/cuda/rms_norm_backward.cuh"
#include "ssmkit/kernels/cuda/selective_scan.cuh"
#include "ssmkit/kernels/cuda/selective_scan_backward.cuh"
#include "ssmkit/kernels/cuda/selective_state_update.cuh"
#include "ssmkit/kernels/cuda/ssm_kernel_dplr.cuh"
#include "ssmkit/kernels/cuda/ssm_kernel_vandermonde.cuh"
