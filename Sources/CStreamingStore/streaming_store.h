#ifndef NORMKIT_STREAMING_STORE_H
#define NORMKIT_STREAMING_STORE_H

/* Non-temporal ("streaming") stores, which Swift cannot express: the compiler
   emits them from clang's __builtin_nontemporal_store (MOVNTDQ on x86-64, STNP
   on AArch64). Swift inlines these static functions into its own loops. */

typedef long long normkit_bytes16 __attribute__((vector_size(16)));

/* Stores the 16 bytes at `source` to `destination`, which must be 16-byte
   aligned, bypassing the caches. */
static inline void normkit_stream_store16(void *destination, const void *source) {
    normkit_bytes16 value;
    __builtin_memcpy(&value, source, 16);
    __builtin_nontemporal_store(value, (normkit_bytes16 *)destination);
}

/* Orders the streaming stores before every later store (SFENCE on x86-64). */
static inline void normkit_stream_fence(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_sfence();
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

#endif
