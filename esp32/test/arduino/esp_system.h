// Stand-in for the host harness (see fake_board.h). ESP-IDF 4.4 declares
// esp_random() here too; ESP-IDF 5 only in esp_random.h.
#pragma once
#include "fake_board.h"
#if FAKE_IDF_MAJOR < 5
inline uint32_t esp_random() { return fake::board().random = fake::board().random * 1103515245u + 12345u; }
#endif
