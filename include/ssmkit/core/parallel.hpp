// A parallel-for over an index range: OpenMP when the including translation unit is built with
// it (the ssmkit::ssmkit target adds it when found), a serial loop otherwise.
#pragma once

#include "ssmkit/core/tensor_view.hpp"

#ifdef _OPENMP
#include <omp.h>
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

/// Calls fn(i) for every i in [begin, end), statically split across threads. fn must not throw
/// (an exception cannot cross an OpenMP region): validate before the loop.
template <class F>
void parallel_for(Index begin, Index end, F&& fn) {
#ifdef _OPENMP
  if (end - begin > 1 && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel for schedule(static)
    for (Index i = begin; i < end; ++i)
      fn(i);
    return;
  }
#endif
  for (Index i = begin; i < end; ++i)
    fn(i);
}

}  // namespace ssmkit
