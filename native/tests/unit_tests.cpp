// Unit tests of the runtime's model-free parts: scheduler, preprocessing, DDIM, the 2x2 solve, the
// robust fit and the online aligner on synthetic snippets with a known answer.
// Usage: rd_unit_tests CASE (ctest runs every case; see CMakeLists.txt).
#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <string>

#include "aligner.h"
#include "check.h"
#include "ddim.h"
#include "errors.h"
#include "preprocess.h"
#include "session.h"

namespace {

void test_scheduler() {
  using V = std::vector<int64_t>;
  RD_CHECK(rd::snippets_ending_at(0, {1, 25}, 3).empty());
  RD_CHECK(rd::snippets_ending_at(1, {1, 25}, 3).empty());
  auto s2 = rd::snippets_ending_at(2, {1, 25}, 3);
  RD_CHECK(s2.size() == 1 && s2[0].first == 1 && s2[0].second == V({0, 1, 2}));
  auto s49 = rd::snippets_ending_at(49, {1, 25}, 3);
  RD_CHECK(s49.size() == 1);
  auto s50 = rd::snippets_ending_at(50, {1, 25}, 3);
  RD_CHECK(s50.size() == 2 && s50[1].first == 25 && s50[1].second == V({0, 25, 50}));
  auto s4 = rd::snippets_ending_at(9, {1, 3}, 4);
  RD_CHECK(s4.size() == 2 && s4[1].second == V({0, 3, 6, 9}));
  RD_CHECK(rd::preset_values("fast").first == 768);
  RD_CHECK((rd::preset_values("full").second == std::vector<int>{1, 10, 25}));
  bool refused = false;
  try {
    rd::preset_values("fastest");
  } catch (const rd::Error& e) {
    refused = e.code() == RD_ERR_INVALID_ARGUMENT;
  }
  RD_CHECK(refused);
}

void test_preprocess() {
  RD_CHECK((rd::processed_size(1920, 1080, 768) == rd::Size{768, 432}));
  RD_CHECK((rd::processed_size(1000, 333, 512) == rd::Size{512, 170}));  // sides truncate
  RD_CHECK((rd::processed_size(64, 4000, 100) == rd::Size{1, 100}));      // at least 1
  RD_CHECK((rd::processed_size(100, 50, 0) == rd::Size{100, 50}));
  RD_CHECK((rd::padded_size({130, 73}) == rd::Size{136, 80}));
  // a constant frame stays constant through the antialiased resize: 2 * v / 255 - 1
  at::Tensor rgb = at::full({40, 60, 3}, 51, at::kByte);
  at::Tensor x = rd::preprocess(rgb, {30, 20}, at::kCPU);
  RD_CHECK((x.sizes() == at::IntArrayRef{1, 3, 20, 30}));
  RD_CHECK_NEAR(x.min().item<double>(), 51.0 / 255.0 * 2.0 - 1.0, 1e-6);
  RD_CHECK_NEAR(x.max().item<double>(), 51.0 / 255.0 * 2.0 - 1.0, 1e-6);
  // same size: no resize, exact normalization; strided input (a crop) reads the right pixels
  at::Tensor ramp = at::arange(0, 256, at::kInt).to(at::kByte).reshape({16, 16, 1}).expand({16, 16, 3});
  at::Tensor crop = ramp.slice(1, 4, 12);
  at::Tensor y = rd::preprocess(crop, {8, 16}, at::kCPU);
  RD_CHECK_NEAR(y[0][0][0][0].item<double>(), 4.0 / 255.0 * 2.0 - 1.0, 1e-7);
  RD_CHECK_NEAR(y[0][2][15][7].item<double>(), 251.0 / 255.0 * 2.0 - 1.0, 1e-7);
  // padding replicates the last row and column
  at::Tensor p = rd::pad_to(y, {8, 16}, {16, 24});
  RD_CHECK((p.sizes() == at::IntArrayRef{1, 3, 24, 16}));
  RD_CHECK(at::equal(p[0][0][23].slice(0, 8, 16), y[0][0][15][7].expand({8})));
}

void test_ddim() {
  rd::DdimSchedule d;
  d.alphas_cumprod.resize(1000);
  for (int i = 0; i < 1000; ++i) d.alphas_cumprod[i] = 1.0f - 0.001f * i;
  d.timestep_spacing = "trailing";
  RD_CHECK((d.timesteps(1) == std::vector<int64_t>{999}));
  RD_CHECK((d.timesteps(4) == std::vector<int64_t>{999, 749, 499, 249}));
  d.timestep_spacing = "leading";
  d.steps_offset = 1;
  RD_CHECK((d.timesteps(4) == std::vector<int64_t>{751, 501, 251, 1}));
  d.timestep_spacing = "linspace";
  RD_CHECK((d.timesteps(3) == std::vector<int64_t>{999, 500, 0}));  // 499.5 rounds half to even
  d.timestep_spacing = "trailing";
  d.set_alpha_to_one = false;
  auto steps = d.schedule(1);
  RD_CHECK(steps.size() == 1 && steps[0].t == 999 && steps[0].t_prev == -1);
  RD_CHECK(steps[0].alpha_t == d.alphas_cumprod[999] && steps[0].alpha_prev == d.alphas_cumprod[0]);
}

at::Tensor moments_of(const at::Tensor& x, const at::Tensor& y) {
  return rd::weighted_moments(x, y, at::ones_like(x));
}

void test_scale_shift() {
  at::manual_seed(0);
  at::Tensor x = at::randn({3, 2, 50});
  at::Tensor s_true = at::tensor({2.0f, -0.5f, 1.0f}), t_true = at::tensor({3.0f, 0.25f, -1.0f});
  at::Tensor y = x * s_true.view({-1, 1, 1}) + t_true.view({-1, 1, 1});
  auto [s, t] = rd::solve_scale_shift(moments_of(x, y), at::ones({3}, at::kDouble), at::zeros({3}, at::kDouble),
                                      1e-10, at::ones({3}, at::kDouble));
  RD_CHECK(s.scalar_type() == at::kFloat);
  RD_CHECK(at::allclose(s, s_true, 1e-5, 1e-5) && at::allclose(t, t_true, 1e-5, 1e-5));
  // constant x: the fallback scale, and the best shift for it
  at::Tensor xc = at::full({1, 1, 10}, 2.0f), yc = at::full({1, 1, 10}, 7.0f);
  auto [sc, tc] = rd::solve_scale_shift(moments_of(xc, yc), at::ones({1}, at::kDouble), at::zeros({1}, at::kDouble),
                                        1e-10, at::full({1}, 3.0, at::kDouble));
  RD_CHECK_NEAR(sc.item<double>(), 3.0, 1e-9);
  RD_CHECK_NEAR(tc.item<double>(), 1.0, 1e-6);
}

void test_solve_one() {
  at::manual_seed(1);
  at::Tensor x = at::rand({3, 400});
  at::Tensor y = x * 1.5 - 0.2;
  y.view(-1).slice(0, 0, 1200, 10).add_(5.0);  // 10 % gross outliers
  auto [s, t] = rd::solve_one(x, y, at::ones_like(x));
  RD_CHECK_NEAR(s, 1.5, 2e-3);
  RD_CHECK_NEAR(t, -0.2, 2e-3);
  // no weight at all: the start values stay
  auto [s0, t0] = rd::solve_one(x, y, at::zeros_like(x));
  RD_CHECK_NEAR(s0, 1.0, 0.0);
  RD_CHECK_NEAR(t0, 0.0, 0.0);
}

// A synthetic stream: true inverse depth per frame; each snippet sees it under its own affine.
struct Synthetic {
  int n, H = 24, W = 32;
  at::Tensor truth;  // [n, H, W]
  explicit Synthetic(int frames) : n(frames) {
    at::manual_seed(2);
    at::Tensor base = at::rand({1, H, W}) + 0.5;
    at::Tensor drift = at::linspace(0, 1, n).view({-1, 1, 1});
    truth = base + drift * at::rand({1, H, W}) * 0.5;
  }
  double noise = 0.0;  // amplitude of a deterministic ripple added to each snippet (model error)
  at::Tensor snippet(const std::vector<int64_t>& frames, double s, double t, int64_t salt = 0) const {
    std::vector<at::Tensor> fs;
    for (int64_t f : frames) fs.push_back(truth[f] * s + t);
    at::Tensor x = at::stack(fs);
    if (noise > 0) x = x + noise * at::sin(at::arange(x.numel(), at::kFloat) * static_cast<float>(salt)).view_as(x);
    return x;
  }
};

// Runs the aligner over a synthetic stream as the session schedules it; returns the finished frames.
std::vector<rd::FinishedFrame> run_stream(const Synthetic& syn, int lag, const std::vector<int>& dilations) {
  rd::OnlineAligner al(3, lag);
  const int64_t window = 2L * dilations.back() + 1;
  std::vector<rd::FinishedFrame> out;
  auto keep = [&](std::vector<rd::FinishedFrame> fs) {
    for (auto& f : fs) out.push_back(std::move(f));
  };
  for (int64_t i = 0; i < syn.n; ++i) {
    al.note_frame(i, static_cast<double>(i) / 30.0, i, rd::Clock::now());
    for (const auto& [d, frames] : rd::snippets_ending_at(i, dilations, 3)) {
      const double s = 0.5 + 0.1 * static_cast<double>((i * 7 + d) % 11), t = 0.3 * static_cast<double>((i + d) % 5) - 0.6;
      al.add(d, frames, syn.snippet(frames, s, t, i + d));
    }
    keep(al.finish(i, window + lag));
  }
  keep(al.finish(std::nullopt, window + lag));
  return out;
}

// Every finished frame equals the truth under ONE affine (the stream's gauge), frames come in order.
void check_consistent(const Synthetic& syn, const std::vector<rd::FinishedFrame>& out, double tol) {
  RD_CHECK(static_cast<int>(out.size()) == syn.n);
  for (int i = 0; i < syn.n; ++i) RD_CHECK(out[i].index == i);
  std::vector<at::Tensor> got;
  for (const auto& f : out) got.push_back(f.depth);
  at::Tensor g = at::stack(got).reshape(-1), tr = syn.truth.reshape(-1);
  const double mt = tr.mean().item<double>(), mg = g.mean().item<double>();
  const double a = ((tr - mt) * (g - mg)).sum().item<double>() / ((tr - mt) * (tr - mt)).sum().item<double>();
  const double b = mg - a * mt;
  const double err = (g - (tr * a + b)).abs().max().item<double>();
  RD_CHECK_NEAR(err, 0.0, tol);
  RD_CHECK(a > 0);
  RD_CHECK_NEAR(out[0].timestamp, 0.0, 0.0);
  RD_CHECK(out[0].latency >= 0);
}

void test_aligner_exact() {
  Synthetic syn(40);
  auto out = run_stream(syn, 0, {1, 5});
  check_consistent(syn, out, 1e-4);
  // the first snippet spans exactly [-1, 1] (it fixes the gauge); frame 0 is one of its frames
  rd::OnlineAligner al(3, 0);
  at::Tensor first = syn.snippet({0, 1, 2}, 2.0, 1.0);
  al.add(1, {0, 1, 2}, first);
  auto fs = al.finish(std::nullopt, 3);
  RD_CHECK(fs.size() == 3);
  double lo = 1e9, hi = -1e9;
  for (const auto& f : fs) {
    lo = std::min(lo, f.depth.min().item<double>());
    hi = std::max(hi, f.depth.max().item<double>());
  }
  RD_CHECK_NEAR(lo, -1.0, 1e-6);
  RD_CHECK_NEAR(hi, 1.0, 1e-6);
}

void test_aligner_lag() {
  // with model error (noise-free snippets make the robust scale 0: a degenerate case real depth never has)
  Synthetic syn(40);
  syn.noise = 0.01;
  check_consistent(syn, run_stream(syn, 0, {1, 5}), 0.1);
  check_consistent(syn, run_stream(syn, 3, {1, 5}), 0.1);
  check_consistent(syn, run_stream(syn, 12, {1, 3, 5}), 0.1);
  bool refused = false;
  try {
    rd::OnlineAligner bad(3, -1);
  } catch (const rd::Error& e) {
    refused = e.code() == RD_ERR_INVALID_ARGUMENT;
  }
  RD_CHECK(refused);
}

void test_aligner_short() {
  // frames too small to align are refused with a message, not a crash
  bool refused = false;
  try {
    rd::solver_copy(at::zeros({3, 4, 4}));
  } catch (const rd::Error& e) {
    refused = e.code() == RD_ERR_INVALID_ARGUMENT;
  }
  RD_CHECK(refused);
  // NaN depth is a runtime error
  rd::OnlineAligner al(3, 0);
  refused = false;
  try {
    al.add(1, {0, 1, 2}, at::full({3, 16, 16}, NAN));
  } catch (const rd::Error& e) {
    refused = e.code() == RD_ERR_RUNTIME;
  }
  RD_CHECK(refused);
  RD_CHECK(al.finish(std::nullopt, 3).empty());
}

}  // namespace

int main(int argc, char** argv) {
  const std::map<std::string, std::function<void()>> cases = {
      {"scheduler", test_scheduler},       {"preprocess", test_preprocess},     {"ddim", test_ddim},
      {"scale_shift", test_scale_shift},   {"solve_one", test_solve_one},       {"aligner_exact", test_aligner_exact},
      {"aligner_lag", test_aligner_lag},   {"aligner_short", test_aligner_short}};
  if (argc != 2 || !cases.count(argv[1])) {
    std::fprintf(stderr, "usage: rd_unit_tests CASE (");
    for (const auto& [name, fn] : cases) std::fprintf(stderr, " %s", name.c_str());
    std::fprintf(stderr, " )\n");
    return 2;
  }
  cases.at(argv[1])();
  std::printf("%s: ok\n", argv[1]);
  return 0;
}
