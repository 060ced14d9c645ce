#ifndef FEDBATCH_CZLIB_SHIM_H
#define FEDBATCH_CZLIB_SHIM_H
#include <zlib.h>
#endif
