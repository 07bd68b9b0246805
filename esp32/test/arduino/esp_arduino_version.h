// Stand-in for the host harness (see fake_board.h).
#pragma once
#define ESP_ARDUINO_VERSION_MAJOR FAKE_ARDUINO_MAJOR
