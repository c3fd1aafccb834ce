// OpenBLAS's CBLAS interface (cblas_* and openblas_* symbols).
#include <cblas.h>
