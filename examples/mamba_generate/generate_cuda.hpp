// mamba_generate's GPU path, compiled by nvcc into the example when CUDA is there (main.cpp
// itself stays plain C++).
#pragma once

#include <ssmkit/io/hf_mamba.hpp>
#include <ssmkit/nn/sampling.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

/// Loads the checkpoint in `model_dir` (opened with `open`) onto the GPU (weights as float or, with
/// `bf16`, bfloat16), writes the prompt's logits to `dump_logits` (a safetensors file) unless it is
/// empty, and continues the prompt: greedy decoding on the device with a CUDA graph per step,
/// sampling through the host. Throws ssmkit::Error (no device, bad checkpoint, ...).
ssmkit::nn::GenerationResult generate_cuda(const std::string& model_dir,
                                           const ssmkit::io::HfOpenOptions& open,
                                           const std::vector<std::int64_t>& prompt,
                                           ssmkit::Index max_new_tokens,
                                           const ssmkit::nn::SamplingConfig& sampling, bool bf16,
                                           const std::string& dump_logits,
                                           const std::function<void(ssmkit::Index)>& on_token);
