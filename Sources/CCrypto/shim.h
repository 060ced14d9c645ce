#ifndef FEDBATCH_CCRYPTO_SHIM_H
#define FEDBATCH_CCRYPTO_SHIM_H
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/rsa.h>
#include <openssl/param_build.h>

// EVP_PKEY_PUBLIC_KEY is a macro built from other macros, which Swift
// does not import.
static inline int fedbatch_evp_pkey_public_key(void) { return EVP_PKEY_PUBLIC_KEY; }
#endif
