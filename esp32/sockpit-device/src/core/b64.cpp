#include "b64.h"

#include "mbedtls/base64.h"

namespace sockpit {

bool b64Encode(const void* in, size_t n, char* out, size_t cap, size_t* outLen) {
  size_t olen = 0;
  if (cap < b64EncodedLength(n) + 1) return false;
  if (mbedtls_base64_encode(reinterpret_cast<unsigned char*>(out), cap, &olen,
                            static_cast<const unsigned char*>(in), n) != 0) {
    return false;
  }
  out[olen] = '\0';
  if (outLen) *outLen = olen;
  return true;
}

bool b64Decode(const char* in, size_t n, char* out, size_t cap, size_t* outLen) {
  size_t olen = 0;
  if (cap == 0) return false;
  if (mbedtls_base64_decode(reinterpret_cast<unsigned char*>(out), cap - 1, &olen,
                            reinterpret_cast<const unsigned char*>(in), n) != 0) {
    return false;
  }
  out[olen] = '\0';
  if (outLen) *outLen = olen;
  return true;
}

}  // namespace sockpit
