// Errors inside the runtime: one exception type carrying the C API's status code.
// The C API (c_api.cpp) turns every exception into a status and a message; nothing throws across it.
#pragma once

#include <stdexcept>
#include <string>

#include "rd_engine/rd_engine.h"

namespace rd {

class Error : public std::runtime_error {
 public:
  Error(rd_status code, const std::string& message) : std::runtime_error(message), code_(code) {}
  rd_status code() const noexcept { return code_; }

 private:
  rd_status code_;
};

[[noreturn]] inline void fail(rd_status code, const std::string& message) { throw Error(code, message); }

}  // namespace rd
