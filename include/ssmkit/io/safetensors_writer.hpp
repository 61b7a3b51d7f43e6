// Writer of the safetensors format, laid out as the reference (Rust) implementation does: header
// padded with spaces to a multiple of 8 bytes, tensors ordered by decreasing element size, then
// name, so that every tensor's data is aligned for its type when the file is mapped.
#pragma once

#include "ssmkit/core/error.hpp"
#include "ssmkit/core/tensor_view.hpp"
#include "ssmkit/io/json_document.hpp"
#include "ssmkit/io/safetensors_dtype.hpp"
#include "ssmkit/io/safetensors_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace ssmkit::io {

class SafetensorsWriter {
 public:
  /// Adds a copy of `v` (any strides; stored contiguous row-major) under `name`.
  template <class T, int Rank>
  void add(const std::string& name, const TensorView<T, Rank>& v) {
    using U = std::remove_cv_t<T>;
    check_name(name);
    check_device(v, name.c_str(), Device::CPU);
    Entry e;
    e.name = name;
    e.dtype = dtype_of<U>;
    e.shape.assign(v.shape().begin(), v.shape().end());
    e.bytes.resize(static_cast<std::size_t>(v.numel()) * sizeof(U));
    // Row-major walk over the (possibly strided) view.
    Shape<Rank> idx{};
    for (Index i = 0; i < v.numel(); ++i) {
      Index off = 0;
      for (int d = 0; d < Rank; ++d)
        off += idx[d] * v.stride(d);
      std::memcpy(e.bytes.data() + static_cast<std::size_t>(i) * sizeof(U), v.data() + off,
                  sizeof(U));
      for (int d = Rank - 1; d >= 0 && ++idx[d] == v.size(d); --d)
        idx[d] = 0;
    }
    names_.insert(name);
    entries_.push_back(std::move(e));
  }

  /// Sets a `__metadata__` entry (string to string, as the format requires).
  void set_metadata(const std::string& key, const std::string& value) {
    SSMKIT_CHECK(is_valid_utf8(key) && is_valid_utf8(value), "metadata '" + key + "'", "text",
                 "valid UTF-8", "invalid bytes");
    metadata_[key] = value;
  }

  /// The file's bytes.
  std::vector<std::uint8_t> serialize() const {
    std::vector<const Entry*> order;
    for (const auto& e : entries_)
      order.push_back(&e);
    std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
      const auto sa = size_of(a->dtype), sb = size_of(b->dtype);
      return sa != sb ? sa > sb : a->name < b->name;
    });
    nlohmann::json header = nlohmann::json::object();
    if (!metadata_.empty())
      header["__metadata__"] = metadata_;
    std::uint64_t offset = 0;
    for (const Entry* e : order) {
      const std::uint64_t end = offset + e->bytes.size();
      header[e->name] = {{"dtype", std::string(name_of(e->dtype))},
                         {"shape", e->shape},
                         {"data_offsets", {offset, end}}};
      offset = end;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    // A longer header would make a file that every reader, ssmkit's included, refuses.
    SSMKIT_CHECK(text.size() <= kMaxSafetensorsHeader, "safetensors header", "length",
                 "<= " + std::to_string(kMaxSafetensorsHeader) + " bytes (kMaxSafetensorsHeader)",
                 text.size());

    std::vector<std::uint8_t> out(8 + text.size() + offset);
    const std::uint64_t n = text.size();
    std::memcpy(out.data(), &n, 8);
    std::memcpy(out.data() + 8, text.data(), text.size());
    std::uint8_t* data = out.data() + 8 + text.size();
    for (const Entry* e : order) {
      if (!e->bytes.empty())
        std::memcpy(data, e->bytes.data(), e->bytes.size());
      data += e->bytes.size();
    }
    return out;
  }

  /// Writes the file to `path`, replacing any file there. The bytes go to a new file beside it,
  /// which then is renamed over `path`: views of the old file (mapped by a SafetensorsFile) keep
  /// their bytes, and a crash leaves the old file or the new one, never a mix. A symbolic link at
  /// `path` is replaced itself, not its target.
  void write(const std::string& path) const {
    const std::vector<std::uint8_t> bytes = serialize();
    static std::atomic<unsigned> counter{0};
    std::string tmp;
    int fd = -1;
    // O_EXCL: a name some other writer (or a crashed one) left is skipped, never shared.
    for (int attempt = 0; fd < 0 && attempt < 100; ++attempt) {
      tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
      fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd < 0 && errno != EEXIST)
        break;
    }
    SSMKIT_CHECK(fd >= 0, path, "file", "writable (through a temporary file beside it)",
                 std::strerror(errno));
    int err = 0;  // errno of the first step that failed
    const char* p = reinterpret_cast<const char*>(bytes.data());
    std::size_t left = bytes.size();
    while (err == 0 && left > 0) {
      const ssize_t n = ::write(fd, p, left);
      if (n > 0) {
        p += n;
        left -= static_cast<std::size_t>(n);
      } else if (n == 0 || errno != EINTR) {
        err = n == 0 ? EIO : errno;
      }
    }
    // fsync before rename: otherwise a crash could leave the new name with no data behind it.
    if (err == 0 && ::fsync(fd) != 0)
      err = errno;
    if (::close(fd) != 0 && err == 0)
      err = errno;
    if (err == 0 && ::rename(tmp.c_str(), path.c_str()) != 0)
      err = errno;
    if (err != 0) {
      ::unlink(tmp.c_str());
      ssmkit::detail::throw_check(path, "write", std::to_string(bytes.size()) + " bytes",
                                  std::strerror(err));
    }
  }

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<Index> shape;
    std::vector<std::uint8_t> bytes;
  };

  void check_name(const std::string& name) const {
    SSMKIT_CHECK(name != "__metadata__", "tensor name", "value", "not '__metadata__' (reserved)",
                 name);
    SSMKIT_CHECK(is_valid_utf8(name), "tensor name", "text", "valid UTF-8", "invalid bytes");
    SSMKIT_CHECK(names_.count(name) == 0, "tensor '" + name + "'", "name", "unique",
                 "already added");
  }

  std::vector<Entry> entries_;
  std::set<std::string> names_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace ssmkit::io
