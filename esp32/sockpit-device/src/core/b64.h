// Base64 (RFC 4648, standard alphabet, with padding), as the line protocol
// uses it (docs/protocol.md). Encoding goes through mbedtls, which both
// ESP-IDF and Debian provide; decoding is our own, because it runs in place
// over the received line (no second 12 KiB buffer) and mbedtls does not
// promise that its decoder may write over its input.
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

// Decodes base64 text into out, NUL-terminated, so cap must leave room for
// one byte more than the decoded data. Accepts exactly what the server
// accepts: groups of four alphabet characters, the last one possibly ending
// in "=" or "=="; no whitespace. False on anything else or when out is too
// small. out may be the same buffer as in (see b64DecodeInPlace).
bool b64Decode(const char* in, size_t n, char* out, size_t cap, size_t* outLen);

// Decodes the n characters at text over themselves: the bytes, then a NUL.
// The text is left undefined when it is not valid base64.
bool b64DecodeInPlace(char* text, size_t n, size_t* outLen);

}  // namespace sockpit
