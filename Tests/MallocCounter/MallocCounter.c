#define _GNU_SOURCE
#include "MallocCounter.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>

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
static __thread size_t largest;   // the largest request of this thread since the last reset

// Allocations on NormKit's worker threads (WorkerPool names them
// "normkit-worker"), summed over all of them. A thread's name is read at its
// first allocation, and again whenever it names itself (pthread_setname_np is
// interposed too, below), so allocations made before the name count as the
// thread's old kind.
static long worker_allocations;
static __thread int thread_kind;   // 0: not yet known, 1: a NormKit worker, 2: another thread

static void count_allocation(size_t bytes) {
    allocations += 1;
    if (bytes > largest) largest = bytes;
    if (thread_kind == 0) {
        char name[17] = {0};
        thread_kind = prctl(PR_GET_NAME, name) == 0 && strcmp(name, "normkit-worker") == 0 ? 1 : 2;
    }
    if (thread_kind == 1) __atomic_add_fetch(&worker_allocations, 1, __ATOMIC_RELAXED);
}

#ifndef NORMKIT_SANITIZED
// glibc's own allocator entry points; the definitions below interpose the
// public names for the whole process and forward to these.
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);

void *malloc(size_t size) {
    count_allocation(size);
    return __libc_malloc(size);
}

void *calloc(size_t count, size_t size) {
    count_allocation(count * size);
    return __libc_calloc(count, size);
}

void *realloc(void *pointer, size_t size) {
    count_allocation(size);
    return __libc_realloc(pointer, size);
}

// A thread that names itself is classified by its new name from then on.
int pthread_setname_np(pthread_t thread, const char *name) {
    static int (*next)(pthread_t, const char *);
    if (!next) next = (int (*)(pthread_t, const char *))dlsym(RTLD_NEXT, "pthread_setname_np");
    if (pthread_equal(thread, pthread_self())) {
        thread_kind = strcmp(name, "normkit-worker") == 0 ? 1 : 2;
    }
    return next ? next(thread, name) : -1;
}

int normkit_allocation_counter_active(void) { return 1; }
#else
int normkit_allocation_counter_active(void) { return 0; }
#endif

long normkit_thread_allocation_count(void) { return allocations; }

long normkit_thread_largest_allocation(void) {
    long result = (long)largest;
    largest = 0;
    return result;
}

long normkit_worker_allocation_count(void) {
    return __atomic_load_n(&worker_allocations, __ATOMIC_RELAXED);
}

void normkit_counter_name_this_thread(const char *name) {
    pthread_setname_np(pthread_self(), name);
}
