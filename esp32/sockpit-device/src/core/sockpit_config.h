// The one place where the core's sizes are decided. Every translation unit
// (the sketch and every src/core/*.cpp) includes this header, so a size
// overridden in config.h is seen identically everywhere: otherwise the sketch
// and device_core.cpp could disagree on the layout of Device (see the
// "config.h" section of esp32/README.md).
#pragma once

// The sketch's config.h lives two folders up (sockpit-device/config.h). The
// Arduino IDE copies the whole sketch folder, src/ included, before building,
// and PlatformIO builds it in place, so this relative path holds in both. The
// host build (Makefile) sets SOCKPIT_HOST_BUILD: a developer's board config.h
// must not change what the host tests build.
#if !defined(SOCKPIT_HOST_BUILD) && defined(__has_include)
#if __has_include("../../config.h")
#include "../../config.h"
#endif
#endif

// Longest line taken from the server, without its ending: the server's own
// limit (docs/protocol.md). A longer line is skipped, never stored.
#ifndef SOCKPIT_MAX_LINE
#define SOCKPIT_MAX_LINE 16384
#endif

// Readings kept until the server confirms them ("stored").
#ifndef SOCKPIT_RESEND_SLOTS
#define SOCKPIT_RESEND_SLOTS 32
#endif

#if SOCKPIT_MAX_LINE < 1024 || SOCKPIT_MAX_LINE > 65536
#error "SOCKPIT_MAX_LINE must be between 1024 and 65536 (the server sends lines up to 16384 bytes)"
#endif
#if SOCKPIT_RESEND_SLOTS < 1 || SOCKPIT_RESEND_SLOTS > 1024
#error "SOCKPIT_RESEND_SLOTS must be between 1 and 1024"
#endif
