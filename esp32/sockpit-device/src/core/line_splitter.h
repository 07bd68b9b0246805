// Splits a TCP byte stream into '\n'-terminated lines using one fixed buffer.
#pragma once

#include <stddef.h>

namespace sockpit {

class LineSplitter {
 public:
  enum Event { NeedMore, Line, TooLong };

  // buf must hold maxLine + 2 bytes: room for the '\r' of a "\r\n" ending and
  // for the NUL that terminates complete lines.
  LineSplitter(char* buf, size_t maxLine);

  // Consumes bytes until one line is complete or the input runs out, and
  // advances *data / *len past what it used. Call again while *len > 0.
  //   Line     - line()/lineLength() hold the line, without "\n" or "\r\n".
  //   TooLong  - a line of more than maxLine bytes (its ending not counted);
  //              the rest of it is skipped, so a bad peer can never grow memory.
  //   NeedMore - everything was consumed, no complete line yet.
  // Empty lines are skipped silently.
  Event feed(const char** data, size_t* len);

  // The line is the caller's to change (say, to decode it in place) until
  // the next feed().
  char* line() const { return buf_; }
  size_t lineLength() const { return lineLen_; }

  // Forget any partial line (call on every new connection).
  void reset();

 private:
  char* buf_;
  size_t max_;
  size_t used_;
  size_t lineLen_;
  bool skipping_;
};

}  // namespace sockpit
