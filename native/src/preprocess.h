// Frames into the model: the size the model sees, resizing, normalization and padding.
// Mirrors rd_engine.io.video.processed_size / preprocess and rd_engine.pipeline.inference.pad8.
#pragma once

#include <ATen/Tensor.h>

#include <utility>

namespace rd {

using Size = std::pair<int, int>;  // (width, height)

// Longest edge scaled to `res` (up or down), each side truncated, at least 1; res <= 0 keeps the size.
Size processed_size(int width, int height, int res);

// (width, height) rounded up to multiples of 8, what the VAE is given.
Size padded_size(Size size);

// uint8 RGB [H, W, 3] (any strides) -> float32 [1, 3, h, w] in [-1, 1] on `device`: bilinear resize
// with antialiasing to `size`, then x / 255 * 2 - 1.
at::Tensor preprocess(const at::Tensor& rgb, Size size, const at::Device& device);

// Replicate-pad [B, C, H, W] from `size` to `padded` (right and bottom).
at::Tensor pad_to(const at::Tensor& x, Size size, Size padded);

// Depth [H, W] resized to (width, height) (bilinear with antialiasing, the input size of a stream).
at::Tensor resize_depth(const at::Tensor& depth, Size size);

}  // namespace rd
