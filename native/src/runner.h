// One engine component (a compiled graph) that takes tensors in its contract's input order.
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <memory>
#include <string>
#include <vector>

namespace rd {

class ComponentRunner {
 public:
  virtual ~ComponentRunner() = default;
  // Inputs in contract order (on the runner's device, in its dtypes); returns the outputs.
  virtual std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs) = 0;
};

// An AOTInductor package (.pt2) loaded through libtorch.
std::unique_ptr<ComponentRunner> make_aoti_runner(const std::string& package, const c10::Device& device);

#ifdef RD_HAVE_TENSORRT
// A TensorRT plan, its inputs bound by name (TensorRT 10 API). Built only where TensorRT's headers exist.
std::unique_ptr<ComponentRunner> make_tensorrt_runner(const std::string& plan, const std::vector<std::string>& inputs,
                                                      const c10::Device& device);
std::string tensorrt_version();  // "10.x.y" of the linked library
#endif

}  // namespace rd
