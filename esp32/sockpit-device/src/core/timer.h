// Wrap-safe timing with a 32-bit millisecond clock (millis() wraps after
// 49.7 days).
#pragma once

#include <stdint.h>

namespace sockpit {

// Time passed since `then`, correct across one wrap of the clock.
inline uint32_t elapsedMs(uint32_t now, uint32_t then) { return now - then; }

// "waitMs after start": due once that much time has passed. Comparing the
// elapsed time (unsigned subtraction) rather than a stored end time keeps it
// right across a wrap; and once due, due() pins the start so that the elapsed
// time never grows past waitMs. A timer that is checked every loop therefore
// stays due however long it is left waiting (a Wi-Fi outage of 60 days, say),
// where a stored end time would come round to look 25 days in the future.
class Timer {
 public:
  Timer() : start_(0), wait_(0) {}

  void start(uint32_t now, uint32_t waitMs) {
    start_ = now;
    wait_ = waitMs;
  }

  // Checks, and refreshes a due timer; call it on every loop, whatever else
  // the caller waits for.
  bool due(uint32_t now) {
    if (elapsedMs(now, start_) < wait_) return false;
    start_ = now - wait_;
    return true;
  }

  uint32_t waitMs() const { return wait_; }

  // Milliseconds left (0 when due). Only meaningful if due() runs regularly.
  uint32_t remaining(uint32_t now) const {
    const uint32_t e = elapsedMs(now, start_);
    return e >= wait_ ? 0 : wait_ - e;
  }

 private:
  uint32_t start_;
  uint32_t wait_;
};

}  // namespace sockpit
