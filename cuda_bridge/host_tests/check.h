// The host self-checks' counting assertion: CHECK(cond, printf-format, ...) counts a check,
// prints the first 20 failures with their file and line, and check_summary() ends main: "OK <n>
// checks" and 0, or "FAILED <f> of <n> checks" and 1 (tests/test_cuda_layout.py reads it).
#pragma once

#include <cstdio>

static long g_checks = 0, g_fail = 0;

#define CHECK(cond, ...)                                 \
  do {                                                   \
    ++g_checks;                                          \
    if (!(cond)) {                                       \
      if (++g_fail <= 20) {                              \
        std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
        std::printf(__VA_ARGS__);                        \
        std::printf("\n");                               \
      }                                                  \
    }                                                    \
  } while (0)

static int check_summary() {
  if (g_fail) {
    std::printf("FAILED %ld of %ld checks\n", g_fail, g_checks);
    return 1;
  }
  std::printf("OK %ld checks\n", g_checks);
  return 0;
}
