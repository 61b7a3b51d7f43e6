// mamba_generate's GPU path: MambaLM<float or bf16, Cuda> on a stream of its own.
#include "generate_cuda.hpp"

#include <ssmkit/io/safetensors.hpp>
#include <ssmkit/nn/cuda/mamba_lm.cuh>

namespace {

struct Stream {
  cudaStream_t s{};
  Stream() { SSMKIT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~Stream() { cudaStreamDestroy(s); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
};

template <class W>
ssmkit::nn::GenerationResult run(const std::string& model_dir,
                                 const ssmkit::io::HfOpenOptions& open,
                                 const std::vector<std::int64_t>& prompt, ssmkit::Index max_new,
                                 const ssmkit::nn::SamplingConfig& sampling,
                                 const std::string& dump_logits,
                                 const std::function<void(ssmkit::Index)>& on_token) {
  using namespace ssmkit;
  Stream stream;
  const auto model = nn::MambaLM<W, Cuda>::from_pretrained(model_dir, {}, open);
  if (!dump_logits.empty()) {
    const auto L = static_cast<Index>(prompt.size());
    const Index V = model.vocab_size();
    cuda::DeviceBuffer<float> logits(L * V, "logits");
    model.forward(TensorView<const std::int64_t, 2>(prompt.data(), {1, L}, "ids"),
                  logits.view<3>({1, L, V}), stream.s);
    HostTensor<float, 2> host({L, V});
    logits.copy_to_host_async(host.data(), L * V, stream.s);
    SSMKIT_CUDA_CHECK(cudaStreamSynchronize(stream.s));
    io::SafetensorsWriter w;
    w.add("logits", host.view());
    w.write(dump_logits);
  }
  return nn::generate(model, {prompt}, max_new, sampling, stream.s, true, on_token);
}

}  // namespace

ssmkit::nn::GenerationResult generate_cuda(const std::string& model_dir,
                                           const ssmkit::io::HfOpenOptions& open,
                                           const std::vector<std::int64_t>& prompt,
                                           ssmkit::Index max_new_tokens,
                                           const ssmkit::nn::SamplingConfig& sampling, bool bf16,
                                           const std::string& dump_logits,
                                           const std::function<void(ssmkit::Index)>& on_token) {
  if (ssmkit::cuda::device_count() == 0)
    throw ssmkit::Error("ssmkit: --device cuda: no CUDA device is visible");
  return bf16
             ? run<__nv_bfloat16>(model_dir, open, prompt, max_new_tokens, sampling, dump_logits,
                                  on_token)
             : run<float>(model_dir, open, prompt, max_new_tokens, sampling, dump_logits, on_token);
}
