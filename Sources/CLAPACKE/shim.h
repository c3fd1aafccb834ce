// LAPACKE, the C interface to LAPACK. Debian's libopenblas exports no LAPACKE_
// symbols, so this module links liblapacke itself.
#include <lapacke.h>
