#include "aligner.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "errors.h"

namespace rd {
namespace {

constexpr int64_t kBorder = 2;            // pixels cropped on each side before the solve
constexpr int64_t kFactor = 10;           // subsampling step of the solver copy
constexpr double kMadToSigma = 1.4826;  // median absolute deviation -> sigma of Gaussian residuals
constexpr double kCauchyC = 2.385;      // Cauchy loss constant, in robust-sigma units
constexpr double kFrozenWeight = 1.0;   // finished frames: final values
constexpr double kProvisionalWeight = 0.5;  // unfinished frames: running mean of the snippets so far
constexpr int kWindowIters = 20;        // Procrustes iterations per window solve (warm-started)
constexpr int kMinEntries = 3;          // fewer entries: a frame keeps the plain mean
constexpr int64_t kPerEntryMinElems = 1L << 14;  // robust merge: frames this large go entry by entry
constexpr int64_t kCoarsePixels = 1L << 17;
constexpr int64_t kSample = 1L << 18;
constexpr double kConfidenceSpread = 0.02;  // confidence 0.5 where the entries' spread is 1 % of [-1, 1]

std::pair<double, double> onto_unit_range(double lo, double hi) {  // the affine mapping [lo, hi] onto [-1, 1]
  const double a = hi > lo ? 2.0 / (hi - lo) : 1.0;
  return {a, -1.0 - a * lo};
}

at::Tensor moments(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w) {
  const at::Tensor wx = w * x;
  return at::stack({w.sum({1, 2}), wx.sum({1, 2}), (w * y).sum({1, 2}), (wx * x).sum({1, 2}), (wx * y).sum({1, 2})}, 1);
}

at::Tensor cauchy_weights(const at::Tensor& r, double delta) {
  const at::Tensor q = r / delta;
  return 1.0 / (1.0 + q * q);
}

std::pair<double, double> fit(const at::Tensor& m, double s_prev, double t_prev) {  // m: fp64 [5]
  auto opts = m.options();
  auto [s, t] = solve_scale_shift(m.unsqueeze(0), at::full({1}, s_prev, opts), at::full({1}, t_prev, opts), 1e-10,
                                  at::full({1}, s_prev, opts));
  return {s.item<double>(), t.item<double>()};
}

at::Tensor strided_sample(const at::Tensor& t) { return t.reshape(-1).slice(0, 0, c10::nullopt, std::max<int64_t>(1, t.numel() / kSample)); }

at::Tensor frame_mean(const std::vector<at::Tensor>& values, const std::vector<Group>& groups, int64_t n,
                      const std::vector<at::Tensor>* weights) {
  const int64_t P = values[0].size(-1);
  auto opts = values[0].options().dtype(at::kFloat);
  at::Tensor acc = at::zeros({n, P}, opts);
  at::Tensor cnt = at::zeros({n}, opts);
  at::Tensor wacc = weights ? at::zeros({n, P}, opts) : at::Tensor();
  for (size_t g = 0; g < groups.size(); ++g) {
    const at::Tensor idx = groups[g].indices.reshape(-1).to(acc.device(), at::kLong);  // index_add_: same device
    const int64_t K = values[g].size(0), L = values[g].size(1);
    const double gw = static_cast<float>(groups[g].weight);
    if (!weights) {
      acc.index_add_(0, idx, values[g].reshape({K * L, P}) * gw);
    } else {
      acc.index_add_(0, idx, (values[g] * (*weights)[g]).reshape({K * L, P}) * gw);
      wacc.index_add_(0, idx, (*weights)[g].reshape({K * L, P}) * gw);
    }
    cnt.index_add_(0, idx, at::full({K * L}, gw, opts));
  }
  if (!weights) return acc / cnt.unsqueeze(1);
  return acc / wacc.clamp_min(1e-12);
}

std::vector<std::pair<at::Tensor, at::Tensor>> procrustes(const std::vector<Group>& groups, int64_t n,
                                                          std::vector<std::pair<at::Tensor, at::Tensor>> params,
                                                          int iters, int inner, double c) {
  std::vector<at::Tensor> pix_w;
  for (int it = 0; it < iters; ++it) {
    std::vector<at::Tensor> a;
    for (size_t g = 0; g < groups.size(); ++g)
      a.push_back(groups[g].depth * params[g].first.view({-1, 1, 1}) + params[g].second.view({-1, 1, 1}));
    at::Tensor T = frame_mean(a, groups, n, pix_w.empty() ? nullptr : &pix_w);
    // gauge: the consensus keeps median 0 and MAD 1
    const at::Tensor med = strided_sample(T).median();
    const double mad = strided_sample((T - med).abs()).median().clamp_min(1e-12).item<double>();
    T = (T - med) / mad;
    std::vector<at::Tensor> res;
    for (size_t g = 0; g < groups.size(); ++g) res.push_back((a[g] - T.index({groups[g].indices})).reshape(-1));
    const at::Tensor r = at::cat(res);
    const at::Tensor rsub = r.slice(0, 0, c10::nullopt, std::max<int64_t>(1, r.numel() / kSample));
    const double robust_sigma = (rsub.abs().median().clamp_min(1e-12) * kMadToSigma).item<float>();
    const double delta = c * robust_sigma;
    std::vector<std::pair<at::Tensor, at::Tensor>> next;
    for (size_t g = 0; g < groups.size(); ++g) {
      const at::Tensor y = T.index({groups[g].indices});
      at::Tensor s = params[g].first, t = params[g].second;
      for (int k = 0; k < inner; ++k) {
        const at::Tensor& x = groups[g].depth;
        const at::Tensor w = cauchy_weights(s.view({-1, 1, 1}) * x + t.view({-1, 1, 1}) - y, delta);
        const at::Tensor m = moments(x, y, w);
        const int64_t K = m.size(0);
        auto d = m.options().dtype(at::kDouble);
        std::tie(s, t) = solve_scale_shift(m, at::ones({K}, d), at::zeros({K}, d), 1e-10, s);
      }
      next.emplace_back(s, t);
    }
    params = std::move(next);
    pix_w.clear();
    for (size_t g = 0; g < groups.size(); ++g) {
      const at::Tensor rr = groups[g].depth * params[g].first.view({-1, 1, 1}) + params[g].second.view({-1, 1, 1}) -
                            T.index({groups[g].indices});
      pix_w.push_back(cauchy_weights(rr, delta));
    }
  }
  return params;
}

}  // namespace

at::Tensor solver_copy(const at::Tensor& depth) {
  const int64_t H = depth.size(-2), W = depth.size(-1);
  at::Tensor sub = depth.slice(-2, kBorder, std::max(kBorder, H - kBorder))
                       .slice(-1, kBorder, std::max(kBorder, W - kBorder))
                       .slice(-2, 0, c10::nullopt, kFactor)
                       .slice(-1, 0, c10::nullopt, kFactor);
  if (sub.numel() == 0)
    fail(RD_ERR_INVALID_ARGUMENT, "frames of " + std::to_string(W) + "x" + std::to_string(H) +
                                      " pixels are too small to align (need > 4)");
  auto shape = sub.sizes().vec();
  shape.pop_back();
  shape.back() = -1;
  return sub.reshape(shape);
}

std::pair<at::Tensor, at::Tensor> solve_scale_shift(const at::Tensor& moments_in, const at::Tensor& prior_scale,
                                                    const at::Tensor& prior_shift, double rcond,
                                                    const at::Tensor& fallback_scale) {
  const at::Tensor m = moments_in.to(at::kDouble);
  const at::Tensor s0 = m.select(1, 0), sx = m.select(1, 1), sy = m.select(1, 2), sxx = m.select(1, 3),
                   sxy = m.select(1, 4);
  const at::Tensor ps = prior_scale.to(at::kDouble), pt = prior_shift.to(at::kDouble),
                   fs = fallback_scale.to(at::kDouble);
  const at::Tensor rs = at::zeros_like(s0);  // no ridge
  const at::Tensor a11 = sxx + rs, a22 = s0 + rs;
  const at::Tensor det = a11 * a22 - sx * sx;
  const at::Tensor scale_ref = a11 * a22;
  const at::Tensor regular = (scale_ref > 0).logical_and(det > rcond * scale_ref);
  const at::Tensor det_safe = at::where(regular, det, at::ones_like(det));
  const at::Tensor b1 = sxy + rs * ps, b2 = sy + rs * pt;
  const at::Tensor s_full = (a22 * b1 - sx * b2) / det_safe;
  const at::Tensor t_full = (a11 * b2 - sx * b1) / det_safe;
  const at::Tensor has_mass = a22 > 0;
  const at::Tensor t_fb = at::where(has_mass, (b2 - sx * fs) / at::where(has_mass, a22, at::ones_like(a22)), pt);
  at::Tensor s = at::where(regular, s_full, fs), t = at::where(regular, t_full, t_fb);
  const auto out = moments_in.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return {s.to(out), t.to(out)};
}

at::Tensor weighted_moments(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w) { return moments(x, y, w); }

std::pair<double, double> solve_one(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w, int iters) {
  at::Tensor m = moments(x.unsqueeze(0), y.unsqueeze(0), w.unsqueeze(0))[0].to(at::kDouble);
  auto [s, t] = fit(m, 1.0, 0.0);
  at::Tensor v = w;
  const at::Tensor mask = w > 0;
  for (int it = 0; it < iters; ++it) {
    const at::Tensor r = (x * s + t - y).index({mask});
    if (r.numel() == 0) break;
    const double delta = std::max(kCauchyC * kMadToSigma * r.abs().median().item<double>(), 1e-6);
    v = w * cauchy_weights(x * s + t - y, delta);
    m = moments(x.unsqueeze(0), y.unsqueeze(0), v.unsqueeze(0))[0].to(at::kDouble);
    std::tie(s, t) = fit(m, s, t);
  }
  // symmetric slope (reduced major axis): least squares of y on x would shrink it by the noise in x
  const auto mm = m.accessor<double, 1>();
  const double S1 = mm[0], Sx = mm[1], Sy = mm[2], Sxx = mm[3];
  const double Sxy = mm[4];
  const double Syy = moments(y.unsqueeze(0), y.unsqueeze(0), v.unsqueeze(0))[0][3].item<float>();
  if (S1 > 0) {
    const double vx = Sxx / S1 - (Sx / S1) * (Sx / S1), vy = Syy / S1 - (Sy / S1) * (Sy / S1),
                 cxy = Sxy / S1 - Sx * Sy / (S1 * S1);
    if (vx > 1e-12 * std::max(vy, 1e-300) && vy > 0 && cxy != 0) {
      s = std::copysign(std::sqrt(vy / vx), cxy);
      t = (Sy - s * Sx) / S1;
    }
  }
  return {s, t};
}

std::vector<std::pair<at::Tensor, at::Tensor>> solve_robust(const std::vector<Group>& groups, int64_t n, int iters,
                                                            int fine_iters,
                                                            std::vector<std::pair<at::Tensor, at::Tensor>> init) {
  int64_t total = 0;
  for (const auto& g : groups) total += g.depth.numel();
  const int64_t step = std::max<int64_t>(1, total / kCoarsePixels);
  for (auto& p : init) p = {p.first.to(at::kFloat), p.second.to(at::kFloat)};
  if (step == 1) return procrustes(groups, n, std::move(init), iters, 2, kCauchyC);
  std::vector<Group> coarse;
  for (const auto& g : groups)
    coarse.push_back({g.dilation, g.weight, g.indices, g.depth.slice(2, 0, c10::nullopt, step).contiguous()});
  auto params = procrustes(coarse, n, std::move(init), iters, 2, kCauchyC);
  return procrustes(groups, n, std::move(params), fine_iters, 2, kCauchyC);
}

OnlineAligner::OnlineAligner(int snippet_len, int lag) : L_(snippet_len), lag_(lag) {
  if (lag < 0) fail(RD_ERR_INVALID_ARGUMENT, "lag must be >= 0, got " + std::to_string(lag));
}

void OnlineAligner::note_frame(int64_t index, double timestamp, int64_t timestamp_ns, Clock::time_point pushed) {
  meta_[index] = {timestamp, timestamp_ns, pushed};
}

at::Tensor OnlineAligner::consensus(int64_t f) const {
  at::Tensor acc;
  double wsum = 0.0;
  for (const auto& e : entries_.at(f)) {
    at::Tensor v = (e.sn->x[e.j] * e.sn->s + e.sn->t) * e.sn->weight;
    acc = acc.defined() ? acc + v : v;
    wsum += e.sn->weight;
  }
  return acc / wsum;
}

std::pair<double, double> OnlineAligner::solve(const at::Tensor& x, const std::vector<int64_t>& frames) const {
  at::Tensor y = at::zeros_like(x), w = at::zeros_like(x);
  for (size_t j = 0; j < frames.size(); ++j) {
    const int64_t f = frames[j];
    auto fz = frozen_.find(f);
    if (fz != frozen_.end()) {
      y[j].copy_(fz->second);
      w[j].fill_(kFrozenWeight);
    } else {
      auto it = entries_.find(f);
      if (it != entries_.end() && !it->second.empty()) {
        y[j].copy_(consensus(f));
        w[j].fill_(kProvisionalWeight);
      }
    }
  }
  if (w.sum().item<double>() == 0) fail(RD_ERR_RUNTIME, "snippet shares no frame with the stream so far");
  return solve_one(x, y, w);
}

void OnlineAligner::add(int dilation, const std::vector<int64_t>& frames, const at::Tensor& depth, double weight) {
  if (!at::isfinite(depth).all().item<bool>())
    fail(RD_ERR_RUNTIME, "online snippet inference: snippet depth contains NaN or Inf (model or precision problem; "
                         "try an fp32 engine)");
  const at::Tensor x = solver_copy(depth).to(at::kFloat);
  double s, t;
  if (!first_) {
    std::tie(s, t) = onto_unit_range(depth.min().item<double>(), depth.max().item<double>());
  } else {
    std::tie(s, t) = solve(x, frames);
  }
  auto sn = std::make_shared<Snippet>(Snippet{dilation, frames, x, s, t, weight, 0});
  if (!first_) first_ = sn;
  for (size_t j = 0; j < frames.size(); ++j) {
    if (frames[j] < next_to_finish_) continue;  // finished frames are final
    entries_[frames[j]].push_back({sn, static_cast<int>(j), depth[j]});
    sn->open += 1;
  }
  if (sn->open == 0) sn->x = at::Tensor();
}

void OnlineAligner::solve_window() {
  std::vector<std::shared_ptr<Snippet>> snips;
  std::set<const Snippet*> seen;
  for (const auto& [f, ents] : entries_)
    for (const auto& e : ents)
      if (seen.insert(e.sn.get()).second) snips.push_back(e.sn);
  if (snips.size() < 2) return;
  std::set<int64_t> all_frames;
  for (const auto& sn : snips) all_frames.insert(sn->frames.begin(), sn->frames.end());
  std::map<int64_t, int64_t> pos;
  for (int64_t f : all_frames) pos.emplace(f, static_cast<int64_t>(pos.size()));
  std::vector<std::pair<int, std::vector<std::shared_ptr<Snippet>>>> by_dilation;  // in first-seen order
  for (const auto& sn : snips) {
    auto it = std::find_if(by_dilation.begin(), by_dilation.end(), [&](const auto& p) { return p.first == sn->dilation; });
    if (it == by_dilation.end()) {
      by_dilation.push_back({sn->dilation, {}});
      it = by_dilation.end() - 1;
    }
    it->second.push_back(sn);
  }
  snips.clear();
  std::vector<Group> groups;
  std::vector<std::pair<at::Tensor, at::Tensor>> init;
  for (const auto& [d, members] : by_dilation) {
    std::vector<int64_t> idx;
    std::vector<at::Tensor> xs;
    std::vector<float> sc, sh;
    for (const auto& sn : members) {
      snips.push_back(sn);
      for (int64_t f : sn->frames) idx.push_back(pos.at(f));
      xs.push_back(sn->x);
      sc.push_back(static_cast<float>(sn->s));
      sh.push_back(static_cast<float>(sn->t));
    }
    const int64_t K = static_cast<int64_t>(members.size());
    const auto dev = members[0]->x.device();
    groups.push_back({d, std::round(members[0]->weight), at::tensor(idx, at::kLong).reshape({K, -1}).to(dev), at::stack(xs)});
    init.emplace_back(at::tensor(sc, at::kFloat).to(dev), at::tensor(sh, at::kFloat).to(dev));
  }
  const auto solved = solve_robust(groups, static_cast<int64_t>(pos.size()), kWindowIters, 2, std::move(init));
  std::vector<std::pair<double, double>> params;
  for (const auto& [scs, shs] : solved)
    for (int64_t k = 0; k < scs.size(0); ++k) params.emplace_back(scs[k].item<double>(), shs[k].item<double>());
  double a, b;
  if (!frozen_.empty()) {
    // consensus of the new solution on the frozen frames it overlaps, against their frozen values
    std::vector<int64_t> order;
    std::map<int64_t, at::Tensor> acc;
    std::map<int64_t, double> wsum;
    for (size_t i = 0; i < snips.size(); ++i) {
      const auto& sn = snips[i];
      for (size_t j = 0; j < sn->frames.size(); ++j) {
        const int64_t f = sn->frames[j];
        if (!frozen_.count(f)) continue;
        const at::Tensor v = (sn->x[j] * params[i].first + params[i].second) * sn->weight;
        auto it = acc.find(f);
        if (it == acc.end()) {
          order.push_back(f);
          acc.emplace(f, v);
          wsum[f] = sn->weight;
        } else {
          it->second = it->second + v;
          wsum[f] += sn->weight;
        }
      }
    }
    if (acc.empty()) return;
    std::vector<at::Tensor> xs, ys;
    for (int64_t f : order) {
      xs.push_back(acc.at(f) / wsum.at(f));
      ys.push_back(frozen_.at(f));
    }
    const at::Tensor x = at::cat(xs), y = at::cat(ys);
    std::tie(a, b) = solve_one(x.unsqueeze(0), y.unsqueeze(0), at::ones_like(x).unsqueeze(0));
  } else {
    const auto it = std::find(snips.begin(), snips.end(), first_);
    const auto [sc, sh] = it != snips.end() ? params[it - snips.begin()] : std::make_pair(first_->s, first_->t);
    std::vector<at::Tensor> ds;
    for (int64_t f : first_->frames) {
      auto e = entries_.find(f);
      if (e == entries_.end()) continue;
      for (const auto& en : e->second)
        if (en.sn == first_) ds.push_back(en.depth);
    }
    const at::Tensor d = at::stack(ds);
    const double lo = d.min().item<double>() * sc + sh, hi = d.max().item<double>() * sc + sh;
    std::tie(a, b) = onto_unit_range(std::min(lo, hi), std::max(lo, hi));
  }
  for (size_t i = 0; i < snips.size(); ++i) {
    snips[i]->s = a * params[i].first;
    snips[i]->t = a * params[i].second + b;
  }
}

at::Tensor OnlineAligner::merge(const std::vector<Entry>& ents, const at::Tensor& cons) const {
  double wsum = 0.0;
  at::Tensor depth;
  for (const auto& e : ents) {
    wsum += e.sn->weight;
    at::Tensor v = (e.depth.to(at::kFloat) * e.sn->s + e.sn->t) * e.sn->weight;
    depth = depth.defined() ? depth + v : v;
  }
  depth = depth / wsum;
  std::vector<at::Tensor> rs;
  for (const auto& e : ents) rs.push_back((e.sn->x[e.j] * e.sn->s + e.sn->t - cons).abs().reshape(-1));
  const at::Tensor d = at::cat(rs).median().unsqueeze(0).to(at::kFloat) * (kCauchyC * kMadToSigma);
  const float delta = d.item<float>();
  if (static_cast<int>(ents.size()) < kMinEntries || !(delta > 0) || !std::isfinite(delta)) return depth;
  // one Cauchy-reweighted pass around the mean (rd_engine.coalign.merge.robust_mean)
  at::Tensor num = at::zeros_like(depth), den = at::zeros_like(depth);
  const float inv = 1.0f / delta;
  if (depth.numel() >= kPerEntryMinElems) {
    const double inv_d2 = std::min(static_cast<double>(inv * inv), static_cast<double>(std::numeric_limits<float>::max()));
    const at::Tensor one = at::ones_like(depth);
    for (const auto& e : ents) {
      const double s = static_cast<float>(e.sn->s), t = static_cast<float>(e.sn->t), w = static_cast<float>(e.sn->weight);
      at::Tensor v = e.depth.to(at::kFloat).mul(s).add(t);
      at::Tensor r = v - depth;
      r = at::addcmul(one, r, r, inv_d2).reciprocal_();
      den.add_(r, w);
      num.addcmul_(r, v, w);
    }
  } else {
    for (const auto& e : ents) {
      const at::Tensor s = at::scalar_tensor(e.sn->s, at::kFloat), t = at::scalar_tensor(e.sn->t, at::kFloat),
                       w = at::scalar_tensor(e.sn->weight, at::kFloat);
      const at::Tensor v = e.depth.to(at::kFloat) * s + t;
      const at::Tensor q = (v - depth) * inv;
      const at::Tensor p = w / (1.0 + q * q);
      num.add_(p * v);
      den.add_(p);
    }
  }
  return at::where(den > 0, num / den, depth);
}

at::Tensor OnlineAligner::confidence(const std::vector<Entry>& ents, const at::Tensor& depth) {
  // per pixel 1 / (1 + spread / kConfidenceSpread), spread the entries' weighted standard deviation around
  // the merged value; 0 where one entry covers the frame (rd_engine.coalign.merge.confidence_from_spread)
  double wsum = 0.0;
  at::Tensor var;
  for (const auto& e : ents) {
    wsum += e.sn->weight;
    at::Tensor v = ((e.depth.to(at::kFloat) * e.sn->s + e.sn->t) - depth).square_() * e.sn->weight;
    var = var.defined() ? var + v : v;
  }
  const at::Tensor spread = (var / wsum).sqrt_();
  if (ents.size() < 2) return at::zeros_like(spread);
  return at::reciprocal(spread / kConfidenceSpread + 1.0) * 1.0;
}

std::vector<FinishedFrame> OnlineAligner::finish(std::optional<int64_t> upto, int64_t max_window) {
  std::vector<int64_t> ready;
  int64_t f = next_to_finish_;
  while (true) {
    auto it = entries_.find(f);
    if (it == entries_.end() || it->second.empty()) break;
    if (upto && std::max<int64_t>(f + lag_, L_ - 1) > *upto) break;
    ready.push_back(f++);
  }
  if (ready.empty()) return {};
  if (lag_ > 0) solve_window();
  std::vector<FinishedFrame> out;
  const auto now = Clock::now();
  for (int64_t fr : ready) {
    const at::Tensor cons = consensus(fr);
    frozen_[fr] = cons;
    std::vector<Entry> ents = std::move(entries_.at(fr));
    entries_.erase(fr);
    at::Tensor depth = merge(ents, cons);
    at::Tensor conf = confidence(ents, depth);
    for (auto& e : ents) {
      e.sn->open -= 1;
      if (e.sn->open == 0 && e.sn != first_) e.sn->x = at::Tensor();
    }
    double ts = std::numeric_limits<double>::quiet_NaN(), latency = std::numeric_limits<double>::quiet_NaN();
    int64_t ts_ns = 0;
    auto m = meta_.find(fr);
    if (m != meta_.end()) {
      ts = m->second.timestamp;
      ts_ns = m->second.timestamp_ns;
      latency = std::chrono::duration<double>(now - m->second.pushed).count();
      meta_.erase(m);
    }
    FinishedFrame done{fr, ts, ts_ns, depth.to(at::kCPU).contiguous(), latency};
    done.confidence = conf.to(at::kCPU).contiguous();
    out.push_back(std::move(done));
    next_to_finish_ = fr + 1;
  }
  for (auto it = frozen_.begin(); it != frozen_.end();) {
    it = it->first < next_to_finish_ - max_window - 1 ? frozen_.erase(it) : std::next(it);
  }
  return out;
}

}  // namespace rd
