// Open MPI for NormKitMPI. Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT,
// MPI_SUM, MPI_IN_PLACE, ...) are macros that Swift cannot import, so each is
// wrapped in a static inline function here, as are the process's one-time
// initialization and its finalization at exit.
#ifndef NORMKIT_CMPI_SHIM_H
#define NORMKIT_CMPI_SHIM_H

#include <mpi.h>
#include <stdlib.h>

static inline MPI_Comm normkit_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype normkit_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype normkit_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype normkit_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Op normkit_mpi_sum(void) { return MPI_SUM; }
static inline void *normkit_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline int normkit_mpi_success(void) { return MPI_SUCCESS; }
static inline MPI_Status *normkit_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }

static void normkit_mpi_finalize_at_exit(void) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
}

// Initializes MPI with MPI_THREAD_SERIALIZED (NormKit calls MPI from one
// thread at a time, never from its worker threads) unless the application
// already did, and registers MPI_Finalize for exit when it initialized.
// Returns MPI's error code; *provided receives the thread level MPI granted.
static inline int normkit_mpi_initialize(int *provided) {
    int initialized = 0;
    int status = MPI_Initialized(&initialized);
    if (status != MPI_SUCCESS) return status;
    if (initialized) return MPI_Query_thread(provided);
    status = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, provided);
    if (status == MPI_SUCCESS) atexit(normkit_mpi_finalize_at_exit);
    return status;
}

static inline int normkit_mpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }

#endif
