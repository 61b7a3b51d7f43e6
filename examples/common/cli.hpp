// Command-line machinery shared by the example programs: --flag value parsing, number parsing, the
// machine's memory (to refuse sizes that cannot fit), a progress bar redrawn on stderr, and a
// main() that turns errors into one line and an exit status.
#pragma once

#include <ssmkit/core/parallel.hpp>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <initializer_list>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>

#include <unistd.h>

namespace ssmkit::examples {

/// A bad command line: exit status 2 with the usage line; the message "help" prints the usage
/// line on stdout and exits 0.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// `text` as an N, the whole of it: integers exactly, in decimal digits (from_chars), reals
/// through strtod (its from_chars overload is missing from older standard libraries) and finite.
template <class N>
N parse_number(const std::string& flag, const std::string& text) {
  const char* end = text.data() + text.size();
  char* real_end = nullptr;
  const double real = std::strtod(text.c_str(), &real_end);
  const bool is_real = !text.empty() && real_end == end && std::isfinite(real);
  if constexpr (std::is_integral_v<N>) {
    N value{};
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (ec == std::errc() && ptr == end && !text.empty())
      return value;
    // Say why a number is refused: 2.5, 1e5 and 99999999999999999999 are numbers all the same.
    const char* why = ec == std::errc::result_out_of_range && ptr == end ? "is out of range"
                      : !is_real                                         ? "is not a valid number"
                      : real != std::floor(real)                         ? "is not an integer"
                      : std::is_unsigned_v<N> && real < 0                ? "is negative"
                                                          : "is not an integer in decimal digits";
    throw UsageError(flag + ": '" + text + "' " + why);
  } else {
    if (!is_real)
      throw UsageError(flag + ": '" + text + "' is not a valid number");
    return static_cast<N>(real);
  }
}

/// The flags of a command line, each given as `--flag value`.
class Flags {
 public:
  /// Throws UsageError on -h/--help, a flag not in `known`, a flag without a value, or a missing
  /// `required` flag.
  Flags(int argc, char** argv, std::initializer_list<const char*> known,
        std::initializer_list<const char*> required = {}) {
    for (int i = 1; i < argc; ++i) {
      const std::string flag = argv[i];
      if (flag == "-h" || flag == "--help")
        throw UsageError("help");
      bool ok = false;
      for (const char* k : known)
        ok = ok || flag == k;
      if (!ok)
        throw UsageError("unknown flag '" + flag + "'");
      if (i + 1 >= argc)
        throw UsageError(flag + " needs a value");
      values_[flag] = argv[++i];
    }
    for (const char* r : required)
      if (!has(r))
        throw UsageError(std::string(r) + " is required");
  }

  bool has(const std::string& flag) const { return values_.count(flag) != 0; }

  std::string get(const std::string& flag, const std::string& fallback) const {
    const auto it = values_.find(flag);
    return it == values_.end() ? fallback : it->second;
  }

  /// --device: cpu (the default) or cuda.
  std::string device() const {
    const std::string device = get("--device", "cpu");
    if (device != "cpu" && device != "cuda")
      throw UsageError("--device: expected cpu or cuda, got '" + device + "'");
    return device;
  }

  /// --threads, where given, sets the CPU backend's thread count.
  void apply_threads() const {
    if (!has("--threads"))
      return;
    const int threads = parse_number<int>("--threads", get("--threads", ""));
    if (threads < 1)
      throw UsageError("--threads: must be >= 1");
    ssmkit::set_num_threads(threads);
  }

 private:
  std::map<std::string, std::string> values_;
};

/// This machine's physical memory in bytes, or 0 where sysconf does not say. A run whose buffers
/// need more is refused as a usage error up front: past it, a large allocation throws
/// std::bad_alloc or, overcommitted, gets the process killed when its pages are touched.
inline double physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page_size = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page_size > 0 ? double(pages) * double(page_size) : 0.0;
}

/// Redraws a one-line bar `width` characters wide in place on stderr, `suffix` after the counts.
inline void draw_progress(Index done, Index total, int width, const std::string& suffix = "") {
  const int filled = static_cast<int>(width * done / total);
  std::fprintf(stderr, "\r[%s%s] %lld/%lld%s", std::string(filled, '#').c_str(),
               std::string(width - filled, ' ').c_str(), static_cast<long long>(done),
               static_cast<long long>(total), suffix.c_str());
  std::fflush(stderr);
}

/// Blanks the first `columns` characters of the line the bar is on.
inline void clear_progress(int columns) {
  std::fprintf(stderr, "\r%s\r", std::string(columns, ' ').c_str());
  std::fflush(stderr);
}

/// Runs `run`: its status, 0 with the usage on stdout for --help, 2 with "program: message" and
/// the usage on stderr for a UsageError, 1 with "program: message" on one line for any other
/// error.
template <class Run>
int run_main(const char* program, const char* usage, Run&& run) {
  try {
    return run();
  } catch (const UsageError& e) {
    if (std::string(e.what()) == "help") {
      std::cout << usage << "\n";
      return 0;
    }
    std::cerr << program << ": " << e.what() << "\n" << usage << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    for (char& c : msg)  // one line, whatever the message holds
      if (c == '\n')
        c = ' ';
    std::cerr << program << ": " << msg << "\n";
    return 1;
  }
}

}  // namespace ssmkit::examples
