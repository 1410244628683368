// Online co-alignment and merge: decoded snippets in, finished frames out (model-free).
// Mirrors rd_engine.online.aligner.OnlineAligner and the robust solver pieces it uses
// (rd_engine.coalign.robust.solve_one / solve_robust, rd_engine.coalign.merge.robust_mean,
// kernels.scale_shift.solve_scale_shift). See docs/method.md for the method.
#pragma once

#include <ATen/Tensor.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "metric.h"

namespace rd {

using Clock = std::chrono::steady_clock;

// [..., L, H, W] -> [..., L, P]: border of 2 pixels cropped, every 10th pixel kept in each direction.
at::Tensor solver_copy(const at::Tensor& depth);

// Batched closed-form 2x2 weighted least squares (fp64) from moments [K, 5] = [S0, Sx, Sy, Sxx, Sxy]:
// scales and shifts [K] (fp32 for fp32 moments), with the project's guards for singular systems.
std::pair<at::Tensor, at::Tensor> solve_scale_shift(const at::Tensor& moments, const at::Tensor& prior_scale,
                                                    const at::Tensor& prior_shift, double rcond,
                                                    const at::Tensor& fallback_scale);

// Weighted moments [K, 5] of x, y, w [K, L, P] (fp32 sums).
at::Tensor weighted_moments(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w);

// Robust (Cauchy IRLS) scale and shift of one snippet x [L, P] to targets y with weights w, with the
// symmetric (reduced major axis) final slope.
std::pair<double, double> solve_one(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w, int iters = 4);

struct Group {  // snippets of one dilation: solver copies [K, L, P], frame positions [K, L]
  int dilation;
  double weight;
  at::Tensor indices;
  at::Tensor depth;
};

// Robust generalized Procrustes from `init` (per group: scales, shifts), as solve_robust with init.
std::vector<std::pair<at::Tensor, at::Tensor>> solve_robust(const std::vector<Group>& groups, int64_t n, int iters,
                                                            int fine_iters,
                                                            std::vector<std::pair<at::Tensor, at::Tensor>> init);

struct FinishedFrame {
  int64_t index;
  double timestamp;      // seconds, as pushed (or timestamp_ns * 1e-9)
  int64_t timestamp_ns;  // as pushed, exactly (or round(timestamp * 1e9))
  at::Tensor depth;      // [H, W] float32 on the CPU, contiguous
  double latency;        // seconds from push to finished
  bool starts_shot = false;
  at::Tensor confidence;  // [H, W] float32 in [0, 1] on the CPU (rd_engine.online.aligner._confidence)
  // metric depth (Session, from the shot's anchors): the fit current when the frame finished, if any
  std::optional<MetricFit> fit;
  at::Tensor depth_m;     // [H, W] float32 metres, NaN where invalid; undefined without a fit
  int64_t anchors = 0;    // anchors pushed with this frame
};

class OnlineAligner {
 public:
  OnlineAligner(int snippet_len, int lag);

  void note_frame(int64_t index, double timestamp, int64_t timestamp_ns, Clock::time_point pushed);
  // Align one decoded snippet (depth [L, H, W]) and add it to its unfinished frames.
  void add(int dilation, const std::vector<int64_t>& frames, const at::Tensor& depth, double weight = 1.0);
  // Finish the frames whose lag has passed (all covered frames when `upto` is empty: the flush).
  std::vector<FinishedFrame> finish(std::optional<int64_t> upto, int64_t max_window);

 private:
  struct Snippet {
    int dilation;
    std::vector<int64_t> frames;
    at::Tensor x;  // [L, P] solver copy; released once all its frames are finished
    double s, t, weight;
    int open = 0;
  };
  struct Entry {
    std::shared_ptr<Snippet> sn;
    int j;
    at::Tensor depth;  // [H, W]
  };

  at::Tensor consensus(int64_t f) const;
  std::pair<double, double> solve(const at::Tensor& x, const std::vector<int64_t>& frames) const;
  void solve_window();
  at::Tensor merge(const std::vector<Entry>& ents, const at::Tensor& consensus) const;
  static at::Tensor confidence(const std::vector<Entry>& ents, const at::Tensor& depth);

  int L_, lag_;
  std::map<int64_t, std::vector<Entry>> entries_;  // unfinished frame -> entries
  std::map<int64_t, at::Tensor> frozen_;           // finished frames' solver copies [P]
  int64_t next_to_finish_ = 0;
  std::shared_ptr<Snippet> first_;
  struct Meta {
    double timestamp;
    int64_t timestamp_ns;
    Clock::time_point pushed;
  };
  std::map<int64_t, Meta> meta_;
};

}  // namespace rd
