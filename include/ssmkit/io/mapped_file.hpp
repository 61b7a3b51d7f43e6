// A read-only memory mapping of a whole file (POSIX mmap), released when the object dies.
// Checkpoint readers hand out zero-copy views into it.
#pragma once

#include "ssmkit/core/error.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

namespace ssmkit::io {

/// Maps a regular file read-only. The mapping is private: bytes never change under a view unless
/// another process truncates the file, which no reader can guard against (the OS sends SIGBUS).
class MappedFile {
 public:
  MappedFile() = default;

  explicit MappedFile(const std::string& path) : path_(path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    SSMKIT_CHECK(fd >= 0, path, "file", "readable", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      ssmkit::detail::throw_check(path, "file", "a regular file", "something else");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {  // mmap rejects length 0; an empty file maps to nothing
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      const int err = errno;
      ::close(fd);
      SSMKIT_CHECK(p != MAP_FAILED, path, "mmap", "success", std::strerror(err));
      data_ = static_cast<const std::uint8_t*>(p);
    } else {
      ::close(fd);
    }
  }

  MappedFile(MappedFile&& o) noexcept
      : path_(std::move(o.path_)),
        data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)) {}
  MappedFile& operator=(MappedFile&& o) noexcept {
    if (this != &o) {
      unmap();
      path_ = std::move(o.path_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() { unmap(); }

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void unmap() {
    if (data_ != nullptr)
      ::munmap(const_cast<std::uint8_t*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
  }

  std::string path_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace ssmkit::io
