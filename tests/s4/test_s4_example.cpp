// Runs the s4_long_signal example: a short signal's two modes agree (exit status 0), --help prints
// the usage on stdout, and bad flags fail with a one-line message and the usage (exit status 2),
// sizes whose buffers cannot fit in memory among them.
#include "run_program.hpp"
#include "testing.hpp"

#include <string>
#include <utility>

namespace {

using ExampleRun = ssmkit::testing::ProgramRun;

ExampleRun run_example(const std::string& args) {
  return ssmkit::testing::run_program(S4_LONG_SIGNAL, args);
}

TEST(S4LongSignalExample, ShortSignalModesAgree) {
  for (const char* param : {"diag", "dplr"}) {
    const ExampleRun r = run_example(
        std::string("--length 4096 --channels 2 --state 16 --threads 1 --param ") + param);
    EXPECT_EQ(r.status, 0) << param << ": " << r.out << r.err;
    EXPECT_NE(r.out.find("L = 4096, 1 threads"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("agreement: relative L2"), std::string::npos) << r.out;
  }
}

TEST(S4LongSignalExample, HelpGoesToStdout) {
  for (const char* flag : {"-h", "--help"}) {
    const ExampleRun r = run_example(flag);
    EXPECT_EQ(r.status, 0) << flag;
    EXPECT_EQ(r.out.rfind("usage: s4_long_signal", 0), 0u) << flag << ": " << r.out;
    EXPECT_EQ(r.err, "") << flag;
  }
}

TEST(S4LongSignalExample, BadFlagsAreUsageErrors) {
  // Each with the part of the message that says what is wrong.
  const std::pair<const char*, const char*> cases[] = {
      {"--threads 0", "--threads: must be >= 1"},
      {"--threads abc", "--threads: 'abc' is not a valid number"},
      {"--threads -3", "--threads: must be >= 1"},
      {"--length 1e5", "--length: '1e5' is not an integer in decimal digits"},
      {"--length 0", "--length: must be in [1, 1048576]"},
      {"--length 1048577", "--length: must be in [1, 1048576]"},
      {"--channels abc", "--channels: 'abc' is not a valid number"},
      {"--channels 0", "--channels: must be >= 1"},
      {"--state 7", "--state: must be even and >= 2"},
      {"--param foo", "--param: expected diag or dplr, got 'foo'"},
      {"--bogus 1", "unknown flag '--bogus'"},
      {"--length", "--length needs a value"},
  };
  for (const auto& [args, message] : cases) {
    const ExampleRun r = run_example(args);
    EXPECT_EQ(r.status, 2) << args;
    EXPECT_EQ(r.out, "") << args;
    EXPECT_EQ(r.err.rfind(std::string("s4_long_signal: ") + message + "\n", 0), 0u)
        << args << ": " << r.err;
    EXPECT_NE(r.err.find("\nusage: s4_long_signal"), std::string::npos) << args << ": " << r.err;
  }
}

// A --channels or --state whose buffers cannot fit in the machine's memory (or whose element
// counts overflow the index) is a usage error naming the option, the value and the largest that
// fits, not a std::bad_alloc (exit status 1) or an overcommitted run killed mid-way. The limit is
// the machine's: the test checks it is sane and that one past it is refused with the same limit.
TEST(S4LongSignalExample, SizesBeyondMemoryAreUsageErrors) {
  struct Case {
    std::string option, value, rest, context;
  };
  const Case cases[] = {
      {"--channels", "100000000000", "", "(at --length 65536 --state 64 --param diag)"},
      {"--channels", "9223372036854775807", "", "(at --length 65536 --state 64 --param diag)"},
      {"--channels", "100000000000", " --param dplr --length 1024",
       "(at --length 1024 --state 64 --param dplr)"},
      {"--state", "100000000000", "", "(at --length 65536 --channels 1 --param diag)"},
      {"--state", "100000000000", " --param dplr", "(at --length 65536 --channels 1 --param dplr)"},
      {"--state", "9223372036854775806", " --param dplr --channels 3",
       "(at --length 65536 --channels 1 --param dplr)"},
  };
  for (const Case& c : cases) {
    const std::string args = c.option + " " + c.value + c.rest;
    const ExampleRun r = run_example(args);
    EXPECT_EQ(r.status, 2) << args << ": " << r.err;
    EXPECT_EQ(r.out, "") << args;
    const std::string head = "s4_long_signal: " + c.option + ": " + c.value + " is too ";
    ASSERT_EQ(r.err.rfind(head, 0), 0u) << args << ": " << r.err;
    const std::size_t at_most = r.err.find(" at most ");
    ASSERT_NE(at_most, std::string::npos) << args << ": " << r.err;
    const long long most = std::stoll(r.err.substr(at_most + 9));
    // At least the defaults (8 channels, state 64) fit, and fewer than asked for.
    EXPECT_GE(most, c.option == "--channels" ? 8 : 64) << args << ": " << r.err;
    EXPECT_LT(most, std::stoll(c.value)) << args;
    EXPECT_NE(r.err.find(" " + c.context + "\nusage: s4_long_signal"), std::string::npos)
        << args << ": " << r.err;
    // The bound is exact: one past it is refused with the same limit.
    const std::string past = std::to_string(most + (c.option == "--state" ? 2 : 1));
    const ExampleRun p = run_example(c.option + " " + past + c.rest);
    EXPECT_EQ(p.status, 2) << past;
    EXPECT_EQ(p.err.rfind("s4_long_signal: " + c.option + ": " + past + " is too ", 0), 0u)
        << p.err;
    EXPECT_NE(p.err.find(" at most " + std::to_string(most) + " "), std::string::npos) << p.err;
  }
}

}  // namespace
