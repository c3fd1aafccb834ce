#include "MallocCounter.h"
#include <stddef.h>

// Under AddressSanitizer or ThreadSanitizer the sanitizer's runtime owns
// malloc: the dynamic loader calls an interposer defined here before the
// runtime initializes, and the process dies at start. There the interposer
// compiles out and the counter reports itself inactive, so the allocation
// tests skip.
#if defined(__has_feature)
#  if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#    define NORMKIT_SANITIZED 1
#  endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#  define NORMKIT_SANITIZED 1
#endif

static __thread long allocations;

#ifndef NORMKIT_SANITIZED
// glibc's own allocator entry points; the definitions below interpose the
// public names for the whole process and forward to these.
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);

void *malloc(size_t size) {
    allocations += 1;
    return __libc_malloc(size);
}

void *calloc(size_t count, size_t size) {
    allocations += 1;
    return __libc_calloc(count, size);
}

void *realloc(void *pointer, size_t size) {
    allocations += 1;
    return __libc_realloc(pointer, size);
}

int normkit_allocation_counter_active(void) { return 1; }
#else
int normkit_allocation_counter_active(void) { return 0; }
#endif

long normkit_thread_allocation_count(void) { return allocations; }
