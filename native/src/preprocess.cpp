#include "preprocess.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace rd {

Size processed_size(int width, int height, int res) {
  if (res > 0) {
    const double f = std::min(static_cast<double>(res) / width, static_cast<double>(res) / height);
    return {std::max(1, static_cast<int>(width * f)), std::max(1, static_cast<int>(height * f))};
  }
  return {width, height};
}

Size padded_size(Size size) {
  auto up = [](int s) { return (s + 7) / 8 * 8; };
  return {up(size.first), up(size.second)};
}

at::Tensor preprocess(const at::Tensor& rgb, Size size, const at::Device& device) {
  // move as uint8 (a quarter of the bytes), then compute in float32
  at::Tensor x = rgb.unsqueeze(0).to(device).permute({0, 3, 1, 2}).to(at::kFloat);
  const auto [w, h] = size;
  if (x.size(2) != h || x.size(3) != w) {
    x = at::_upsample_bilinear2d_aa(x, {h, w}, /*align_corners=*/false, std::nullopt, std::nullopt);
  }
  return x.div(255.0).mul(2.0).sub(1.0);
}

at::Tensor pad_to(const at::Tensor& x, Size size, Size padded) {
  if (size == padded) return x;
  return at::pad(x, {0, padded.first - size.first, 0, padded.second - size.second}, "replicate");
}

at::Tensor resize_depth(const at::Tensor& depth, Size size) {
  const auto [w, h] = size;
  if (depth.size(0) == h && depth.size(1) == w) return depth;
  at::Tensor x = depth.to(at::kFloat).unsqueeze(0).unsqueeze(0);
  return at::_upsample_bilinear2d_aa(x, {h, w}, false, std::nullopt, std::nullopt)[0][0];
}

}  // namespace rd
