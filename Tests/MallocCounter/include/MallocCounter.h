// Counts the heap allocations of the calling thread, by interposing malloc,
// calloc and realloc (forwarded to glibc's __libc_* entry points). Linked into
// the test binary only, to prove that NormKit's allocation-free entry points
// allocate nothing. Compiled out under AddressSanitizer and ThreadSanitizer,
// whose runtimes own malloc.
#pragma once

/// The number of malloc, calloc and realloc calls this thread has made since
/// the process started (or since the counter was read as a baseline).
long normkit_thread_allocation_count(void);

/// The largest number of bytes one malloc, calloc or realloc call of this
/// thread asked for since the last call of this function (which resets it).
long normkit_thread_largest_allocation(void);

/// The number of malloc, calloc and realloc calls made on NormKit's worker
/// threads (named "normkit-worker"), all of them together, since the process
/// started.
long normkit_worker_allocation_count(void);

/// Names the calling thread (pthread_setname_np), for the test that the
/// worker counter counts.
void normkit_counter_name_this_thread(const char *name);

/// 1 when the interposer is linked in and counting; 0 under a sanitizer.
int normkit_allocation_counter_active(void);
