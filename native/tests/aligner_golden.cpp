// The C++ online aligner against the Python one (rd_engine.online.aligner.OnlineAligner), model-free:
// tests/native/test_native_sizes.py records snippets and the Python aligner's finished frames at the sizes
// users run; this replays the same calls on rd::OnlineAligner and compares.
// Usage: rd_aligner_golden FOLDER  (FOLDER/golden.json and the .f32 files it names)
#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "aligner.h"
#include "check.h"

namespace {

std::vector<float> read_f32(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  RD_CHECK(in.good());
  const auto bytes = static_cast<size_t>(in.tellg());
  std::vector<float> out(bytes / sizeof(float));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(bytes));
  return out;
}

// A recorded low-resolution snippet [L, h, w] at full size: each value repeated factor x factor times,
// plus a fixed pixel pattern, by the same ATen calls as the recorder (so bit for bit the same input).
at::Tensor full_size(const at::Tensor& low, int64_t factor, int64_t height, int64_t width) {
  at::Tensor x = low.repeat_interleave(factor, -1).repeat_interleave(factor, -2);
  x = x.slice(-2, 0, height).slice(-1, 0, width);
  const at::Tensor yy = at::arange(height, at::kLong).view({-1, 1}), xx = at::arange(width, at::kLong).view({1, -1});
  const at::Tensor pattern = at::remainder(xx * 7 + yy * 13, 17).to(at::kFloat) / 17 * 0.01;
  return (x + pattern).contiguous();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return std::fprintf(stderr, "usage: rd_aligner_golden FOLDER\n"), 2;
  const std::string dir = argv[1];
  nlohmann::json spec;
  {
    std::ifstream in(dir + "/golden.json");
    RD_CHECK(in.good());
    spec = nlohmann::json::parse(in);
  }
  const double tol = spec.at("tolerance").get<double>();
  for (const auto& c : spec.at("cases")) {
    const int64_t H = c.at("height"), W = c.at("width"), factor = c.at("factor"), h = c.at("low_height"),
                  w = c.at("low_width"), sub = c.at("sub");
    const int L = c.at("snippet_len"), lag = c.at("lag");
    const int64_t max_window = c.at("max_window");
    const std::vector<float> low = read_f32(dir + "/" + c.at("snippets").get<std::string>());
    const std::vector<float> expect = read_f32(dir + "/" + c.at("expected").get<std::string>());
    const at::Tensor lows = at::from_blob(const_cast<float*>(low.data()), {static_cast<int64_t>(low.size())}, at::kFloat);
    rd::OnlineAligner al(L, lag);
    int64_t used = 0, next_frame = 0;
    const int64_t per_snippet = L * h * w;
    const int64_t sh = (H + sub - 1) / sub, sw = (W + sub - 1) / sub;
    double worst = 0;
    for (const auto& op : c.at("ops")) {
      const std::string kind = op.at("op");
      if (kind == "note") {
        const int64_t i = op.at("index");
        al.note_frame(i, static_cast<double>(i) / 30.0, i, rd::Clock::now());
      } else if (kind == "add") {
        const at::Tensor sn = lows.slice(0, used * per_snippet, (used + 1) * per_snippet).view({L, h, w});
        ++used;
        al.add(op.at("dilation").get<int>(), op.at("frames").get<std::vector<int64_t>>(), full_size(sn, factor, H, W),
               op.at("weight").get<double>());
      } else {
        std::optional<int64_t> upto;
        if (!op.at("upto").is_null()) upto = op.at("upto").get<int64_t>();
        const auto done = al.finish(upto, max_window);
        RD_CHECK(static_cast<int64_t>(done.size()) == op.at("finished").get<int64_t>());
        for (const auto& f : done) {
          RD_CHECK(f.index == next_frame);
          const at::Tensor got = f.depth.slice(0, 0, c10::nullopt, sub).slice(1, 0, c10::nullopt, sub).contiguous();
          RD_CHECK(got.size(0) == sh && got.size(1) == sw);
          const at::Tensor want = at::from_blob(const_cast<float*>(expect.data()) + next_frame * (sh * sw + 1),
                                                {sh, sw}, at::kFloat);
          const double mean_want = expect[next_frame * (sh * sw + 1) + sh * sw];
          worst = std::max(worst, (got - want).abs().max().item<double>());
          worst = std::max(worst, std::abs(f.depth.mean().item<double>() - mean_want));  // every pixel counts
          ++next_frame;
        }
      }
    }
    RD_CHECK(next_frame == c.at("frames").get<int64_t>());
    std::printf("%s: %lld frames, max abs diff %.3g (tolerance %g)\n", c.at("name").get<std::string>().c_str(),
                static_cast<long long>(next_frame), worst, tol);
    RD_CHECK(worst < tol);
  }
  for (const auto& c : spec.value("windows", nlohmann::json::array())) {
    // the window solver alone on a big window (coarse-to-fine, strided residual sampling)
    const int64_t P = c.at("pixels"), n = c.at("frames");
    const int64_t L = c.at("snippet_len");
    const std::vector<float> depth = read_f32(dir + "/" + c.at("depth").get<std::string>());
    const std::vector<float> init = read_f32(dir + "/" + c.at("init").get<std::string>());
    const std::vector<float> expect = read_f32(dir + "/" + c.at("expected").get<std::string>());
    std::vector<rd::Group> groups;
    std::vector<std::pair<at::Tensor, at::Tensor>> params;
    int64_t used = 0, K_all = 0;
    for (const auto& g : c.at("groups")) K_all += static_cast<int64_t>(g.at("indices").size());
    RD_CHECK(static_cast<int64_t>(init.size()) == 2 * K_all && static_cast<int64_t>(expect.size()) == 2 * K_all);
    int64_t k0 = 0;
    for (const auto& g : c.at("groups")) {
      std::vector<int64_t> idx;
      for (const auto& row : g.at("indices"))
        for (const auto& f : row) idx.push_back(f.get<int64_t>());
      const int64_t K = static_cast<int64_t>(g.at("indices").size());
      const at::Tensor d = at::from_blob(const_cast<float*>(depth.data()) + used, {K, L, P}, at::kFloat).clone();
      used += K * L * P;
      groups.push_back({g.at("dilation").get<int>(), g.at("weight").get<double>(),
                        at::tensor(idx, at::kLong).reshape({K, L}), d});
      params.emplace_back(at::from_blob(const_cast<float*>(init.data()) + k0, {K}, at::kFloat).clone(),
                          at::from_blob(const_cast<float*>(init.data()) + K_all + k0, {K}, at::kFloat).clone());
      k0 += K;
    }
    RD_CHECK(used == static_cast<int64_t>(depth.size()));
    const auto solved = rd::solve_robust(groups, n, 20, 2, params);
    double worst = 0;
    k0 = 0;
    for (const auto& [sc, shv] : solved) {
      const int64_t K = sc.size(0);
      const at::Tensor ws = at::from_blob(const_cast<float*>(expect.data()) + k0, {K}, at::kFloat);
      const at::Tensor wt = at::from_blob(const_cast<float*>(expect.data()) + K_all + k0, {K}, at::kFloat);
      worst = std::max({worst, (sc.to(at::kFloat) - ws).abs().max().item<double>(),
                        (shv.to(at::kFloat) - wt).abs().max().item<double>()});
      k0 += K;
    }
    std::printf("%s: %lld snippets, max abs diff %.3g (tolerance %g)\n", c.at("name").get<std::string>().c_str(),
                static_cast<long long>(K_all), worst, tol);
    RD_CHECK(worst < tol);
  }
  std::printf("aligner golden: ok\n");
  return 0;
}
