#ifndef FEDBATCH_CZSTD_SHIM_H
#define FEDBATCH_CZSTD_SHIM_H

#include <zstd.h>
#include <zstd_errors.h>
#endif
