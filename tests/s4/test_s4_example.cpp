// Runs the s4_long_signal example: a short signal's two modes agree (exit status 0), --help prints
// the usage on stdout, and bad flags fail with a one-line message and the usage (exit status 2).
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

}  // namespace
