// Stand-in for the host harness (see fake_board.h).
#pragma once
#define ESP_IDF_VERSION_MAJOR FAKE_IDF_MAJOR
