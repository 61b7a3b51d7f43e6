// Umbrella header of ssmkit's CPU side. The GPU side is <ssmkit/cuda.cuh>, for nvcc only.
#pragma once

#include "ssmkit/core/device.hpp"
#include "ssmkit/core/dtype.hpp"
#include "ssmkit/core/error.hpp"
#include "ssmkit/core/host_tensor.hpp"
#include "ssmkit/core/parallel.hpp"
#include "ssmkit/core/tensor_view.hpp"
#include "ssmkit/version.hpp"
