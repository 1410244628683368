// One live stream on a shared engine: push frames, get the frames that finished.
// Mirrors rd_engine.online.session.StreamSession (the Python implementation is the reference).
#pragma once

#include <ATen/Tensor.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "aligner.h"
#include "engine.h"
#include "metric.h"

namespace rd {

struct SessionOptions {
  std::string preset = "fast";
  int lag = 0;
  int res = -1;                // -1: the preset's; 0: the input size
  std::vector<int> dilations;  // empty: the preset's
  int64_t seed = -1;         // -1: random
  bool restore_input_size = false;
  int snippet_len = 3;
  int init_steps = 1;
  int vae_batch = 4;
  // optional: finished frames go here (on the pushing thread) instead of the poll queue
  std::function<void(const FinishedFrame&)> on_frame;
};

// The preset's (res, dilations), as rd_engine.settings.PRESETS (RD_ERR_INVALID_ARGUMENT for an unknown name).
std::pair<int, std::vector<int>> preset_values(const std::string& name);

// The snippets' frames ending at frame `end`: one tuple per dilation whose first frame is >= 0.
std::vector<std::pair<int, std::vector<int64_t>>> snippets_ending_at(int64_t end, const std::vector<int>& dilations,
                                                                   int snippet_len);

// Seconds spent per stage since the session opened (on CUDA, asynchronous GPU work is counted by the
// stage that waits for it).
struct Timing {
  double preprocess = 0, encode = 0, denoise = 0, decode = 0, align = 0, total = 0;
  int64_t frames = 0;
};

// Threads: push, flush and cut from one thread at a time (the C API serializes them); poll, started,
// output_size and request_cancel from any thread, concurrently with them.
class Session {
 public:
  Session(std::shared_ptr<Engine> engine, SessionOptions options);

  // uint8 RGB [H, W, 3] (any strides, CPU or the engine's device); returns the number of frames that
  // finished. A failure after the stream's state began to change marks the session broken.
  // `anchors`: optional sparse metric depth of the frame, checked (input-frame pixels, metres).
  int push(const at::Tensor& rgb, double timestamp, int64_t timestamp_ns, const OnlineMetric::Points* anchors = nullptr);
  int flush();
  // A cut (rd_session_cut, CUT_CONTRACT): finish the current shot as flush would, start a fresh one.
  int cut();
  std::optional<FinishedFrame> poll();
  // Stop the running (or next) push, flush or cut at its next model call (RD_ERR_CANCELLED, broken).
  void request_cancel() { cancel_.store(true); }

  bool started() const { return out_w_.load() > 0; }
  Size output_size() const;
  int64_t seed() const { return seed_; }
  int64_t frames_pushed() const { return shot_start_ + n_; }
  bool broken() const { return !broken_.empty(); }
  const SessionOptions& options() const { return options_; }
  int lag() const { return options_.lag; }
  const std::vector<int>& dilations() const { return dilations_; }
  const Timing& timing() const { return timing_; }
  int resolution() const { return res_; }

 private:
  // Denoise, decode and align snippets (`padded`: the one snippet of a 1- or 2-frame stream, weight 1).
  void run(const std::vector<std::pair<int, std::vector<int64_t>>>& snippets, bool padded = false);
  void emit(std::vector<FinishedFrame> frames);
  int finish_shot();  // flush's work on the current shot
  void check_usable(const char* call) const;
  void check_cancel();
  template <typename F>
  auto mutating(F&& body) -> decltype(body());  // runs body; a failure marks the session broken

  std::shared_ptr<Engine> engine_;
  SessionOptions options_;
  int L_;
  int res_;
  std::vector<int> dilations_;  // distinct, sorted
  std::map<int, double> weights_;
  int64_t window_;
  OnlineAligner aligner_;
  std::vector<DdimStep> steps_;
  int64_t seed_;
  std::map<int64_t, at::Tensor> latents_;
  at::Tensor noise_;
  std::optional<Size> size_, input_size_;  // processed and input (width, height)
  Size padded_{0, 0};
  std::atomic<int> out_w_{0}, out_h_{0};  // the depth's size, readable while a push runs
  int64_t n_ = 0;           // frames pushed in the current shot
  int64_t shot_start_ = 0;  // stream index of the current shot's first frame
  bool closed_ = false;
  std::string broken_;  // why the session is broken (empty: it is not)
  std::atomic<bool> cancel_{false};
  mutable std::mutex ready_mutex_;
  std::deque<FinishedFrame> ready_;
  Timing timing_;
  std::optional<OnlineMetric> metric_;  // the shot's anchors and fit, from its first anchors on
};

}  // namespace rd
