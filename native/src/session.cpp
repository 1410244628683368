#include "session.h"

#include <ATen/ATen.h>
#include <ATen/core/Generator.h>
#include <ATen/Context.h>

#include <algorithm>
#include <random>

#include "errors.h"

namespace rd {
namespace {

// Adds the seconds from its construction to its destruction to `slot`.
class Lap {
 public:
  explicit Lap(double& slot) : slot_(slot), t0_(Clock::now()) {}
  ~Lap() { slot_ += std::chrono::duration<double>(Clock::now() - t0_).count(); }

 private:
  double& slot_;
  Clock::time_point t0_;
};

}  // namespace

std::pair<int, std::vector<int>> preset_values(const std::string& name) {
  if (name == "fast") return {768, {1, 25}};
  if (name == "fast1024") return {1024, {1, 25}};
  if (name == "full") return {1024, {1, 10, 25}};
  if (name == "paper") return {768, {1, 10, 25}};
  fail(RD_ERR_INVALID_ARGUMENT, "preset must be one of fast, fast1024, full, paper, got '" + name + "'");
}

std::vector<std::pair<int, std::vector<int64_t>>> snippets_ending_at(int64_t end, const std::vector<int>& dilations,
                                                                   int snippet_len) {
  std::vector<std::pair<int, std::vector<int64_t>>> out;
  for (int d : dilations) {
    const int64_t start = end - static_cast<int64_t>(snippet_len - 1) * d;
    if (start < 0) continue;
    std::vector<int64_t> frames;
    for (int64_t f = start; f <= end; f += d) frames.push_back(f);
    out.emplace_back(d, std::move(frames));
  }
  return out;
}

Session::Session(std::shared_ptr<Engine> engine, SessionOptions options)
    : engine_(std::move(engine)), options_(std::move(options)), L_(options_.snippet_len), aligner_(L_, options_.lag) {
  auto [preset_res, preset_dilations] = preset_values(options_.preset);
  res_ = options_.res < 0 ? preset_res : options_.res;
  std::vector<int> requested = options_.dilations.empty() ? preset_dilations : options_.dilations;
  std::string listed;
  for (int d : requested) listed += (listed.empty() ? "" : ", ") + std::to_string(d);
  if (requested.empty() || std::any_of(requested.begin(), requested.end(), [](int d) { return d < 1; }))
    fail(RD_ERR_INVALID_ARGUMENT, "dilations must be positive integers, got [" + listed + "]");
  if (std::find(requested.begin(), requested.end(), 1) == requested.end())
    fail(RD_ERR_INVALID_ARGUMENT, "dilations must include 1 (got [" + listed + "])");
  for (int d : requested) weights_[d] += 1.0;
  for (const auto& [d, w] : weights_) dilations_.push_back(d);  // std::map: sorted, distinct
  window_ = static_cast<int64_t>(L_ - 1) * dilations_.back() + 1;
  engine_->check_snippet_len(L_);
  steps_ = engine_->manifest().ddim.schedule(options_.init_steps);
  if (options_.seed >= 0) {
    seed_ = options_.seed;
  } else {
    std::random_device rd;
    seed_ = std::uniform_int_distribution<int64_t>(0, (1LL << 31) - 2)(rd);
  }
}

Size Session::output_size() const {
  const int w = out_w_.load(), h = out_h_.load();
  if (w <= 0) fail(RD_ERR_STATE, "the output size is known after the first frame");
  return {w, h};
}

void Session::check_usable(const char* call) const {
  if (!broken_.empty())
    fail(RD_ERR_SESSION_BROKEN, std::string(call) + ": the session is broken (" + broken_ +
                                    "); rd_session_reset or close it");
}

void Session::check_cancel() {
  if (cancel_.exchange(false)) fail(RD_ERR_CANCELLED, "cancelled by rd_session_cancel");
}

template <typename F>
auto Session::mutating(F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const std::exception& e) {
    std::string what = e.what();
    broken_ = what.substr(0, what.find('\n'));
    if (broken_.empty()) broken_ = "an earlier call failed";
    throw;
  } catch (...) {
    broken_ = "an earlier call failed";
    throw;
  }
}

int Session::push(const at::Tensor& rgb, double timestamp, int64_t timestamp_ns, const OnlineMetric::Points* anchors) {
  check_usable("push");
  if (closed_) fail(RD_ERR_STATE, "stream already flushed: no frame can follow");
  const auto t0 = Clock::now();
  Lap total(timing_.total);
  const int h = static_cast<int>(rgb.size(0)), w = static_cast<int>(rgb.size(1));
  const Size input{w, h};
  // checks first: a refused frame leaves the session as it was
  if (!size_) {
    const Size size = processed_size(w, h, res_);
    if (std::min(size.first, size.second) < 8)
      fail(RD_ERR_INVALID_ARGUMENT, "processed size " + std::to_string(size.first) + "x" + std::to_string(size.second) +
                                        " is too small (at least 8x8 pixels)");
    engine_->check_size(size);
    size_ = size;
    input_size_ = input;
    padded_ = padded_size(size);
    const Size out = options_.restore_input_size ? input : size;
    out_h_.store(out.second);
    out_w_.store(out.first);
  } else if (input != *input_size_) {
    fail(RD_ERR_PROFILE, "frame size changed mid-stream: " + std::to_string(w) + "x" + std::to_string(h) + " after " +
                             std::to_string(input_size_->first) + "x" + std::to_string(input_size_->second));
  }
  return mutating([&] {
    check_cancel();
    const int64_t i = n_;  // index in the shot
    if (anchors) {  // in processed-frame pixels, by stream position (rd_engine.online.session._note_anchors)
      OnlineMetric::Points p;
      p.z = anchors->z;
      p.x.reserve(anchors->x.size());
      p.y.reserve(anchors->y.size());
      for (double x : anchors->x) p.x.push_back(to_processed(x, input_size_->first, size_->first));
      for (double y : anchors->y) p.y.push_back(to_processed(y, input_size_->second, size_->second));
      if (!metric_) metric_.emplace();
      metric_->note(shot_start_ + i, std::move(p));
    }
    at::Tensor x, lat;
    {
      Lap lap(timing_.preprocess);
      x = pad_to(preprocess(rgb, *size_, engine_->device()).to(engine_->dtype()), *size_, padded_);
    }
    {
      Lap lap(timing_.encode);
      lat = engine_->encode(x);
    }
    if (!noise_.defined()) {
      // the reference's draw: one Gaussian [1, 4, h, w] from a fresh generator seeded with the run's seed
      at::Generator def = at::globalContext().defaultGenerator(engine_->device());
      at::Generator gen;
      {
        std::lock_guard<std::mutex> lock(def.mutex());  // other threads may draw from the default generator
        gen = def.clone();
      }
      gen.set_current_seed(static_cast<uint64_t>(seed_));
      noise_ = at::randn({1, lat.size(1), lat.size(2), lat.size(3)}, gen,
                         at::TensorOptions().device(engine_->device()).dtype(engine_->dtype()));
    }
    n_ += 1;
    timing_.frames = shot_start_ + n_;
    aligner_.note_frame(i, timestamp, timestamp_ns, t0);
    latents_[i] = lat[0];
    const auto ends = snippets_ending_at(i, dilations_, L_);
    if (!ends.empty()) run(ends);
    for (auto it = latents_.begin(); it != latents_.end();)
      it = it->first <= i - window_ ? latents_.erase(it) : std::next(it);
    std::vector<FinishedFrame> done;
    {
      Lap lap(timing_.align);
      done = aligner_.finish(i, window_ + options_.lag);
    }
    const int count = static_cast<int>(done.size());
    emit(std::move(done));
    return count;
  });
}

void Session::run(const std::vector<std::pair<int, std::vector<int64_t>>>& snippets, bool padded) {
  std::vector<at::Tensor> rows;
  for (const auto& [d, frames] : snippets)
    for (int64_t f : frames) rows.push_back(latents_.at(f));
  const int64_t S = static_cast<int64_t>(snippets.size());
  const at::Tensor rgb_flat = at::stack(rows);  // [S * L, 4, h, w]
  const at::Tensor rgb = rgb_flat.reshape({S, L_, rgb_flat.size(1), rgb_flat.size(2), rgb_flat.size(3)});
  at::Tensor x = noise_.expand({S, L_, noise_.size(1), noise_.size(2), noise_.size(3)}).clone();
  {
    Lap lap(timing_.denoise);
    for (const auto& step : steps_) {
      check_cancel();
      x = engine_->denoise(rgb, x, step);
    }
  }
  const at::Tensor flat = x.reshape({S * L_, x.size(2), x.size(3), x.size(4)});
  std::vector<at::Tensor> parts;
  const auto [w, h] = *size_;
  at::Tensor depth;
  {
    Lap lap(timing_.decode);
    for (int64_t a = 0; a < flat.size(0); a += options_.vae_batch) {
      check_cancel();
      parts.push_back(engine_->decode(flat.slice(0, a, std::min<int64_t>(flat.size(0), a + options_.vae_batch)))
                          .select(1, 0)
                          .slice(1, 0, h)
                          .slice(2, 0, w));
    }
    depth = at::cat(parts).reshape({S, L_, h, w});
  }
  Lap lap(timing_.align);
  for (int64_t k = 0; k < S; ++k) {
    const auto& [d, frames] = snippets[k];
    aligner_.add(d, frames, depth[k], padded ? 1.0 : weights_.at(d));  // the padded snippet counts once
  }
}

int Session::finish_shot() {
  if (n_ > 0 && n_ < L_) {  // 1- or 2-frame shot: one snippet repeating the last frame
    std::vector<int64_t> frames;
    for (int64_t j = 0; j < L_; ++j) frames.push_back(std::min(j, n_ - 1));
    run({{1, frames}}, /*padded=*/true);
  }
  std::vector<FinishedFrame> done;
  {
    Lap lap(timing_.align);
    done = aligner_.finish(std::nullopt, window_ + options_.lag);
  }
  const int count = static_cast<int>(done.size());
  emit(std::move(done));
  latents_.clear();
  return count;
}

int Session::flush() {
  check_usable("flush");
  if (closed_) return 0;
  Lap total(timing_.total);
  return mutating([&] {
    check_cancel();
    closed_ = true;
    return finish_shot();
  });
}

int Session::cut() {
  check_usable("cut");
  if (closed_) fail(RD_ERR_STATE, "stream already flushed: a cut cannot follow");
  if (n_ == 0) return 0;  // before any frame, or right after a cut: no empty shot
  Lap total(timing_.total);
  return mutating([&] {
    check_cancel();
    const int count = finish_shot();
    // the next frame starts a shot exactly as the first frame of a fresh session
    aligner_ = OnlineAligner(L_, options_.lag);
    noise_ = at::Tensor();
    metric_.reset();  // a shot has its own affine frame, so its own metric fit
    shot_start_ += n_;
    n_ = 0;
    return count;
  });
}

void Session::emit(std::vector<FinishedFrame> frames) {
  for (auto& f : frames) {
    f.starts_shot = f.index == 0;
    f.index += shot_start_;
    if (metric_) {  // the fit from the processed-size depth, as the Python session
      f.fit = metric_->finish(f.index, f.depth.data_ptr<float>(), static_cast<int>(f.depth.size(1)),
                              static_cast<int>(f.depth.size(0)), &f.anchors);
    }
    if (options_.restore_input_size) {
      f.depth = resize_depth(f.depth, *input_size_).contiguous();
      f.confidence = resize_depth(f.confidence, *input_size_).contiguous();
    }
    if (f.fit) {
      f.depth_m = at::empty_like(f.depth);
      to_metric(f.depth.data_ptr<float>(), f.depth.numel(), f.fit->scale, f.fit->shift, f.depth_m.data_ptr<float>());
    }
    if (options_.on_frame) {
      options_.on_frame(f);
    } else {
      std::lock_guard<std::mutex> lock(ready_mutex_);
      ready_.push_back(std::move(f));
    }
  }
}

std::optional<FinishedFrame> Session::poll() {
  std::lock_guard<std::mutex> lock(ready_mutex_);
  if (ready_.empty()) return std::nullopt;
  FinishedFrame f = std::move(ready_.front());
  ready_.pop_front();
  return f;
}

}  // namespace rd
