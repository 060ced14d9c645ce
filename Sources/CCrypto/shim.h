#ifndef FEDBATCH_CCRYPTO_SHIM_H
#define FEDBATCH_CCRYPTO_SHIM_H
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#endif
