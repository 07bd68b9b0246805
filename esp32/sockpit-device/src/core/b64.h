// Base64 on top of mbedtls, which both ESP-IDF and Debian provide.
// (Named b64 so it cannot be confused with Arduino-ESP32's own base64.h.)
#pragma once

#include <stddef.h>

namespace sockpit {

// Characters needed for the base64 text of n bytes (without the NUL).
inline size_t b64EncodedLength(size_t n) { return 4 * ((n + 2) / 3); }

// Largest number of bytes that n characters of base64 can decode to.
inline size_t b64DecodedMax(size_t n) { return 3 * ((n + 3) / 4); }

// Encodes n bytes into out as NUL-terminated text. False if out is too small.
bool b64Encode(const void* in, size_t n, char* out, size_t cap, size_t* outLen);

// Decodes base64 text. False on characters outside the alphabet, bad
// padding, or an out buffer that is too small. out is NUL-terminated, so
// cap must leave room for one byte more than the decoded data.
bool b64Decode(const char* in, size_t n, char* out, size_t cap, size_t* outLen);

}  // namespace sockpit
