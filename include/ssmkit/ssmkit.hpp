// Umbrella header of ssmkit's CPU side: core types, the S4 and S6 kernels, the nn modules, their
// backward passes and optimisers for training, and the checkpoint readers. The GPU side is
// <ssmkit/cuda.cuh>, for nvcc only.
#pragma once

#include "ssmkit/version.hpp"

#include "ssmkit/core/device.hpp"
#include "ssmkit/core/dtype.hpp"
#include "ssmkit/core/error.hpp"
#include "ssmkit/core/host_tensor.hpp"
#include "ssmkit/core/parallel.hpp"
#include "ssmkit/core/tensor_view.hpp"

#include "ssmkit/math/activations.hpp"
#include "ssmkit/math/discretize.hpp"
#include "ssmkit/math/hippo.hpp"
#include "ssmkit/math/nplr.hpp"
#include "ssmkit/math/s4d_init.hpp"

#include "ssmkit/kernels/cpu/causal_conv1d.hpp"
#include "ssmkit/kernels/cpu/causal_conv1d_backward.hpp"
#include "ssmkit/kernels/cpu/fft_conv.hpp"
#include "ssmkit/kernels/cpu/selective_scan.hpp"
#include "ssmkit/kernels/cpu/selective_scan_backward.hpp"
#include "ssmkit/kernels/cpu/selective_scan_reference.hpp"
#include "ssmkit/kernels/cpu/ssm_kernel_dplr.hpp"
#include "ssmkit/kernels/cpu/ssm_kernel_vandermonde.hpp"
#include "ssmkit/kernels/cpu/ssm_recurrence.hpp"

#include "ssmkit/io/hf_mamba.hpp"
#include "ssmkit/io/safetensors.hpp"

#include "ssmkit/nn/grad/checked_tokens.hpp"
#include "ssmkit/nn/grad/cross_entropy.hpp"
#include "ssmkit/nn/grad/embedding_backward.hpp"
#include "ssmkit/nn/grad/linear_backward.hpp"
#include "ssmkit/nn/grad/mamba_block_backward.hpp"
#include "ssmkit/nn/grad/mamba_lm_backward.hpp"
#include "ssmkit/nn/grad/mamba_lm_init.hpp"
#include "ssmkit/nn/grad/rms_norm_backward.hpp"
#include "ssmkit/nn/linear.hpp"
#include "ssmkit/nn/mamba_block.hpp"
#include "ssmkit/nn/mamba_lm.hpp"
#include "ssmkit/nn/rms_norm.hpp"
#include "ssmkit/nn/s4_layer.hpp"
#include "ssmkit/nn/sampling.hpp"
#include "ssmkit/nn/workspace.hpp"

#include "ssmkit/optim/adamw.hpp"
#include "ssmkit/optim/clip_grad_norm.hpp"
