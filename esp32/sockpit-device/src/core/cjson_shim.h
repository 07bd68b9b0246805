// Where cJSON lives depends on the platform: ESP-IDF (and so Arduino-ESP32)
// ships it as the "json" component with a flat "cJSON.h"; Debian's
// libcjson-dev installs <cjson/cJSON.h>.
#pragma once

#if defined(ESP_PLATFORM) || defined(ARDUINO)
#include "cJSON.h"
#elif defined(__has_include)
#if __has_include(<cjson/cJSON.h>)
#include <cjson/cJSON.h>
#else
#include <cJSON.h>
#endif
#else
#include <cjson/cJSON.h>
#endif
