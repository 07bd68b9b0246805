#include "line_splitter.h"

namespace sockpit {

LineSplitter::LineSplitter(char* buf, size_t maxLine)
    : buf_(buf), max_(maxLine), used_(0), lineLen_(0), skipping_(false) {
  buf_[0] = '\0';
}

void LineSplitter::reset() {
  used_ = 0;
  lineLen_ = 0;
  skipping_ = false;
  buf_[0] = '\0';
}

LineSplitter::Event LineSplitter::feed(const char** data, size_t* len) {
  while (*len > 0) {
    const char c = **data;
    ++*data;
    --*len;

    if (c == '\n') {
      if (skipping_) {  // end of an oversized line: back to normal
        skipping_ = false;
        used_ = 0;
        continue;
      }
      size_t n = used_;
      used_ = 0;
      if (n > 0 && buf_[n - 1] == '\r') --n;  // Arduino println() sends "\r\n"
      if (n == 0) continue;
      if (n > max_) return TooLong;  // only possible with the '\r' slack byte
      buf_[n] = '\0';
      lineLen_ = n;
      return Line;
    }

    if (skipping_) continue;
    if (used_ == max_ + 1) {  // one byte of slack for a '\r' before the '\n'
      skipping_ = true;
      used_ = 0;
      return TooLong;
    }
    buf_[used_++] = c;
  }
  return NeedMore;
}

}  // namespace sockpit
