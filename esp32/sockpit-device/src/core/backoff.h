// Exponential backoff with jitter for reconnect attempts.
#pragma once

#include <stdint.h>

namespace sockpit {

class Backoff {
 public:
  Backoff(uint32_t baseMs = 1000, uint32_t capMs = 30000);

  // Delay before the next attempt. The ceiling doubles with each failure,
  // from baseMs up to capMs; the delay is half the ceiling plus a random
  // part of the other half ("equal jitter"), so a fleet that lost the server
  // at the same moment does not come back in lockstep, yet the wait still
  // grows. Never more than capMs.
  uint32_t next(uint32_t random);

  // Call once a connection has proven good.
  void reset() { attempts_ = 0; }

  uint32_t attempts() const { return attempts_; }
  // Current ceiling (what next() may return at most).
  uint32_t ceiling() const;

 private:
  uint32_t base_;
  uint32_t cap_;
  uint32_t attempts_;
};

}  // namespace sockpit
