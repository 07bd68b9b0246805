#include "resend_buffer.h"

#include <string.h>

namespace sockpit {

ResendBuffer::ResendBuffer() : head_(0), count_(0) {}

bool ResendBuffer::push(const char* id, const char* json, char* droppedId, bool* dropped) {
  if (dropped) *dropped = false;
  const size_t idLen = strlen(id);
  const size_t jsonLen = strlen(json);
  if (idLen >= kIdMax || jsonLen >= kJsonMax) return false;

  if (count_ == kSlots) {
    if (droppedId) memcpy(droppedId, slots_[head_].id, kIdMax);
    if (dropped) *dropped = true;
    head_ = index(1);
    --count_;
  }
  Entry& e = slots_[index(count_)];
  memcpy(e.id, id, idLen + 1);
  memcpy(e.json, json, jsonLen + 1);
  e.sent = false;
  ++count_;
  return true;
}

bool ResendBuffer::remove(const char* id) {
  for (size_t i = 0; i < count_; ++i) {
    if (strcmp(slots_[index(i)].id, id) != 0) continue;
    // Confirmations normally arrive oldest first, so this is usually i == 0
    // and nothing moves; otherwise close the gap.
    if (i == 0) {
      head_ = index(1);
    } else {
      for (size_t j = i; j + 1 < count_; ++j) slots_[index(j)] = slots_[index(j + 1)];
    }
    --count_;
    return true;
  }
  return false;
}

void ResendBuffer::markAllUnsent() {
  for (size_t i = 0; i < count_; ++i) slots_[index(i)].sent = false;
}

ResendBuffer::Entry* ResendBuffer::nextUnsent() {
  for (size_t i = 0; i < count_; ++i) {
    Entry& e = slots_[index(i)];
    if (!e.sent) return &e;
  }
  return 0;
}

size_t ResendBuffer::unsentCount() const {
  size_t n = 0;
  for (size_t i = 0; i < count_; ++i) n += slots_[index(i)].sent ? 0 : 1;
  return n;
}

}  // namespace sockpit
