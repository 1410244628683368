// Metric depth from sparse anchors: the robust affine in inverse depth `1 / z = scale * d + shift`, and its
// online update. Mirrors rd_engine.coalign.metric.fit_metric and rd_engine.online.metric.OnlineMetric
// (docs/robotics.md, "Anchors"); model-free, plain C++ in float64.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <vector>

namespace rd {

constexpr double kTukeyC = 4.685;       // Tukey biweight's constant, in robust sigmas
constexpr int kMetricMinSamples = 3;    // fewer anchors give no fit
constexpr int kLmedsPairs = 256;        // candidate pairs of the least-median start
constexpr int kLmedsSamples = 4096;     // samples the start's medians are taken over
constexpr int64_t kMetricMaxSamples = 20000;  // the online fit's most recent samples

struct MetricFit {
  double scale = 0, shift = 0;  // 1 / z = scale * d + shift (1 / metres)
  int64_t samples = 0;          // anchors the fit saw
  int64_t inliers = 0;          // ... with a nonzero Tukey weight
  double sigma = 0;             // robust scale of the inliers' relative depth residual (0.01 = 1 %)
};

// The robust fit of anchors `z` (metres, > 0) to the relative inverse depth `d` at their pixels: a
// least-median start over pairs of samples (a fixed-seed subsample; or `init`), then Tukey IRLS on the
// relative residual `z (a d + b) - 1`. None with fewer than 3 anchors or all at one relative depth.
std::optional<MetricFit> fit_metric(const std::vector<double>& d, const std::vector<double>& z,
                                    const std::optional<MetricFit>& init = std::nullopt, int iters = 50);

// `1 / (scale * d + shift)` as float32 metres, NaN where `scale * d + shift <= 0` (n values).
void to_metric(const float* d, int64_t n, double scale, double shift, float* out);

// Input-frame pixel coordinate (centres at integers) -> processed-frame one: (x + 0.5) * out / in - 0.5.
inline double to_processed(double x, int in, int out) {
  return (x + 0.5) * (static_cast<double>(out) / static_cast<double>(in)) - 0.5;
}

// A stream's anchors and fit: `note` a frame's anchors (processed-frame pixels) when it is pushed,
// `finish` it with its final relative depth. Frames never change once finished; frames finishing before
// any fit get none.
class OnlineMetric {
 public:
  struct Points {
    std::vector<double> x, y, z;  // processed-frame pixels, metres
  };
  void note(int64_t frame, Points points);
  // The fit current once `frame` (relative depth [h, w], row-major) has joined; none before any fit.
  // `*own` gets the number of this frame's anchors.
  std::optional<MetricFit> finish(int64_t frame, const float* depth, int w, int h, int64_t* own = nullptr);

 private:
  std::map<int64_t, Points> pending_;
  std::deque<std::pair<std::vector<double>, std::vector<double>>> samples_;  // (d, z) per anchored frame
  int64_t count_ = 0;
  std::optional<MetricFit> fit_;
};

}  // namespace rd
