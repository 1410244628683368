// The C API over rd::Engine and rd::Session: typed handles, status codes, the thread's last error,
// struct_size-versioned structs.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/headeronly/version.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>

#include "engine.h"
#include "errors.h"
#include "log.h"
#include "rd_engine/rd_engine.h"
#include "session.h"

#ifdef RD_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif
#ifdef RD_HAVE_TENSORRT
#include "runner.h"
#endif

#ifndef RD_ENGINE_VERSION
#define RD_ENGINE_VERSION "0.0.0"
#endif

namespace {

struct EngineHandle {
  std::shared_ptr<rd::Engine> engine;
};

// One stream. `op` serializes push, flush, cut, reset; `session` is swapped by reset under `ptr`, so
// poll, output_size and cancel never wait for a running push.
struct SessionHandle {
  std::shared_ptr<rd::Engine> engine;  // keeps the engine loaded while the session lives
  rd::SessionOptions options;          // for reset (the seed fixed to the first draw)
  std::mutex op;
  mutable std::mutex ptr;
  std::shared_ptr<rd::Session> session;

  std::shared_ptr<rd::Session> current() const {
    std::lock_guard<std::mutex> lock(ptr);
    return session;
  }
};

// Handles are opaque tokens, never the objects' addresses: a counter shared by both types (so a token
// is never reused), shifted, with the type in the low bits. A lookup copies the shared_ptr under the
// registry's lock, so a concurrent close never frees an object another call is using.
constexpr uintptr_t kEngineTag = 1, kSessionTag = 2, kTagBits = 2;
std::atomic<uintptr_t> next_token{1};

template <typename T, uintptr_t Tag>
class Registry {
 public:
  uintptr_t add(std::shared_ptr<T> object) {
    const uintptr_t token = (next_token.fetch_add(1) << kTagBits) | Tag;
    std::lock_guard<std::mutex> lock(mutex_);
    live_.emplace(token, std::move(object));
    return token;
  }
  std::shared_ptr<T> get(const void* handle) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = live_.find(reinterpret_cast<uintptr_t>(handle));
    return it == live_.end() ? nullptr : it->second;
  }
  std::shared_ptr<T> remove(const void* handle) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = live_.find(reinterpret_cast<uintptr_t>(handle));
    if (it == live_.end()) return nullptr;
    auto object = std::move(it->second);
    live_.erase(it);
    return object;
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<uintptr_t, std::shared_ptr<T>> live_;
};

Registry<EngineHandle, kEngineTag>& engines() {
  static auto* r = new Registry<EngineHandle, kEngineTag>();  // never destroyed: usable from atexit handlers
  return *r;
}
Registry<SessionHandle, kSessionTag>& sessions() {
  static auto* r = new Registry<SessionHandle, kSessionTag>();
  return *r;
}

[[noreturn]] void bad_handle(const char* call, const void* h, bool want_engine) {
  const uintptr_t tag = reinterpret_cast<uintptr_t>(h) & ((uintptr_t{1} << kTagBits) - 1);
  std::string why = "not an open " + std::string(want_engine ? "engine" : "session") + " handle";
  if (h == nullptr) why += " (NULL)";
  else if (want_engine && tag == kSessionTag && sessions().get(h)) why += " (a session handle was passed)";
  else if (!want_engine && tag == kEngineTag && engines().get(h)) why += " (an engine handle was passed)";
  else why += " (closed, or never returned by this library)";
  rd::fail(RD_ERR_INVALID_HANDLE, std::string(call) + ": " + why);
}

std::shared_ptr<EngineHandle> engine_of(const char* call, const void* h) {
  auto e = engines().get(h);
  if (!e) bad_handle(call, h, true);
  return e;
}

std::shared_ptr<SessionHandle> session_of(const char* call, const void* h) {
  auto s = sessions().get(h);
  if (!s) bad_handle(call, h, false);
  return s;
}

thread_local std::string last_error;

std::mutex log_mutex;
rd_log_callback log_callback = nullptr;
void* log_user = nullptr;

rd_status set_error(rd_status code, const std::string& message) {
  last_error = message;
  return code;
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

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
    return set_error(RD_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (const c10::OutOfMemoryError& e) {
    return set_error(RD_ERR_OUT_OF_MEMORY, "out of memory: " + first_line(e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    return set_error(RD_ERR_RUNTIME, first_line(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return set_error(RD_ERR_RUNTIME, first_line(e.what()));
  } catch (...) {
    return set_error(RD_ERR_RUNTIME, "unknown error");
  }
}

void require(bool ok, const std::string& message) {
  if (!ok) rd::fail(RD_ERR_INVALID_ARGUMENT, message);
}

// A struct_size-led input struct as far as its struct_size covers, the rest from `init`.
template <typename T>
T read_struct(const T* in, void (*init)(T*, uint32_t), size_t min_size, const char* call, const char* type) {
  T out;
  init(&out, sizeof(T));
  if (!in) return out;
  const size_t size = in->struct_size;
  if (size == 0)
    rd::fail(RD_ERR_INVALID_ARGUMENT, std::string(call) + ": " + type + " was not initialized (struct_size 0): use its " +
                                          "init function");
  if (size > sizeof(T))
    rd::fail(RD_ERR_VERSION, std::string(call) + ": " + type + ".struct_size is " + std::to_string(size) +
                                 " bytes; this library (ABI " + std::to_string(RD_ENGINE_ABI_MAJOR) + "." +
                                 std::to_string(RD_ENGINE_ABI_MINOR) + ") knows " + std::to_string(sizeof(T)) +
                                 ": the caller was built against a newer rd_engine.h");
  if (size < min_size)
    rd::fail(RD_ERR_VERSION, std::string(call) + ": " + type + ".struct_size is " + std::to_string(size) +
                                 " (at least " + std::to_string(min_size) + "): initialize it with the " + type +
                                 " init function");
  std::memcpy(static_cast<void*>(&out), in, size);
  out.struct_size = sizeof(T);
  return out;
}

// The first size of each struct (ABI 2.0 adds fields to the ABI 1 options, whose sizes stay accepted).
constexpr size_t kEngineOptionsV1 = offsetof(rd_engine_options_t, intra_op_threads);
constexpr size_t kSessionOptionsV1 = offsetof(rd_session_options_t, on_frame);
constexpr size_t kFrameInputV2 = offsetof(rd_frame_input_t, anchors);
constexpr size_t kFrameMin = offsetof(rd_frame_t, index);  // struct_size and starts_shot

rd_frame_t to_c(const rd::FinishedFrame& f) {
  rd_frame_t out;
  rd_frame_init(&out);
  out.starts_shot = f.starts_shot ? 1 : 0;
  out.index = f.index;
  out.timestamp_ns = f.timestamp_ns;
  out.timestamp = f.timestamp;
  out.latency_s = f.latency;
  out.width = static_cast<int32_t>(f.depth.size(1));
  out.height = static_cast<int32_t>(f.depth.size(0));
  out.has_metric = f.fit ? 1 : 0;
  out.anchors = f.anchors;
  if (f.fit) {
    out.metric_samples = f.fit->samples;
    out.metric_inliers = f.fit->inliers;
    out.metric_scale = f.fit->scale;
    out.metric_shift = f.fit->shift;
    out.metric_sigma = f.fit->sigma;
  }
  return out;
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

// One frame's anchors as checked points in input-frame pixels (rd_engine.io.anchors.check_points,
// points_from_image and Anchors.check), or none; every problem is a one-line RD_ERR_INVALID_ARGUMENT.
std::optional<rd::OnlineMetric::Points> anchor_points(const rd_anchors_t& a, int32_t w, int32_t h) {
  const std::string where = "rd_session_push_frame: anchors: ";
  rd::OnlineMetric::Points p;
  if (a.kind == RD_ANCHORS_NONE) return std::nullopt;
  if (a.kind == RD_ANCHORS_POINTS) {
    require(a.count >= 0, where + "count must be >= 0, got " + std::to_string(a.count));
    if (a.count == 0) return std::nullopt;
    require(a.x && a.y && a.depth, where + "x, y and depth must be arrays of count = " + std::to_string(a.count) +
                                       " floats (" + (a.x ? "" : "x ") + (a.y ? "" : "y ") +
                                       (a.depth ? "" : "depth ") + "NULL)");
    const size_t n = static_cast<size_t>(a.count);
    const std::pair<const char*, const float*> arrays[] = {{"x", a.x}, {"y", a.y}, {"depth", a.depth}};
    for (const auto& [name, values] : arrays)
      for (size_t i = 0; i < n; ++i)
        require(std::isfinite(values[i]), where + name + "[" + std::to_string(i) + "] is " + number(values[i]) +
                                              " (NaN and Inf are refused: leave invalid samples out)");
    for (size_t i = 0; i < n; ++i)
      require(a.depth[i] > 0, where + "depth[" + std::to_string(i) + "] is " + number(a.depth[i]) +
                                  ": depth must be > 0 metres");
    for (size_t i = 0; i < n; ++i) {
      const double x = a.x[i], y = a.y[i];
      require(x >= -0.5 && x <= w - 0.5 && y >= -0.5 && y <= h - 0.5,
              where + "point " + std::to_string(i) + " (" + number(x) + ", " + number(y) + ") lies outside the " +
                  std::to_string(w) + "x" + std::to_string(h) + " input frame (pixel centres at integers)");
    }
    p.x.assign(a.x, a.x + n);
    p.y.assign(a.y, a.y + n);
    p.z.assign(a.depth, a.depth + n);
    return p;
  }
  if (a.kind != RD_ANCHORS_IMAGE_U16_MM && a.kind != RD_ANCHORS_IMAGE_F32_M)
    rd::fail(RD_ERR_INVALID_ARGUMENT, where + "kind must be RD_ANCHORS_NONE, _POINTS, _IMAGE_U16_MM or _IMAGE_F32_M, got " +
                                          std::to_string(a.kind));
  const bool mm = a.kind == RD_ANCHORS_IMAGE_U16_MM;
  require(a.width == w && a.height == h, where + "the sparse depth image is " + std::to_string(a.width) + "x" +
                                             std::to_string(a.height) + "; it must have the frame's size " +
                                             std::to_string(w) + "x" + std::to_string(h));
  require(a.image != nullptr, where + "image is NULL");
  const int64_t elem = mm ? 2 : 4;
  const int64_t stride = a.row_stride ? a.row_stride : elem * w;
  require(stride >= elem * w, where + "row_stride " + std::to_string(stride) + " is smaller than " +
                                  std::to_string(elem) + " * width = " + std::to_string(elem * w));
  const auto* base = static_cast<const unsigned char*>(a.image);
  for (int32_t v = 0; v < h; ++v) {
    const unsigned char* row = base + static_cast<int64_t>(v) * stride;
    for (int32_t u = 0; u < w; ++u) {
      double metres;
      if (mm) {
        uint16_t raw;
        std::memcpy(&raw, row + 2 * static_cast<int64_t>(u), sizeof(raw));  // rows need not be aligned
        metres = raw / 1000.0;
      } else {
        float raw;
        std::memcpy(&raw, row + 4 * static_cast<int64_t>(u), sizeof(raw));
        metres = std::isfinite(raw) ? static_cast<double>(raw) : 0.0;  // NaN: no sample (ROS 32FC1)
        require(metres >= 0, where + "negative depth " + number(metres) + " at pixel (" + std::to_string(u) + ", " +
                                 std::to_string(v) + ") of the sparse depth image (0 = no sample)");
      }
      if (metres > 0) {
        p.x.push_back(u);
        p.y.push_back(v);
        p.z.push_back(metres);
      }
    }
  }
  if (p.z.empty()) return std::nullopt;
  return p;
}

int64_t seconds_to_ns(double s) {
  const double ns = std::round(s * 1e9);
  return std::isfinite(ns) && std::fabs(ns) < 9.2e18 ? static_cast<int64_t>(ns) : 0;
}

rd::SessionOptions session_options(const rd_session_options_t& in) {
  rd::SessionOptions o;
  if (in.preset) o.preset = in.preset;
  require(in.lag >= 0, "lag must be >= 0, got " + std::to_string(in.lag));
  o.lag = in.lag;
  require(in.res >= -1, "res must be >= 0 (0 keeps the input size), got " + std::to_string(in.res));
  o.res = in.res;
  require(in.num_dilations >= 0 && in.num_dilations <= 8,
          "num_dilations must be in 0..8, got " + std::to_string(in.num_dilations));
  o.dilations.assign(in.dilations, in.dilations + in.num_dilations);
  require(in.seed >= -1, "seed must be >= 0 (or -1: random), got " + std::to_string(in.seed));
  o.seed = in.seed;
  o.restore_input_size = in.restore_input_size != 0;
  if (in.on_frame) {
    const rd_frame_callback cb = in.on_frame;
    void* user = in.on_frame_user;
    o.on_frame = [cb, user](const rd::FinishedFrame& f) {
      rd_frame_t frame = to_c(f);
      frame.depth_m = f.depth_m.defined() ? f.depth_m.data_ptr<float>() : nullptr;
      frame.confidence = f.confidence.data_ptr<float>();
      cb(f.depth.data_ptr<float>(), &frame, user);
    };
  }
  return o;
}

int push_tensor(SessionHandle& h, const at::Tensor& frame, double seconds, int64_t ns,
                const rd::OnlineMetric::Points* anchors = nullptr) {
  std::lock_guard<std::mutex> lock(h.op);
  return h.current()->push(frame, seconds, ns, anchors);
}

}  // namespace

namespace {

// An output frame struct's size, checked before a frame is taken from the queue.
void check_frame_size(const char* call, const rd_frame_t* out) {
  if (!out) return;
  if (out->struct_size > sizeof(rd_frame_t))
    rd::fail(RD_ERR_VERSION, std::string(call) + ": rd_frame_t.struct_size is " + std::to_string(out->struct_size) +
                                 " bytes; this library knows " + std::to_string(sizeof(rd_frame_t)) +
                                 ": the caller was built against a newer rd_engine.h");
  if (out->struct_size < kFrameMin)
    rd::fail(RD_ERR_VERSION, std::string(call) + ": rd_frame_t.struct_size is " + std::to_string(out->struct_size) +
                                 ": initialize it with rd_frame_init");
}

// Shared by the polls: the oldest finished frame into `depth` (and `depth_m`, `confidence`; NULL: not
// wanted, `depth` too where `optional_depth`), or none.
std::optional<rd::FinishedFrame> poll_into(const char* call, rd_session_t* session, float* depth, size_t capacity,
                                           int32_t* available, float* depth_m = nullptr, float* confidence = nullptr,
                                           bool optional_depth = false) {
  if (available) *available = 0;
  auto h = session_of(call, session);
  require(available != nullptr, std::string(call) + ": available is NULL");
  require(optional_depth || depth != nullptr, std::string(call) + ": depth is NULL");
  auto s = h->current();
  if (!s->started()) return std::nullopt;  // nothing pushed yet: nothing to poll
  const auto [w, hh] = s->output_size();
  const size_t need = static_cast<size_t>(w) * static_cast<size_t>(hh);
  require((!depth && !depth_m && !confidence) || capacity >= need, std::string(call) + ": the buffer holds " + std::to_string(capacity) +
                                " floats; a frame needs " + std::to_string(need) + " (" + std::to_string(w) + "x" +
                                std::to_string(hh) + ")");
  auto frame = s->poll();
  if (!frame) return std::nullopt;
  if (depth) std::memcpy(depth, frame->depth.data_ptr<float>(), need * sizeof(float));
  if (depth_m) {
    if (frame->depth_m.defined()) {
      std::memcpy(depth_m, frame->depth_m.data_ptr<float>(), need * sizeof(float));
    } else {
      std::fill(depth_m, depth_m + need, std::numeric_limits<float>::quiet_NaN());
    }
  }
  if (confidence) std::memcpy(confidence, frame->confidence.data_ptr<float>(), need * sizeof(float));
  *available = 1;
  return frame;
}

}  // namespace

namespace rd {

void log_message(int32_t level, const std::string& message) {
  rd_log_callback cb;
  void* user;
  {
    std::lock_guard<std::mutex> lock(log_mutex);
    cb = log_callback;
    user = log_user;
  }
  if (cb) {
    cb(level, message.c_str(), user);
  } else if (level >= RD_LOG_WARNING) {
    std::fprintf(stderr, "rd_engine: %s\n", message.c_str());
  }
}

}  // namespace rd

namespace {

// Defaults for the first `size` bytes of a struct (clamped to what this library knows).
template <typename T>
void init_sized(T* o, uint32_t size, void (*defaults)(T*)) {
  if (!o || size < sizeof(uint32_t)) return;
  T full;
  std::memset(static_cast<void*>(&full), 0, sizeof(full));
  defaults(&full);
  const size_t n = std::min<size_t>(size, sizeof(T));
  std::memcpy(static_cast<void*>(o), &full, n);
  o->struct_size = static_cast<uint32_t>(n);
}

void engine_defaults(rd_engine_options_t* o) {
  o->device = "cpu";
  o->verify_files = 1;
  o->backend = "aoti";
}

void session_defaults(rd_session_options_t* o) {
  o->preset = "fast";
  o->res = -1;
  o->seed = -1;
}

void frame_input_defaults(rd_frame_input_t* f) { f->memory = RD_MEMORY_HOST; }
void frame_defaults(rd_frame_t*) {}
void anchors_defaults(rd_anchors_t* a) { a->kind = RD_ANCHORS_NONE; }

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
    case RD_ERR_OUT_OF_MEMORY: return "RD_ERR_OUT_OF_MEMORY";
    case RD_ERR_UNSUPPORTED: return "RD_ERR_UNSUPPORTED";
    case RD_ERR_DEVICE: return "RD_ERR_DEVICE";
    case RD_ERR_IO: return "RD_ERR_IO";
    case RD_ERR_SESSION_BROKEN: return "RD_ERR_SESSION_BROKEN";
    case RD_ERR_CANCELLED: return "RD_ERR_CANCELLED";
    case RD_ERR_VERSION: return "RD_ERR_VERSION";
  }
  return "RD_ERR_UNKNOWN";
}

const char* rd_version(void) { return RD_ENGINE_VERSION; }

uint32_t rd_abi_version(void) { return RD_ENGINE_ABI_VERSION; }

const char* rd_build_info(void) {
  static const std::string info = [] {
    std::string cuda = "no", trt = "no", san = "no";
#ifdef RD_WITH_CUDA
    cuda = std::to_string(CUDART_VERSION / 1000) + "." + std::to_string((CUDART_VERSION % 1000) / 10);
#endif
#ifdef RD_HAVE_TENSORRT
    trt = rd::tensorrt_version();
#endif
#if defined(__SANITIZE_ADDRESS__)
    san = "address";
#elif defined(__SANITIZE_THREAD__)
    san = "thread";
#endif
    return std::string("rd_engine ") + RD_ENGINE_VERSION + " abi " + std::to_string(RD_ENGINE_ABI_MAJOR) + "." +
           std::to_string(RD_ENGINE_ABI_MINOR) + " torch " + TORCH_VERSION + " cuda " + cuda + " tensorrt " + trt +
           " sanitizers " + san;
  }();
  return info.c_str();
}

void rd_set_log_callback(rd_log_callback callback, void* user) {
  std::lock_guard<std::mutex> lock(log_mutex);
  log_callback = callback;
  log_user = user;
}

void rd_engine_options_init_sized(rd_engine_options_t* o, uint32_t size) { init_sized(o, size, engine_defaults); }
void rd_session_options_init_sized(rd_session_options_t* o, uint32_t size) { init_sized(o, size, session_defaults); }
void rd_frame_input_init_sized(rd_frame_input_t* f, uint32_t size) { init_sized(f, size, frame_input_defaults); }
void rd_frame_init_sized(rd_frame_t* f, uint32_t size) { init_sized(f, size, frame_defaults); }
void rd_anchors_init_sized(rd_anchors_t* a, uint32_t size) { init_sized(a, size, anchors_defaults); }
void(rd_engine_options_init)(rd_engine_options_t* o) { init_sized(o, kEngineOptionsV1, engine_defaults); }
void(rd_session_options_init)(rd_session_options_t* o) { init_sized(o, kSessionOptionsV1, session_defaults); }

rd_status rd_engine_open(const char* folder, const rd_engine_options_t* options, rd_engine_t** engine) {
  return guarded([&] {
    require(engine != nullptr, "rd_engine_open: engine (the result pointer) is NULL");
    *engine = nullptr;
    require(folder != nullptr, "rd_engine_open: folder is NULL");
    const rd_engine_options_t in =
        read_struct(options, rd_engine_options_init_sized, kEngineOptionsV1, "rd_engine_open", "rd_engine_options_t");
    rd::EngineOptions o;
    if (in.device) o.device = in.device;
    if (in.expected_weights_hash) o.expected_weights_hash = in.expected_weights_hash;
    o.verify_files = in.verify_files != 0;
    if (in.backend) o.backend = in.backend;
    require(in.intra_op_threads >= 0, "intra_op_threads must be >= 0, got " + std::to_string(in.intra_op_threads));
    if (in.intra_op_threads > 0) at::set_num_threads(in.intra_op_threads);
    auto handle = std::make_shared<EngineHandle>();
    handle->engine = rd::Engine::open(folder, o);
    *engine = reinterpret_cast<rd_engine_t*>(engines().add(std::move(handle)));
  });
}

rd_status rd_engine_warmup(rd_engine_t* engine, int32_t width, int32_t height) {
  return guarded([&] {
    auto e = engine_of("rd_engine_warmup", engine);
    require(width > 0 && height > 0, "rd_engine_warmup: size must be positive, got " + std::to_string(width) + "x" +
                                         std::to_string(height));
    e->engine->warmup({width, height});
  });
}

rd_status rd_engine_close(rd_engine_t* engine) {
  return guarded([&] {
    if (!engines().remove(engine)) bad_handle("rd_engine_close", engine, true);
  });
}

rd_status rd_session_open(rd_engine_t* engine, const rd_session_options_t* options, rd_session_t** session) {
  return guarded([&] {
    require(session != nullptr, "rd_session_open: session (the result pointer) is NULL");
    *session = nullptr;
    auto e = engine_of("rd_session_open", engine);  // holds the engine even if it is closed meanwhile
    const rd_session_options_t in =
        read_struct(options, rd_session_options_init_sized, kSessionOptionsV1, "rd_session_open", "rd_session_options_t");
    auto handle = std::make_shared<SessionHandle>();
    handle->engine = e->engine;
    handle->options = session_options(in);
    handle->session = std::make_shared<rd::Session>(e->engine, handle->options);
    handle->options.seed = handle->session->seed();  // reset repeats the same draw
    *session = reinterpret_cast<rd_session_t*>(sessions().add(std::move(handle)));
  });
}

rd_status rd_session_push(rd_session_t* session, const uint8_t* rgb, int32_t width, int32_t height,
                          int64_t row_stride, double timestamp, int32_t* finished) {
  return guarded([&] {
    if (finished) *finished = 0;
    auto h = session_of("rd_session_push", session);
    require(rgb != nullptr, "rd_session_push: rgb is NULL");
    require(width > 0 && height > 0, "rd_session_push: frame size must be positive, got " + std::to_string(width) +
                                         "x" + std::to_string(height));
    require(row_stride >= 3LL * width, "rd_session_push: row_stride " + std::to_string(row_stride) +
                                           " is smaller than 3 * width = " + std::to_string(3LL * width));
    const at::Tensor frame =
        at::from_blob(const_cast<uint8_t*>(rgb), {height, width, 3}, {row_stride, 3, 1}, at::TensorOptions(at::kByte));
    const int n = push_tensor(*h, frame, timestamp, seconds_to_ns(timestamp));
    if (finished) *finished = n;
  });
}

rd_status rd_session_push_frame(rd_session_t* session, const rd_frame_input_t* input, int32_t* finished) {
  return guarded([&] {
    if (finished) *finished = 0;
    auto h = session_of("rd_session_push_frame", session);
    require(input != nullptr, "rd_session_push_frame: frame is NULL");
    const rd_frame_input_t f =
        read_struct(input, rd_frame_input_init_sized, kFrameInputV2, "rd_session_push_frame", "rd_frame_input_t");
    require(f.rgb != nullptr, "rd_session_push_frame: frame->rgb is NULL");
    require(f.width > 0 && f.height > 0, "rd_session_push_frame: frame size must be positive, got " +
                                             std::to_string(f.width) + "x" + std::to_string(f.height));
    const int64_t stride = f.row_stride ? f.row_stride : 3LL * f.width;
    require(stride >= 3LL * f.width, "rd_session_push_frame: row_stride " + std::to_string(stride) +
                                         " is smaller than 3 * width = " + std::to_string(3LL * f.width));
    const double seconds = static_cast<double>(f.timestamp_ns) * 1e-9;
    // anchors are checked before the frame is pushed: refused ones leave the session as it was
    std::optional<rd::OnlineMetric::Points> points;
    if (f.anchors) {
      const rd_anchors_t a = read_struct(f.anchors, rd_anchors_init_sized, sizeof(rd_anchors_t),
                                         "rd_session_push_frame", "rd_anchors_t");
      points = anchor_points(a, f.width, f.height);
    }
    const rd::OnlineMetric::Points* anchors = points ? &*points : nullptr;
    int n = 0;
    if (f.memory == RD_MEMORY_HOST) {
      const at::Tensor frame = at::from_blob(const_cast<uint8_t*>(f.rgb), {f.height, f.width, 3}, {stride, 3, 1},
                                             at::TensorOptions(at::kByte));
      n = push_tensor(*h, frame, seconds, f.timestamp_ns, anchors);
    } else if (f.memory == RD_MEMORY_CUDA) {
      const c10::Device device = h->engine->device();
      if (!device.is_cuda())
        rd::fail(RD_ERR_UNSUPPORTED, "rd_session_push_frame: device-memory input needs an engine opened on a CUDA "
                                     "device (this one runs on " + device.str() + ")");
#ifdef RD_WITH_CUDA
      const c10::cuda::CUDAGuard guard(device);
      // the caller's stream: our work on the frame is ordered after the caller's writes
      const c10::cuda::CUDAStream stream =
          f.cuda_stream ? c10::cuda::getStreamFromExternal(static_cast<cudaStream_t>(f.cuda_stream), device.index())
                        : c10::cuda::getDefaultCUDAStream(device.index());
      const c10::cuda::CUDAStreamGuard stream_guard(stream);
      const at::Tensor frame = at::from_blob(const_cast<uint8_t*>(f.rgb), {f.height, f.width, 3}, {stride, 3, 1},
                                             at::TensorOptions(at::kByte).device(device));
      n = push_tensor(*h, frame, seconds, f.timestamp_ns, anchors);
      stream.synchronize();  // the caller may reuse the buffer when this returns
#else
      rd::fail(RD_ERR_UNSUPPORTED, "rd_session_push_frame: this runtime was built without CUDA");
#endif
    } else {
      rd::fail(RD_ERR_INVALID_ARGUMENT, "rd_session_push_frame: memory must be RD_MEMORY_HOST or RD_MEMORY_CUDA, got " +
                                            std::to_string(f.memory));
    }
    if (finished) *finished = n;
  });
}

rd_status rd_session_flush(rd_session_t* session, int32_t* finished) {
  return guarded([&] {
    if (finished) *finished = 0;
    auto h = session_of("rd_session_flush", session);
    std::lock_guard<std::mutex> lock(h->op);
    const int n = h->current()->flush();
    if (finished) *finished = n;
  });
}

rd_status rd_session_cut(rd_session_t* session, int32_t* finished) {
  return guarded([&] {
    if (finished) *finished = 0;
    auto h = session_of("rd_session_cut", session);
    std::lock_guard<std::mutex> lock(h->op);
    const int n = h->current()->cut();
    if (finished) *finished = n;
  });
}

rd_status rd_session_reset(rd_session_t* session) {
  return guarded([&] {
    auto h = session_of("rd_session_reset", session);
    std::lock_guard<std::mutex> lock(h->op);
    auto fresh = std::make_shared<rd::Session>(h->engine, h->options);
    std::lock_guard<std::mutex> swap(h->ptr);
    h->session = std::move(fresh);
  });
}

rd_status rd_session_cancel(rd_session_t* session) {
  return guarded([&] { session_of("rd_session_cancel", session)->current()->request_cancel(); });
}

rd_status rd_session_output_size(const rd_session_t* session, int32_t* width, int32_t* height) {
  return guarded([&] {
    auto h = session_of("rd_session_output_size", session);
    require(width != nullptr && height != nullptr, "rd_session_output_size: width or height is NULL");
    const auto [w, hh] = h->current()->output_size();
    *width = w;
    *height = hh;
  });
}

rd_status rd_session_poll(rd_session_t* session, float* depth, size_t capacity, rd_frame_info_t* info,
                          int32_t* available) {
  return guarded([&] {
    auto frame = poll_into("rd_session_poll", session, depth, capacity, available);
    if (frame && info) {
      const rd_frame_t f = to_c(*frame);
      *info = {f.index, f.timestamp, f.latency_s, f.width, f.height};
    }
  });
}

rd_status rd_session_poll_frame(rd_session_t* session, float* depth, size_t capacity, rd_frame_t* out,
                                int32_t* available) {
  return guarded([&] {
    check_frame_size("rd_session_poll_frame", out);
    auto frame = poll_into("rd_session_poll_frame", session, depth, capacity, available);
    if (frame && out) {
      const uint32_t size = out->struct_size;
      const rd_frame_t f = to_c(*frame);
      std::memcpy(static_cast<void*>(out), &f, size);  // only the fields the caller's struct has
      out->struct_size = size;
    }
  });
}

rd_status rd_session_poll_outputs(rd_session_t* session, float* depth, float* depth_m, float* confidence,
                                  size_t capacity, rd_frame_t* out, int32_t* available) {
  return guarded([&] {
    check_frame_size("rd_session_poll_outputs", out);
    auto frame = poll_into("rd_session_poll_outputs", session, depth, capacity, available, depth_m, confidence, true);
    if (frame && out) {
      const uint32_t size = out->struct_size;
      rd_frame_t f = to_c(*frame);
      f.depth_m = depth_m;
      f.confidence = confidence;
      std::memcpy(static_cast<void*>(out), &f, size);
      out->struct_size = size;
    }
  });
}

rd_status rd_session_seed(const rd_session_t* session, int64_t* seed) {
  return guarded([&] {
    auto h = session_of("rd_session_seed", session);
    require(seed != nullptr, "rd_session_seed: seed is NULL");
    *seed = h->current()->seed();
  });
}

rd_status rd_session_timing(const rd_session_t* session, rd_session_timing_t* timing) {
  return guarded([&] {
    auto h = session_of("rd_session_timing", session);
    require(timing != nullptr, "rd_session_timing: timing is NULL");
    std::lock_guard<std::mutex> lock(h->op);  // the counters change during a push
    const rd::Timing& t = h->current()->timing();
    *timing = {t.preprocess, t.encode, t.denoise, t.decode, t.align, t.total, t.frames};
  });
}

rd_status rd_session_close(rd_session_t* session) {
  return guarded([&] {
    if (!sessions().remove(session)) bad_handle("rd_session_close", session, false);
  });
}

}  // extern "C"
