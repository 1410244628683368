// The library's messages: to the rd_set_log_callback hook, or warnings and errors to stderr.
#pragma once

#include <cstdint>
#include <string>

#include "rd_engine/rd_engine.h"

namespace rd {

void log_message(int32_t level, const std::string& message);

}  // namespace rd
