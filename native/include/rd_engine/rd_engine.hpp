// rd-engine C++ wrapper: RAII handles over the C API (rd_engine.h), errors as rd::Exception.
// Header-only and torch-free: the library's ABI stays the C one.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "rd_engine/rd_engine.h"

namespace rd {

class Exception : public std::runtime_error {
 public:
  Exception(rd_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  rd_status status() const noexcept { return status_; }

 private:
  rd_status status_;
};

inline void check(rd_status status) {
  if (status != RD_OK) throw Exception(status, std::string(rd_status_name(status)) + ": " + rd_last_error());
}

struct EngineConfig {
  std::string device = "cpu";
  std::string expected_weights_hash;
  bool verify_files = true;
  std::string backend = "aoti";  // or "tensorrt"
  int intra_op_threads = 0;      // > 0: libtorch's CPU threads (process-wide)
};

struct StreamConfig {
  std::string preset = "fast";
  int lag = 0;
  int res = -1;                 // -1: the preset's; 0: the input size
  std::vector<int> dilations;   // empty: the preset's
  int64_t seed = -1;            // -1: random
  bool restore_input_size = false;
};

// The metric fit a frame was converted with: 1 / depth_m = scale * depth + shift.
struct MetricFit {
  double scale = 0, shift = 0;  // 1 / metres
  int64_t samples = 0;          // anchors the fit saw
  int64_t inliers = 0;          // ... with a nonzero robust weight
  double sigma = 0;             // robust sigma of the inliers' relative depth error (0.01: 1 %)
};

struct Frame {
  int64_t index = 0;
  double timestamp = 0;
  int64_t timestamp_ns = 0;  // exactly as pushed with push_ns
  bool starts_shot = false;  // first frame of the stream or of a shot after cut()
  double latency_s = 0;
  int width = 0, height = 0;
  std::vector<float> depth;  // height * width, row-major
  // ABI 2.1: metric depth from the anchors pushed with push_ns (docs/native.md)
  bool has_metric = false;        // a fit existed when the frame finished; false: flagged, depth_m all NaN
  int64_t anchors = 0;            // anchors pushed with this frame
  MetricFit fit;                  // the fit depth_m came from (zeros without one)
  std::vector<float> depth_m;     // height * width metres along the optical axis, NaN where invalid
  std::vector<float> confidence;  // height * width in [0, 1]
};

// One frame's sparse metric depth for Stream::push_ns: views of the caller's arrays (kept by nobody after
// the push). Points in input-frame pixels (centres at integers) with depth in metres; or a sparse depth
// image of the frame's size, 0 = no sample, uint16 millimetres or float32 metres.
inline rd_anchors_t anchor_points(const float* x, const float* y, const float* depth, int64_t count) {
  rd_anchors_t a;
  rd_anchors_init(&a);
  a.kind = RD_ANCHORS_POINTS;
  a.count = count;
  a.x = x;
  a.y = y;
  a.depth = depth;
  return a;
}
inline rd_anchors_t anchor_image_mm(const uint16_t* image, int width, int height, int64_t row_stride = 0) {
  rd_anchors_t a;
  rd_anchors_init(&a);
  a.kind = RD_ANCHORS_IMAGE_U16_MM;
  a.image = image;
  a.width = width;
  a.height = height;
  a.row_stride = row_stride;
  return a;
}
inline rd_anchors_t anchor_image_m(const float* image, int width, int height, int64_t row_stride = 0) {
  rd_anchors_t a = anchor_image_mm(nullptr, width, height, row_stride);
  a.kind = RD_ANCHORS_IMAGE_F32_M;
  a.image = image;
  return a;
}

// A loaded engine folder; copies share it. Streams keep it loaded.
class EngineHandle {
 public:
  explicit EngineHandle(const std::string& folder, const EngineConfig& config = {}) {
    rd_engine_options_t o;
    rd_engine_options_init(&o);
    o.device = config.device.c_str();
    o.expected_weights_hash = config.expected_weights_hash.empty() ? nullptr : config.expected_weights_hash.c_str();
    o.verify_files = config.verify_files ? 1 : 0;
    o.backend = config.backend.c_str();
    o.intra_op_threads = config.intra_op_threads;
    rd_engine_t* e = nullptr;
    check(rd_engine_open(folder.c_str(), &o, &e));
    handle_.reset(e, [](rd_engine_t* p) { rd_engine_close(p); });
  }
  rd_engine_t* get() const { return handle_.get(); }
  // Run each model once at this processed size (before the first stream).
  void warmup(int width, int height) { check(rd_engine_warmup(handle_.get(), width, height)); }

 private:
  std::shared_ptr<rd_engine_t> handle_;
};

// One live stream (use it from one thread at a time).
class Stream {
 public:
  Stream(const EngineHandle& engine, const StreamConfig& config = {}) {
    if (config.dilations.size() > 8) throw Exception(RD_ERR_INVALID_ARGUMENT, "at most 8 dilations");
    rd_session_options_t o;
    rd_session_options_init(&o);
    o.preset = config.preset.c_str();
    o.lag = config.lag;
    o.res = config.res;
    o.num_dilations = static_cast<int32_t>(config.dilations.size());
    for (size_t i = 0; i < config.dilations.size(); ++i) o.dilations[i] = config.dilations[i];
    o.seed = config.seed;
    o.restore_input_size = config.restore_input_size ? 1 : 0;
    rd_session_t* s = nullptr;
    check(rd_session_open(engine.get(), &o, &s));
    handle_.reset(s);
  }

  // Push one RGB8 frame (row_stride 0: tightly packed); returns how many frames finished.
  int push(const uint8_t* rgb, int width, int height, double timestamp, int64_t row_stride = 0) {
    int32_t finished = 0;
    check(rd_session_push(handle_.get(), rgb, width, height, row_stride ? row_stride : 3LL * width, timestamp,
                          &finished));
    return finished;
  }

  // Push with an int64 stamp (e.g. ROS nanoseconds), returned exactly in Frame::timestamp_ns, and
  // optionally the frame's sparse metric anchors (anchor_points, anchor_image_mm, anchor_image_m).
  int push_ns(const uint8_t* rgb, int width, int height, int64_t timestamp_ns, int64_t row_stride = 0,
              const rd_anchors_t* anchors = nullptr) {
    rd_frame_input_t f;
    rd_frame_input_init(&f);
    f.rgb = rgb;
    f.width = width;
    f.height = height;
    f.row_stride = row_stride;
    f.timestamp_ns = timestamp_ns;
    f.anchors = anchors;
    int32_t finished = 0;
    check(rd_session_push_frame(handle_.get(), &f, &finished));
    return finished;
  }

  int flush() {
    int32_t finished = 0;
    check(rd_session_flush(handle_.get(), &finished));
    return finished;
  }

  // A shot boundary (before the first frame of the new shot); returns how many frames finished.
  int cut() {
    int32_t finished = 0;
    check(rd_session_cut(handle_.get(), &finished));
    return finished;
  }

  void reset() { check(rd_session_reset(handle_.get())); }
  void cancel() { check(rd_session_cancel(handle_.get())); }

  // The oldest finished frame not yet taken, or false when none waits.
  bool poll(Frame& frame) {
    int32_t w = 0, h = 0;
    if (rd_session_output_size(handle_.get(), &w, &h) == RD_ERR_STATE) return false;  // nothing pushed yet
    const size_t n = static_cast<size_t>(w) * static_cast<size_t>(h);
    frame.depth.resize(n);
    frame.depth_m.resize(n);
    frame.confidence.resize(n);
    rd_frame_t info;
    rd_frame_init(&info);
    int32_t available = 0;
    check(rd_session_poll_outputs(handle_.get(), frame.depth.data(), frame.depth_m.data(), frame.confidence.data(), n,
                                  &info, &available));
    if (!available) return false;
    frame.has_metric = info.has_metric != 0;
    frame.anchors = info.anchors;
    frame.fit = {info.metric_scale, info.metric_shift, info.metric_samples, info.metric_inliers, info.metric_sigma};
    frame.index = info.index;
    frame.timestamp = info.timestamp;
    frame.timestamp_ns = info.timestamp_ns;
    frame.starts_shot = info.starts_shot != 0;
    frame.latency_s = info.latency_s;
    frame.width = info.width;
    frame.height = info.height;
    return true;
  }

  // All finished frames waiting now (each frame's depth moved, not copied).
  std::vector<Frame> take() {
    std::vector<Frame> out;
    for (;;) {
      Frame f;
      if (!poll(f)) break;
      out.push_back(std::move(f));
    }
    return out;
  }

  int64_t seed() const {
    int64_t s = 0;
    check(rd_session_seed(handle_.get(), &s));
    return s;
  }

  // Seconds per stage so far (see rd_session_timing_t).
  rd_session_timing_t timing() const {
    rd_session_timing_t t{};
    check(rd_session_timing(handle_.get(), &t));
    return t;
  }

  rd_session_t* get() const { return handle_.get(); }

 private:
  struct Close {
    void operator()(rd_session_t* s) const { rd_session_close(s); }
  };
  std::unique_ptr<rd_session_t, Close> handle_;
};

}  // namespace rd
