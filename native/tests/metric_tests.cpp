// The metric fit (native/src/metric.cpp) on anchors with a known answer: exact affine anchors, outliers,
// noise, too few anchors, the online update. Model-free and torch-free.
// Usage: rd_metric_tests CASE (ctest runs every case; see CMakeLists.txt).
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "metric.h"

namespace {

constexpr double kA = 0.31, kB = 0.52;  // the true affine: 1 / z = kA * d + kB, d in [-1, 1] -> z in 1.2..4.8 m

struct Anchors {
  std::vector<double> d, z;
};

// n anchors of the true affine at relative depths uniform in [-1, 1]; `noise`: relative depth noise (sigma);
// `outliers`: that fraction replaced, half 1.3-3x too far (behind a depth edge), half anywhere in 0.5-30 m.
Anchors make(int n, double noise, double outliers, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0), far(1.3, 3.0), any(0.5, 30.0), pick(0.0, 1.0);
  std::normal_distribution<double> g(0.0, 1.0);
  Anchors a;
  for (int i = 0; i < n; ++i) {
    const double d = u(gen);
    double z = 1.0 / (kA * d + kB) * (1.0 + noise * g(gen));
    const double p = pick(gen);
    if (p < outliers / 2) z *= far(gen);
    else if (p < outliers) z = any(gen);
    a.d.push_back(d);
    a.z.push_back(z);
  }
  return a;
}

// The largest relative difference between the fit's metric depth and the true one over d in [-1, 1].
double worst_relative(const rd::MetricFit& f) {
  double worst = 0;
  for (int k = 0; k <= 200; ++k) {
    const double d = -1.0 + k / 100.0;
    const double truth = 1.0 / (kA * d + kB), got = 1.0 / (f.scale * d + f.shift);
    worst = std::max(worst, std::fabs(got / truth - 1.0));
  }
  return worst;
}

void test_exact() {
  const Anchors a = make(500, 0.0, 0.0, 1);
  const auto fit = rd::fit_metric(a.d, a.z);
  RD_CHECK(fit.has_value());
  std::printf("exact: scale %.12g shift %.12g sigma %.3g\n", fit->scale, fit->shift, fit->sigma);
  RD_CHECK(fit->samples == 500 && fit->inliers == 500);
  RD_CHECK_NEAR(fit->scale, kA, 1e-9 * kA);
  RD_CHECK_NEAR(fit->shift, kB, 1e-9 * kB);
  // the anchors reproduced by the float32 conversion: relative error < 1e-4 (the bound) at every one
  std::vector<float> d(a.d.begin(), a.d.end()), z(d.size());
  rd::to_metric(d.data(), static_cast<int64_t>(d.size()), fit->scale, fit->shift, z.data());
  double worst = 0;
  for (size_t i = 0; i < d.size(); ++i) {
    const double truth = 1.0 / (kA * static_cast<double>(d[i]) + kB);
    worst = std::max(worst, std::fabs(z[i] / truth - 1.0));
  }
  std::printf("exact: worst relative depth error %.3g\n", worst);
  RD_CHECK(worst < 1e-4);
  // from a previous fit (the online refit) the same fixed point
  rd::MetricFit off{kA * 1.2, kB * 0.9, 0, 0, 0};
  const auto again = rd::fit_metric(a.d, a.z, off);
  RD_CHECK(again && std::fabs(again->scale - kA) <= 1e-9 * kA && std::fabs(again->shift - kB) <= 1e-9 * kB);
  // more samples than the start's subsample (4096)
  const Anchors big = make(20000, 0.0, 0.0, 2);
  const auto fb = rd::fit_metric(big.d, big.z);
  RD_CHECK(fb && std::fabs(fb->scale - kA) <= 1e-9 * kA && std::fabs(fb->shift - kB) <= 1e-9 * kB);
}

void test_robust() {
  // 30 % outliers, inliers exact: the outliers get weight 0, the affine is reproduced
  const Anchors exact_out = make(1000, 0.0, 0.3, 3);
  const auto f0 = rd::fit_metric(exact_out.d, exact_out.z);
  RD_CHECK(f0.has_value());
  std::printf("30%% outliers, exact inliers: worst relative %.3g, inliers %lld of %lld\n", worst_relative(*f0),
              static_cast<long long>(f0->inliers), static_cast<long long>(f0->samples));
  RD_CHECK(worst_relative(*f0) < 1e-6);
  RD_CHECK(f0->inliers >= 650 && f0->inliers <= 760);  // about the 70 % inliers (an outlier may land on the line)
  // noisy anchors (1 % relative depth noise), and noise plus 30 % outliers: within 1 % of the noise-free fit
  // at every relative depth of [-1, 1] (measured: 0.02-0.22 % for 1000 anchors), 3 seeds each
  for (uint32_t seed : {4u, 5u, 6u}) {
    const Anchors noisy = make(1000, 0.01, 0.0, seed);
    const auto fn = rd::fit_metric(noisy.d, noisy.z);
    RD_CHECK(fn.has_value());
    const Anchors both = make(1000, 0.01, 0.3, seed + 10);
    const auto fo = rd::fit_metric(both.d, both.z);
    RD_CHECK(fo.has_value());
    std::printf("seed %u: noisy %.3g (sigma %.4f), noisy + 30%% outliers %.3g (sigma %.4f, %lld inliers)\n", seed,
                worst_relative(*fn), fn->sigma, worst_relative(*fo), fo->sigma, static_cast<long long>(fo->inliers));
    RD_CHECK(worst_relative(*fn) < 0.01);
    RD_CHECK(worst_relative(*fo) < 0.01);
    RD_CHECK(fn->sigma > 0.005 && fn->sigma < 0.02);  // the noise's 1 %, measured back
    RD_CHECK(fo->sigma > 0.005 && fo->sigma < 0.02);
  }
  // the plain least squares start alone would be pulled far off by the outliers: the robust fit is needed
  const Anchors both = make(1000, 0.01, 0.3, 20);
  rd::MetricFit ls{0, 0, 0, 0, 0};
  {
    double suu = 0, suv = 0, svv = 0, su = 0, sv = 0;
    for (size_t i = 0; i < both.d.size(); ++i) {
      const double uu = both.z[i] * both.d[i], vv = both.z[i];
      suu += uu * uu, suv += uu * vv, svv += vv * vv, su += uu, sv += vv;
    }
    const double det = suu * svv - suv * suv;
    ls.scale = (svv * su - suv * sv) / det;
    ls.shift = (suu * sv - suv * su) / det;
  }
  RD_CHECK(worst_relative(ls) > 0.05);
}

void test_few() {
  // fewer than 3 anchors (two always fit exactly, outliers included), or all at one relative depth: no fit
  RD_CHECK(!rd::fit_metric({}, {}));
  RD_CHECK(!rd::fit_metric({0.5}, {2.0}));
  RD_CHECK(!rd::fit_metric({0.5, -0.2}, {2.0, 3.0}));
  RD_CHECK(!rd::fit_metric({0.5, 0.5, 0.5, 0.5}, {2.0, 3.0, 2.5, 2.2}));
  RD_CHECK(rd::fit_metric({0.5, -0.2, 0.1}, {1.0 / (kA * 0.5 + kB), 1.0 / (kA * -0.2 + kB), 1.0 / (kA * 0.1 + kB)}));
  // NaN where the fitted inverse depth is not positive
  const float d[3] = {-1.0f, 0.0f, 1.0f};
  float z[3];
  rd::to_metric(d, 3, 1.0, 0.0, z);
  RD_CHECK(std::isnan(z[0]) && std::isnan(z[1]) && z[2] == 1.0f);
}

void test_online() {
  // a 16x8 "frame" of relative depth; frames 0, 1 finish before any anchor (flagged), frame 2 brings 2
  // anchors (still no fit), frame 3 brings 40 (the fit), frame 4 none (keeps the fit), frame 5 outliers only
  const int w = 16, h = 8;
  std::vector<float> depth(w * h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) depth[y * w + x] = static_cast<float>(-1.0 + 2.0 * (x + w * y) / (w * h - 1));
  auto truth = [&](double x, double y) {
    const int xi = static_cast<int>(std::nearbyint(x)), yi = static_cast<int>(std::nearbyint(y));
    return 1.0 / (kA * depth[yi * w + xi] + kB);
  };
  rd::OnlineMetric m;
  int64_t own = -1;
  RD_CHECK(!m.finish(0, depth.data(), w, h, &own) && own == 0);
  RD_CHECK(!m.finish(1, depth.data(), w, h));
  rd::OnlineMetric::Points two{{1.0, 5.0}, {1.0, 2.0}, {truth(1, 1), truth(5, 2)}};
  m.note(2, two);
  RD_CHECK(!m.finish(2, depth.data(), w, h, &own) && own == 2);
  rd::OnlineMetric::Points many;
  for (int i = 0; i < 40; ++i) {
    const double x = (i * 7) % w + 0.3, y = (i * 3) % h - 0.4;  // inside pixels, rounding to their centre
    many.x.push_back(x);
    many.y.push_back(y);
    many.z.push_back(truth(x, std::max(0.0, y)));
  }
  m.note(3, many);
  m.note(9, many);  // a later frame's anchors wait for their frame
  const auto f3 = m.finish(3, depth.data(), w, h, &own);
  RD_CHECK(f3 && own == 40 && f3->samples == 42);
  RD_CHECK_NEAR(f3->scale, kA, 1e-9 * kA);
  RD_CHECK_NEAR(f3->shift, kB, 1e-9 * kB);
  const auto f4 = m.finish(4, depth.data(), w, h, &own);
  RD_CHECK(f4 && own == 0 && f4->scale == f3->scale && f4->shift == f3->shift && f4->samples == 42);
  rd::OnlineMetric::Points bad{{2.0, 3.0, 4.0}, {2.0, 2.0, 2.0}, {25.0, 0.6, 17.0}};
  m.note(5, bad);
  const auto f5 = m.finish(5, depth.data(), w, h);
  RD_CHECK(f5 && f5->samples == 45 && f5->inliers == 42);  // three outliers: weight 0, the fit unchanged
  RD_CHECK_NEAR(f5->scale, kA, 1e-9 * kA);
  // the samples are the most recent 20 000 (whole frames; the newest frame always stays)
  rd::OnlineMetric big;
  rd::OnlineMetric::Points block;
  for (int i = 0; i < 7000; ++i) {
    block.x.push_back(i % w);
    block.y.push_back((i / w) % h);
    block.z.push_back(truth(i % w, (i / w) % h));
  }
  for (int f = 0; f < 5; ++f) big.note(f, block);
  int64_t seen[5];
  for (int f = 0; f < 5; ++f) seen[f] = big.finish(f, depth.data(), w, h)->samples;
  RD_CHECK(seen[0] == 7000 && seen[1] == 14000 && seen[2] == 21000 && seen[3] == 21000 && seen[4] == 21000);
}

}  // namespace

int main(int argc, char** argv) {
  const std::map<std::string, std::function<void()>> cases = {
      {"exact", test_exact}, {"robust", test_robust}, {"few", test_few}, {"online", test_online}};
  if (argc != 2 || !cases.count(argv[1])) {
    std::fprintf(stderr, "usage: rd_metric_tests CASE (exact robust few online)\n");
    return 2;
  }
  cases.at(argv[1])();
  std::printf("metric.%s: ok\n", argv[1]);
  return 0;
}
