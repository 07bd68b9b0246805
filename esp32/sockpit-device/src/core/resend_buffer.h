// Readings the server has not yet confirmed ("stored"), oldest first.
// Fixed size: when it is full the oldest reading makes room for the newest.
#pragma once

#include <stddef.h>

#include "sockpit_config.h"

namespace sockpit {

class ResendBuffer {
 public:
  static const size_t kSlots = SOCKPIT_RESEND_SLOTS;
  static const size_t kIdMax = 24;     // "<boot>-<seq>" is at most 21 chars
  static const size_t kJsonMax = 256;  // a telemetry message is ~150 bytes

  struct Entry {
    char id[kIdMax];
    char json[kJsonMax];
    bool sent;  // already written on the current connection
  };

  ResendBuffer();

  // Adds a message. If the buffer was full, the oldest entry is dropped and
  // its id copied to droppedId (kIdMax bytes) when that is not null.
  // Returns false (and changes nothing) if id or json does not fit a slot.
  bool push(const char* id, const char* json, char* droppedId, bool* dropped);

  // The server confirmed this id. False if it was not (or no longer) here.
  bool remove(const char* id);

  // After a reconnect nothing counts as sent any more.
  void markAllUnsent();

  // Oldest entry not yet sent on this connection, or null.
  Entry* nextUnsent();

  size_t size() const { return count_; }
  size_t unsentCount() const;
  bool empty() const { return count_ == 0; }
  const Entry& at(size_t i) const { return slots_[index(i)]; }  // 0 = oldest

 private:
  size_t index(size_t i) const { return (head_ + i) % kSlots; }

  Entry slots_[kSlots];
  size_t head_;
  size_t count_;
};

}  // namespace sockpit
