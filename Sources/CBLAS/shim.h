#ifndef FEDBATCH_CBLAS_SHIM_H
#define FEDBATCH_CBLAS_SHIM_H
// OpenBLAS's CBLAS interface; its cblas.h also declares openblas_* controls.
#include <cblas.h>
#endif
