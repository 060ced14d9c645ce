#ifndef FEDBATCH_CARCHIVE_SHIM_H
#define FEDBATCH_CARCHIVE_SHIM_H
#include <archive.h>
#include <archive_entry.h>

// AE_IF* are macros of a cast expression, which Swift does not import.
static const unsigned int fb_AE_IFMT = 0170000;
static const unsigned int fb_AE_IFREG = 0100000;
static const unsigned int fb_AE_IFLNK = 0120000;
static const unsigned int fb_AE_IFDIR = 0040000;
#endif
