// libFuzzer target of the safetensors reader: any byte string must either open, and then read
// back every tensor in bounds, or throw ssmkit::Error -- never crash or read out of bounds
// (built with ASan and UBSan).
#include <ssmkit/io/safetensors.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace {

using ssmkit::io::SafetensorsFile;

template <class T, int Rank>
void read(const SafetensorsFile& f, const std::string& name) {
  const auto t = f.read_as<T, Rank>(name);
  volatile float sink = 0;  // touch every converted element
  for (ssmkit::Index i = 0; i < t.numel(); ++i)
    sink = sink + static_cast<float>(t.data()[i]);
}

template <class T>
void read_any_rank(const SafetensorsFile& f, const ssmkit::io::TensorInfo& info) {
  switch (info.shape.size()) {
    case 1:
      return read<T, 1>(f, info.name);
    case 2:
      return read<T, 2>(f, info.name);
    case 3:
      return read<T, 3>(f, info.name);
    case 4:
      return read<T, 4>(f, info.name);
    default:  // ranks 0 and > 4 have no view type: read must refuse them
      try {
        read<T, 1>(f, info.name);
        __builtin_trap();
      } catch (const ssmkit::Error&) {
      }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto f = SafetensorsFile::from_bytes(std::vector<std::uint8_t>(data, data + size));
    for (const auto& info : f.tensors()) {
      const auto b = f.bytes(info.name);
      volatile std::uint8_t sink = 0;
      for (std::size_t i = 0; i < b.size; ++i)
        sink = sink ^ b.data[i];
      try {
        if (ssmkit::io::is_floating(info.dtype)) {
          read_any_rank<double>(f, info);
          read_any_rank<Eigen::bfloat16>(f, info);
        } else {
          read_any_rank<std::int64_t>(f, info);
          read_any_rank<bool>(f, info);
        }
        if (info.dtype == ssmkit::DType::F32 && info.shape.size() == 2)
          (void)f.view<float, 2>(info.name);
        if (info.dtype == ssmkit::DType::Bool && info.shape.size() == 1)
          (void)f.view<bool, 1>(info.name);
      } catch (const ssmkit::Error&) {  // out-of-range integers, BOOL bytes > 1, misalignment
      }
    }
  } catch (const ssmkit::Error&) {
  }
  return 0;
}
