/* SPDX-License-Identifier: MIT */
/* UNDER_TSAN is defined in a ThreadSanitizer build. ThreadSanitizer cannot
 * follow a child that starts threads after a fork of a threaded process
 * (OpenBLAS starts its own there), so the tests that fork skip there. */
#ifndef ATTN_TESTS_TSAN_H
#define ATTN_TESTS_TSAN_H

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

#endif
