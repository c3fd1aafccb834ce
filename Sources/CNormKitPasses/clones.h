// NORMKIT_CLONES: compile a function twice (x86-64-v3 and baseline x86-64,
// target_clones) and let the loader pick one for the process; empty elsewhere.
// Included by passes.c and reduced.c (not a public header).
#ifndef NORMKIT_CLONES_H
#define NORMKIT_CLONES_H

// ThreadSanitizer's runtime is not up when the loader runs the clones' resolver
// (an ifunc), and an instrumented resolver crashes the process at start: a
// ThreadSanitizer build runs the baseline code, which computes the same bits.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define NORMKIT_NO_CLONES 1
#endif
#endif

#if defined(__x86_64__) && defined(__linux__) && !defined(NORMKIT_NO_CLONES)
#define NORMKIT_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define NORMKIT_CLONES
#endif

#endif
