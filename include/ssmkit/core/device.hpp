// Where a tensor's memory lives. Views carry it so that every operation can refuse memory it
// cannot touch (a CPU kernel handed device memory, a CUDA kernel handed host memory).
#pragma once

#include <ostream>

namespace ssmkit {

enum class Device { CPU, CUDA };

inline std::ostream& operator<<(std::ostream& os, Device d) {
  return os << (d == Device::CPU ? "cpu" : "cuda");
}

/// Backend tags: the template argument of the nn modules.
struct Cpu {
  static constexpr Device device = Device::CPU;
};
struct Cuda {
  static constexpr Device device = Device::CUDA;
};

}  // namespace ssmkit
