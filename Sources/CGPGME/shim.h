#ifndef FEDBATCH_CGPGME_SHIM_H
#define FEDBATCH_CGPGME_SHIM_H
#include <gpgme.h>

// gpgme_check_version is a macro that also passes the header's version;
// Swift cannot call macros, so wrap it.
static inline const char *fb_gpgme_check_version(const char *required) {
    return gpgme_check_version(required);
}
// gpgme_err_code / gpgme_error are static inline helpers over libgpg-error's
// bit layout; wrap them so Swift need not know that layout.
static inline unsigned int fb_gpgme_err_code(gpgme_error_t err) {
    return gpgme_err_code(err);
}
static inline gpgme_error_t fb_gpgme_error(unsigned int code) {
    return gpgme_error((gpgme_err_code_t)code);
}
#endif
