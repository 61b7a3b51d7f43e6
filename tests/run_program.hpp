// Runs a program of the build (an example) through the shell and captures its exit status, its
// standard output and its standard error, for the tests that check examples end to end.
#pragma once

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>

namespace ssmkit::testing {

struct ProgramRun {
  int status = -1;  ///< exit status; -1 when the program did not exit normally
  std::string out, err;
};

/// `program` (a path, quoted for the shell) with `args` (shell words, as written).
inline ProgramRun run_program(const std::string& program, const std::string& args) {
  static int counter = 0;
  const auto err_path =
      std::filesystem::temp_directory_path() /
      ("ssmkit_run_err_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + ".txt");
  const std::string cmd = "'" + program + "' " + args + " 2>'" + err_path.string() + "'";
  ProgramRun r;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  EXPECT_NE(pipe, nullptr) << cmd;
  if (pipe == nullptr)
    return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0)
    r.out.append(buf, n);
  const int raw = ::pclose(pipe);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  std::ifstream e(err_path);
  std::stringstream ss;
  ss << e.rdbuf();
  r.err = ss.str();
  std::filesystem::remove(err_path);
  return r;
}

/// Whether `r`, a run of `program` with --device cuda, is that example's own refusal where
/// --device cuda cannot run: exit status 1, nothing on stdout and, on stderr, exactly one line
/// "program: reason" for one of `reasons` (its messages for a build without the CUDA backend and
/// for no visible device). Any other failure (a CUDA call that failed, a crash) is not.
inline bool cuda_unavailable(const ProgramRun& r, const std::string& program,
                             std::initializer_list<const char*> reasons) {
  if (r.status != 1 || !r.out.empty())
    return false;
  for (const char* reason : reasons)
    if (r.err == program + ": " + reason + "\n")
      return true;
  return false;
}

}  // namespace ssmkit::testing
