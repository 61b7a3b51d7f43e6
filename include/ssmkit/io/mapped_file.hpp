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
namespace detail {

/// What a stat(2) mode says the file is, for error messages ("a directory", "a FIFO", ...).
inline const char* file_kind(mode_t mode) {
  if (S_ISREG(mode))
    return "a regular file";
  if (S_ISDIR(mode))
    return "a directory";
  if (S_ISFIFO(mode))
    return "a FIFO";
  if (S_ISSOCK(mode))
    return "a socket";
  if (S_ISCHR(mode))
    return "a character device";
  if (S_ISBLK(mode))
    return "a block device";
  return "a special file";
}

}  // namespace detail

/// Maps a regular file read-only. The mapping is private, yet Linux still shows it writes made to
/// the file in place, and truncation makes reads past the new end SIGBUS: no reader can guard
/// against that, so SafetensorsWriter replaces a file (a new inode) instead of rewriting it.
class MappedFile {
 public:
  MappedFile() = default;

  explicit MappedFile(const std::string& path) : path_(path) {
    // O_NONBLOCK: opening a FIFO would otherwise wait for a writer before the check below runs.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    SSMKIT_CHECK(fd >= 0, path, "file", "readable", std::strerror(errno));
    // Status and mapping first, then the descriptor closes once (a mapping outlives it), then
    // the checks.
    struct stat st {};
    const bool have_status = ::fstat(fd, &st) == 0;
    const int status_err = errno;
    const bool regular = have_status && S_ISREG(st.st_mode);
    void* p = nullptr;
    int map_err = 0;
    if (regular && st.st_size > 0) {  // mmap rejects length 0; an empty file maps to nothing
      p = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
      map_err = errno;
    }
    ::close(fd);
    SSMKIT_CHECK(have_status, path, "file status", "readable", std::strerror(status_err));
    SSMKIT_CHECK(regular, path, "file", "a regular file", detail::file_kind(st.st_mode));
    SSMKIT_CHECK(p != MAP_FAILED, path, "mmap", "success", std::strerror(map_err));
    size_ = static_cast<std::size_t>(st.st_size);
    data_ = static_cast<const std::uint8_t*>(p);
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
