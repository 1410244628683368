// A few assertion macros for the native tests (ctest runs each test case as its own process).
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#define RD_CHECK(cond)                                                                   \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
      std::exit(1);                                                                      \
    }                                                                                    \
  } while (0)

#define RD_CHECK_NEAR(a, b, tol)                                                              \
  do {                                                                                        \
    const double rd_a_ = (a), rd_b_ = (b);                                                    \
    if (!(std::fabs(rd_a_ - rd_b_) <= (tol))) {                                               \
      std::fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s = %.9g, %s = %.9g, tol %g\n", __FILE__, \
                   __LINE__, #a, rd_a_, #b, rd_b_, static_cast<double>(tol));                 \
      std::exit(1);                                                                           \
    }                                                                                         \
  } while (0)
