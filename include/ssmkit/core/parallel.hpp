// A parallel-for over an index range: OpenMP when the including translation unit is built with
// it (the ssmkit::ssmkit target adds it when found), a serial loop otherwise.
#pragma once

#include "ssmkit/core/tensor_view.hpp"

#ifdef _OPENMP
#include <omp.h>

#include <atomic>
#include <exception>
#endif

namespace ssmkit {

/// Threads a parallel_for may use.
inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Sets the thread count of later parallel_for calls (no effect without OpenMP).
inline void set_num_threads(int n) {
#ifdef _OPENMP
  SSMKIT_CHECK(n >= 1, "set_num_threads(n)", "n", ">= 1", n);
  omp_set_num_threads(n);
#else
  (void)n;
#endif
}

/// Calls fn(i) for every i in [begin, end), statically split across threads. An exception cannot
/// cross an OpenMP region: the first one fn throws (std::bad_alloc from a task's buffers, say) is
/// kept, the iterations not yet started are skipped, and it is rethrown after the loop.
template <class F>
void parallel_for(Index begin, Index end, F&& fn) {
#ifdef _OPENMP
  if (end - begin > 1 && omp_get_max_threads() > 1 && !omp_in_parallel()) {
    std::exception_ptr error;
    std::atomic<bool> failed{false};
#pragma omp parallel for schedule(static)
    for (Index i = begin; i < end; ++i) {
      if (failed.load(std::memory_order_relaxed))
        continue;
      try {
        fn(i);
      } catch (...) {
#pragma omp critical(ssmkit_parallel_for_error)
        if (!error)
          error = std::current_exception();
        failed.store(true, std::memory_order_relaxed);
      }
    }
    if (error)
      std::rethrow_exception(error);
    return;
  }
#endif
  for (Index i = begin; i < end; ++i)
    fn(i);
}

}  // namespace ssmkit
