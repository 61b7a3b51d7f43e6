// ssmkit::Error and the argument checks every public function runs before it touches data.
// A failed check names the argument, what was expected and what was found.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace ssmkit {

/// The one exception type ssmkit throws for bad input, malformed files and failed device calls.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}

/// Throws "ssmkit: <arg>: <what> expected <expected>, got <actual>".
template <class Expected, class Actual>
[[noreturn]] void throw_check(const std::string& arg, const char* what, const Expected& expected,
                              const Actual& actual) {
  throw Error(concat("ssmkit: ", arg, ": ", what, " expected ", expected, ", got ", actual));
}

[[noreturn]] inline void throw_error(const std::string& message) {
  throw Error("ssmkit: " + message);
}

}  // namespace detail
}  // namespace ssmkit

/// Throws ssmkit::Error unless `cond`; the message names `arg`, the property `what`, and the
/// expected and actual values (anything with operator<<, e.g. a number or a "> 0" string).
#define SSMKIT_CHECK(cond, arg, what, expected, actual)           \
  do {                                                            \
    if (!(cond))                                                  \
      ::ssmkit::detail::throw_check(arg, what, expected, actual); \
  } while (0)

/// SSMKIT_CHECK for equality: `actual == expected`.
#define SSMKIT_CHECK_EQ(arg, what, expected, actual)                  \
  do {                                                                \
    const auto& ssmkit_e_ = (expected);                               \
    const auto& ssmkit_a_ = (actual);                                 \
    if (!(ssmkit_a_ == ssmkit_e_))                                    \
      ::ssmkit::detail::throw_check(arg, what, ssmkit_e_, ssmkit_a_); \
  } while (0)
