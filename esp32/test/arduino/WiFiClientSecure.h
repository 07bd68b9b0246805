// Stand-in for the host harness (see fake_board.h).
#pragma once
#include "fake_board.h"
