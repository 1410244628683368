#include "metric.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

namespace rd {
namespace {

constexpr double kMadToSigma = 1.4826;
constexpr double kSigmaFloor = 1e-9;  // exact anchors have zero residuals

// numpy's median: the middle value, or the mean of the two middle ones (reorders `v`).
double median(std::vector<double>& v) {
  const size_t n = v.size(), k = n / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  const double hi = v[k];
  if (n % 2) return hi;
  const double lo = *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k));
  return (lo + hi) / 2.0;
}

// Weighted least squares of u a + v b = 1: (a, b), or none when singular.
std::optional<std::pair<double, double>> wls(const std::vector<double>& u, const std::vector<double>& v,
                                             const std::vector<double>* w) {
  double suu = 0, suv = 0, svv = 0, su = 0, sv = 0;
  for (size_t i = 0; i < u.size(); ++i) {
    const double wi = w ? (*w)[i] : 1.0;
    const double wu = wi * u[i], wv = wi * v[i];
    suu += wu * u[i];
    suv += wu * v[i];
    svv += wv * v[i];
    su += wu;
    sv += wv;
  }
  const double det = suu * svv - suv * suv;
  if (!(det > 1e-14 * std::max(suu * svv, 1e-300))) return std::nullopt;
  return std::make_pair((svv * su - suv * sv) / det, (suu * sv - suv * su) / det);
}

// splitmix64: a small fixed-seed generator, so the start is the same on every platform and run.
struct SplitMix {
  uint64_t state = 0;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }
};

// The candidate (a, b) of least median |relative residual|: exact fits through pairs of samples of a
// fixed-seed subsample, and the plain least squares fit (coalign.metric._lmeds_start, its own generator).
std::optional<std::pair<double, double>> lmeds_start(const std::vector<double>& d, const std::vector<double>& z) {
  SplitMix rng;
  const size_t m = d.size();
  std::vector<size_t> sub(m);
  for (size_t i = 0; i < m; ++i) sub[i] = i;
  if (m > static_cast<size_t>(kLmedsSamples)) {  // a partial Fisher-Yates shuffle: kLmedsSamples distinct ones
    for (size_t i = 0; i < static_cast<size_t>(kLmedsSamples); ++i) std::swap(sub[i], sub[i + rng.below(m - i)]);
    sub.resize(kLmedsSamples);
  }
  const size_t n = sub.size();
  std::vector<double> ds(n), zs(n), us(n);
  double dmax = 0;
  for (size_t i = 0; i < n; ++i) {
    ds[i] = d[sub[i]];
    zs[i] = z[sub[i]];
    us[i] = zs[i] * ds[i];
    dmax = std::max(dmax, std::fabs(ds[i]));
  }
  std::vector<std::pair<double, double>> cands;
  if (auto ls = wls(us, zs, nullptr)) cands.push_back(*ls);
  for (int k = 0; k < kLmedsPairs; ++k) {
    const size_t i = rng.below(n), j = rng.below(n);
    const double dd = ds[i] - ds[j];
    if (!(std::fabs(dd) > 1e-12 * std::max(dmax, 1e-300))) continue;
    const double a = (1.0 / zs[i] - 1.0 / zs[j]) / dd;
    cands.emplace_back(a, 1.0 / zs[i] - a * ds[i]);
  }
  if (cands.empty()) return std::nullopt;
  std::vector<double> r(n);
  double best = std::numeric_limits<double>::infinity();
  size_t pick = 0;
  for (size_t c = 0; c < cands.size(); ++c) {
    for (size_t i = 0; i < n; ++i) r[i] = std::fabs(zs[i] * (cands[c].first * ds[i] + cands[c].second) - 1.0);
    const double med = median(r);
    if (med < best) {  // the first of equal medians, as argmin
      best = med;
      pick = c;
    }
  }
  return cands[pick];
}

}  // namespace

std::optional<MetricFit> fit_metric(const std::vector<double>& d, const std::vector<double>& z,
                                    const std::optional<MetricFit>& init, int iters) {
  const size_t n = d.size();
  if (n < static_cast<size_t>(kMetricMinSamples) || z.size() != n) return std::nullopt;
  double lo = d[0], hi = d[0], amax = 0;
  for (double v : d) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    amax = std::max(amax, std::fabs(v));
  }
  if (hi - lo <= 1e-12 * std::max(amax, 1e-300)) return std::nullopt;
  std::optional<std::pair<double, double>> start =
      init ? std::make_optional(std::make_pair(init->scale, init->shift)) : lmeds_start(d, z);
  if (!start) return std::nullopt;
  auto [a, b] = *start;
  std::vector<double> u(n), r(n), absr(n), w(n);
  for (size_t i = 0; i < n; ++i) u[i] = z[i] * d[i];
  const std::vector<double>& v = z;
  double sigma = kSigmaFloor;
  for (int it = 0; it < iters; ++it) {
    for (size_t i = 0; i < n; ++i) {
      r[i] = u[i] * a + v[i] * b - 1.0;
      absr[i] = std::fabs(r[i]);
    }
    sigma = std::max(kMadToSigma * median(absr), kSigmaFloor);
    for (size_t i = 0; i < n; ++i) {
      const double q = r[i] / (kTukeyC * sigma);
      w[i] = std::fabs(q) < 1.0 ? (1.0 - q * q) * (1.0 - q * q) : 0.0;
    }
    const auto next = wls(u, v, &w);
    if (!next) break;
    const bool done = std::fabs(next->first - a) <= 1e-10 * std::fabs(a) + 1e-300 &&
                      std::fabs(next->second - b) <= 1e-10 * (std::fabs(b) + std::fabs(a));
    a = next->first;
    b = next->second;
    if (done) break;
  }
  std::vector<double> inl;
  for (size_t i = 0; i < n; ++i) {
    const double ri = std::fabs(u[i] * a + v[i] * b - 1.0);
    if (ri < kTukeyC * sigma) inl.push_back(ri);
  }
  MetricFit fit;
  fit.scale = a;
  fit.shift = b;
  fit.samples = static_cast<int64_t>(n);
  fit.inliers = static_cast<int64_t>(inl.size());
  fit.sigma = inl.empty() ? std::numeric_limits<double>::quiet_NaN() : kMadToSigma * median(inl);
  return fit;
}

void to_metric(const float* d, int64_t n, double scale, double shift, float* out) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t i = 0; i < n; ++i) {
    const double inv = scale * static_cast<double>(d[i]) + shift;
    out[i] = inv > 0 ? static_cast<float>(1.0 / inv) : nan;
  }
}

void OnlineMetric::note(int64_t frame, Points points) {
  if (!points.z.empty()) pending_[frame] = std::move(points);
}

std::optional<MetricFit> OnlineMetric::finish(int64_t frame, const float* depth, int w, int h, int64_t* own) {
  if (own) *own = 0;
  auto it = pending_.find(frame);
  if (it != pending_.end()) {
    Points p = std::move(it->second);
    pending_.erase(it);
    const size_t m = p.z.size();
    if (own) *own = static_cast<int64_t>(m);
    std::vector<double> ds(m);
    for (size_t i = 0; i < m; ++i) {  // the pixel containing the point (numpy's rint: half to even)
      const int64_t xi = std::clamp<int64_t>(static_cast<int64_t>(std::nearbyint(p.x[i])), 0, w - 1);
      const int64_t yi = std::clamp<int64_t>(static_cast<int64_t>(std::nearbyint(p.y[i])), 0, h - 1);
      ds[i] = static_cast<double>(depth[yi * w + xi]);
    }
    samples_.emplace_back(std::move(ds), std::move(p.z));
    count_ += static_cast<int64_t>(m);
    while (samples_.size() > 1 && count_ - static_cast<int64_t>(samples_.front().second.size()) >= kMetricMaxSamples) {
      count_ -= static_cast<int64_t>(samples_.front().second.size());
      samples_.pop_front();
    }
    std::vector<double> d, z;
    d.reserve(static_cast<size_t>(count_));
    z.reserve(static_cast<size_t>(count_));
    for (const auto& [sd, sz] : samples_) {
      d.insert(d.end(), sd.begin(), sd.end());
      z.insert(z.end(), sz.begin(), sz.end());
    }
    if (auto fit = fit_metric(d, z, fit_)) fit_ = fit;
  }
  return fit_;
}

}  // namespace rd
