// Stand-in for the host harness (see ../fake_board.h): on the include path of
// the ESP-IDF 5 (Arduino-ESP32 3.x) variants only, as the real header.
#pragma once
#include "../fake_board.h"
inline uint32_t esp_random() { return fake::board().random = fake::board().random * 1103515245u + 12345u; }
