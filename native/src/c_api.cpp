// The C API over rd::Engine and rd::Session: handles, status codes, the thread's last error.
#include <ATen/ATen.h>

#include <cstring>
#include <mutex>
#include <new>
#include <set>
#include <string>

#include "engine.h"
#include "errors.h"
#include "rd_engine/rd_engine.h"
#include "session.h"

#ifndef RD_ENGINE_VERSION
#define RD_ENGINE_VERSION "0.0.0"
#endif

struct rd_engine {
  std::shared_ptr<rd::Engine> engine;
};

struct rd_session {
  std::unique_ptr<rd::Session> session;
  std::shared_ptr<rd::Engine> engine;  // keeps the engine loaded while the session lives
};

namespace {

thread_local std::string last_error;

// Live handles: a closed or foreign handle is an error code, never a use after free.
std::mutex handles_mutex;
std::set<const void*> live_handles;

void track(const void* h) {
  std::lock_guard<std::mutex> lock(handles_mutex);
  live_handles.insert(h);
}

bool untrack(const void* h) {
  std::lock_guard<std::mutex> lock(handles_mutex);
  return live_handles.erase(h) > 0;
}

bool is_live(const void* h) {
  std::lock_guard<std::mutex> lock(handles_mutex);
  return h != nullptr && live_handles.count(h) > 0;
}

rd_status set_error(rd_status code, const std::string& message) {
  last_error = message;
  return code;
}

// Runs `body`, turning every exception into a status and the thread's message.
template <typename F>
rd_status guarded(F&& body) {
  last_error.clear();
  try {
    body();
    return RD_OK;
  } catch (const rd::Error& e) {
    return set_error(e.code(), e.what());
  } catch (const std::bad_alloc&) {
    return set_error(RD_ERR_RUNTIME, "out of memory");
  } catch (const std::exception& e) {
    std::string what = e.what();
    return set_error(RD_ERR_RUNTIME, what.substr(0, what.find('\n')));
  } catch (...) {
    return set_error(RD_ERR_RUNTIME, "unknown error");
  }
}

void require(bool ok, const std::string& message) {
  if (!ok) rd::fail(RD_ERR_INVALID_ARGUMENT, message);
}

}  // namespace

extern "C" {

const char* rd_last_error(void) { return last_error.c_str(); }

const char* rd_status_name(rd_status status) {
  switch (status) {
    case RD_OK: return "RD_OK";
    case RD_ERR_INVALID_ARGUMENT: return "RD_ERR_INVALID_ARGUMENT";
    case RD_ERR_INVALID_HANDLE: return "RD_ERR_INVALID_HANDLE";
    case RD_ERR_ENGINE: return "RD_ERR_ENGINE";
    case RD_ERR_PROFILE: return "RD_ERR_PROFILE";
    case RD_ERR_STATE: return "RD_ERR_STATE";
    case RD_ERR_RUNTIME: return "RD_ERR_RUNTIME";
  }
  return "RD_ERR_UNKNOWN";
}

const char* rd_version(void) { return RD_ENGINE_VERSION; }

void rd_engine_options_init(rd_engine_options_t* o) {
  if (!o) return;
  std::memset(o, 0, sizeof(*o));
  o->struct_size = sizeof(*o);
  o->device = "cpu";
  o->verify_files = 1;
  o->backend = "aoti";
}

void rd_session_options_init(rd_session_options_t* o) {
  if (!o) return;
  std::memset(o, 0, sizeof(*o));
  o->struct_size = sizeof(*o);
  o->preset = "fast";
  o->res = -1;
  o->seed = -1;
}

rd_status rd_engine_open(const char* folder, const rd_engine_options_t* options, rd_engine_t** engine) {
  return guarded([&] {
    require(engine != nullptr, "rd_engine_open: engine (the result pointer) is NULL");
    *engine = nullptr;
    require(folder != nullptr, "rd_engine_open: folder is NULL");
    rd::EngineOptions o;
    if (options) {
      require(options->struct_size == sizeof(rd_engine_options_t),
              "rd_engine_open: options were not initialized with rd_engine_options_init");
      if (options->device) o.device = options->device;
      if (options->expected_weights_hash) o.expected_weights_hash = options->expected_weights_hash;
      o.verify_files = options->verify_files != 0;
      if (options->backend) o.backend = options->backend;
    }
    auto handle = std::make_unique<rd_engine>();
    handle->engine = rd::Engine::open(folder, o);
    *engine = handle.release();
    track(*engine);
  });
}

rd_status rd_engine_close(rd_engine_t* engine) {
  return guarded([&] {
    if (!untrack(engine)) rd::fail(RD_ERR_INVALID_HANDLE, "rd_engine_close: not an open engine handle");
    delete engine;
  });
}

rd_status rd_session_open(rd_engine_t* engine, const rd_session_options_t* options, rd_session_t** session) {
  return guarded([&] {
    require(session != nullptr, "rd_session_open: session (the result pointer) is NULL");
    *session = nullptr;
    if (!is_live(engine)) rd::fail(RD_ERR_INVALID_HANDLE, "rd_session_open: not an open engine handle");
    rd::SessionOptions o;
    if (options) {
      require(options->struct_size == sizeof(rd_session_options_t),
              "rd_session_open: options were not initialized with rd_session_options_init");
      if (options->preset) o.preset = options->preset;
      require(options->lag >= 0, "lag must be >= 0, got " + std::to_string(options->lag));
      o.lag = options->lag;
      require(options->res >= -1, "res must be >= 0 (0 keeps the input size), got " + std::to_string(options->res));
      o.res = options->res;
      require(options->num_dilations >= 0 && options->num_dilations <= 8,
              "num_dilations must be in 0..8, got " + std::to_string(options->num_dilations));
      o.dilations.assign(options->dilations, options->dilations + options->num_dilations);
      require(options->seed >= -1, "seed must be >= 0 (or -1: random), got " + std::to_string(options->seed));
      o.seed = options->seed;
      o.restore_input_size = options->restore_input_size != 0;
    }
    auto handle = std::make_unique<rd_session>();
    handle->engine = engine->engine;
    handle->session = std::make_unique<rd::Session>(engine->engine, o);
    *session = handle.release();
    track(*session);
  });
}

rd_status rd_session_push(rd_session_t* session, const uint8_t* rgb, int32_t width, int32_t height,
                          int64_t row_stride, double timestamp, int32_t* finished) {
  return guarded([&] {
    if (finished) *finished = 0;
    if (!is_live(session)) rd::fail(RD_ERR_INVALID_HANDLE, "rd_session_push: not an open session handle");
    require(rgb != nullptr, "rd_session_push: rgb is NULL");
    require(width > 0 && height > 0, "rd_session_push: frame size must be positive, got " + std::to_string(width) +
                                         "x" + std::to_string(height));
    require(row_stride >= 3LL * width, "rd_session_push: row_stride " + std::to_string(row_stride) +
                                           " is smaller than 3 * width = " + std::to_string(3LL * width));
    const at::Tensor frame =
        at::from_blob(const_cast<uint8_t*>(rgb), {height, width, 3}, {row_stride, 3, 1}, at::TensorOptions(at::kByte));
    const int n = session->session->push(frame, timestamp);
    if (finished) *finished = n;
  });
}

rd_status rd_session_flush(rd_session_t* session, int32_t* finished) {
  return guarded([&] {
    if (finished) *finished = 0;
    if (!is_live(session)) rd::fail(RD_ERR_INVALID_HANDLE, "rd_session_flush: not an open session handle");
    const int n = session->session->flush();
    if (finished) *finished = n;
  });
}

rd_status rd_session_output_size(const rd_session_t* session, int32_t* width, int32_t* height) {
  return guarded([&] {
    if (!is_live(session)) rd::fail(RD_ERR_INVALID_HANDLE, "rd_session_output_size: not an open session handle");
    require(width != nullptr && height != nullptr, "rd_session_output_size: width or height is NULL");
    const auto [w, h] = session->session->output_size();
    *width = w;
    *height = h;
  });
}

rd_status rd_session_poll(rd_session_t* session, float* depth, size_t capacity, rd_frame_info_t* info,
                          int32_t* available) {
  return guarded([&] {
    if (available) *available = 0;
    if (!is_live(session)) rd::fail(RD_ERR_INVALID_HANDLE, "rd_session_poll: not an open session handle");
    require(available != nullptr, "rd_session_poll: available is NULL");
    require(depth != nullptr, "rd_session_poll: depth is NULL");
    if (!session->session->started()) return;  // nothing pushed yet: nothing to poll
    const auto [w, h] = session->session->output_size();
    const size_t need = static_cast<size_t>(w) * static_cast<size_t>(h);
    require(capacity >= need, "rd_session_poll: the buffer holds " + std::to_string(capacity) +
                                  " floats; a frame needs " + std::to_string(need) + " (" + std::to_string(w) + "x" +
                                  std::to_string(h) + ")");
    auto frame = session->session->poll();
    if (!frame) return;
    std::memcpy(depth, frame->depth.data_ptr<float>(), need * sizeof(float));
    if (info) {
      info->index = frame->index;
      info->timestamp = frame->timestamp;
      info->latency_s = frame->latency;
      info->width = w;
      info->height = h;
    }
    *available = 1;
  });
}

rd_status rd_session_seed(const rd_session_t* session, int64_t* seed) {
  return guarded([&] {
    if (!is_live(session)) rd::fail(RD_ERR_INVALID_HANDLE, "rd_session_seed: not an open session handle");
    require(seed != nullptr, "rd_session_seed: seed is NULL");
    *seed = session->session->seed();
  });
}

rd_status rd_session_timing(const rd_session_t* session, rd_session_timing_t* timing) {
  return guarded([&] {
    if (!is_live(session)) rd::fail(RD_ERR_INVALID_HANDLE, "rd_session_timing: not an open session handle");
    require(timing != nullptr, "rd_session_timing: timing is NULL");
    const rd::Timing& t = session->session->timing();
    *timing = {t.preprocess, t.encode, t.denoise, t.decode, t.align, t.total, t.frames};
  });
}

rd_status rd_session_close(rd_session_t* session) {
  return guarded([&] {
    if (!untrack(session)) rd::fail(RD_ERR_INVALID_HANDLE, "rd_session_close: not an open session handle");
    delete session;
  });
}

}  // extern "C"
