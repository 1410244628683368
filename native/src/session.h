// One live stream on a shared engine: push frames, get the frames that finished.
// Mirrors rd_engine.online.session.StreamSession (the Python implementation is the reference).
#pragma once

#include <ATen/Tensor.h>

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "aligner.h"
#include "engine.h"

namespace rd {

struct SessionOptions {
  std::string preset = "fast";
  int lag = 0;
  int res = -1;                // -1: the preset's; 0: the input size
  std::vector<int> dilations;  // empty: the preset's
  long long seed = -1;         // -1: random
  bool restore_input_size = false;
  int snippet_len = 3;
  int init_steps = 1;
  int vae_batch = 4;
};

// The preset's (res, dilations), as rd_engine.settings.PRESETS (RD_ERR_INVALID_ARGUMENT for an unknown name).
std::pair<int, std::vector<int>> preset_values(const std::string& name);

// The snippets' frames ending at frame `end`: one tuple per dilation whose first frame is >= 0.
std::vector<std::pair<int, std::vector<long>>> snippets_ending_at(long end, const std::vector<int>& dilations,
                                                                   int snippet_len);

// Seconds spent per stage since the session opened (on CUDA, asynchronous GPU work is counted by the
// stage that waits for it).
struct Timing {
  double preprocess = 0, encode = 0, denoise = 0, decode = 0, align = 0, total = 0;
  long frames = 0;
};

class Session {
 public:
  Session(std::shared_ptr<Engine> engine, SessionOptions options);

  // uint8 RGB [H, W, 3] (any strides, CPU); returns the number of frames that finished.
  int push(const at::Tensor& rgb, double timestamp);
  int flush();
  std::optional<FinishedFrame> poll();

  bool started() const { return size_.has_value(); }
  Size output_size() const;
  long long seed() const { return seed_; }
  long frames_pushed() const { return n_; }
  int lag() const { return options_.lag; }
  const std::vector<int>& dilations() const { return dilations_; }
  const Timing& timing() const { return timing_; }
  int resolution() const { return res_; }

 private:
  // Denoise, decode and align snippets (`padded`: the one snippet of a 1- or 2-frame stream, weight 1).
  void run(const std::vector<std::pair<int, std::vector<long>>>& snippets, bool padded = false);
  void emit(std::vector<FinishedFrame> frames);

  std::shared_ptr<Engine> engine_;
  SessionOptions options_;
  int L_;
  int res_;
  std::vector<int> dilations_;  // distinct, sorted
  std::map<int, double> weights_;
  long window_;
  OnlineAligner aligner_;
  std::vector<DdimStep> steps_;
  long long seed_;
  std::map<long, at::Tensor> latents_;
  at::Tensor noise_;
  std::optional<Size> size_, input_hw_;
  Size padded_{0, 0};
  long n_ = 0;
  bool closed_ = false;
  std::deque<FinishedFrame> ready_;
  Timing timing_;
};

}  // namespace rd
