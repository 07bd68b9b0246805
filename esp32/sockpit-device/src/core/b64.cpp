#include "b64.h"

#include <stdint.h>

#include "mbedtls/base64.h"

namespace sockpit {

namespace {

// 0..63 for the alphabet, 64 for '=', 255 for anything else.
uint8_t sextet(char c) {
  if (c >= 'A' && c <= 'Z') return static_cast<uint8_t>(c - 'A');
  if (c >= 'a' && c <= 'z') return static_cast<uint8_t>(c - 'a' + 26);
  if (c >= '0' && c <= '9') return static_cast<uint8_t>(c - '0' + 52);
  if (c == '+') return 62;
  if (c == '/') return 63;
  if (c == '=') return 64;
  return 255;
}

// Checks the whole text first, so nothing is written for bad input; then
// decodes front to back. Each group of 4 characters becomes at most 3 bytes
// written at or before the group's own position, so out may alias in.
bool decode(const char* in, size_t n, char* out, size_t cap, size_t* outLen) {
  if (n % 4 != 0) return false;
  size_t pad = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t v = sextet(in[i]);
    if (v == 255) return false;
    if (v == 64) {
      // '=' only in the last two places, and "x=" is not allowed after "=".
      if (i < n - 2) return false;
      ++pad;
    } else if (pad > 0) {
      return false;
    }
  }
  const size_t bytes = n / 4 * 3 - pad;
  if (cap < bytes + 1) return false;

  size_t o = 0;
  for (size_t i = 0; i < n; i += 4) {
    const uint32_t a = sextet(in[i]), b = sextet(in[i + 1]);
    const uint32_t c = sextet(in[i + 2]), d = sextet(in[i + 3]);
    const uint32_t v = a << 18 | b << 12 | (c & 63) << 6 | (d & 63);
    out[o++] = static_cast<char>(v >> 16);
    if (c != 64) out[o++] = static_cast<char>((v >> 8) & 0xff);
    if (d != 64) out[o++] = static_cast<char>(v & 0xff);
  }
  out[o] = '\0';
  if (outLen) *outLen = o;
  return true;
}

}  // namespace

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
  return decode(in, n, out, cap, outLen);
}

bool b64DecodeInPlace(char* text, size_t n, size_t* outLen) {
  // The decoded bytes and their NUL always fit in the n characters: a group
  // of 4 gives at most 3 bytes, and an empty text gives just the NUL, which
  // the caller's buffer holds (it holds a NUL-terminated line).
  return decode(text, n, text, n + 1, outLen);
}

}  // namespace sockpit
