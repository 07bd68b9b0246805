#include "backoff.h"

namespace sockpit {

Backoff::Backoff(uint32_t baseMs, uint32_t capMs)
    : base_(baseMs == 0 ? 1 : baseMs), cap_(capMs < baseMs ? baseMs : capMs), attempts_(0) {}

uint32_t Backoff::ceiling() const {
  uint32_t c = base_;
  for (uint32_t i = 0; i < attempts_ && c < cap_; ++i) {
    c = (c > cap_ / 2) ? cap_ : c * 2;  // doubling without overflow
  }
  return c > cap_ ? cap_ : c;
}

uint32_t Backoff::next(uint32_t random) {
  const uint32_t c = ceiling();
  if (attempts_ < 64) ++attempts_;  // enough to stay at the cap, never wraps
  const uint32_t half = c / 2;
  return half + random % (c - half + 1);
}

}  // namespace sockpit
