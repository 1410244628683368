// TensorRT plans from the C++ runtime (-DRD_WITH_TENSORRT=ON, compiled only where NvInfer.h is found).
// Written against the TensorRT 10 runtime API (IRuntime, ICudaEngine, IExecutionContext::enqueueV3),
// as the Python backend (rd_engine.backends.tensorrt_backend) uses it.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <NvInferRuntime.h>
#include <c10/cuda/CUDAGuard.h>
#include <NvInferVersion.h>

#include <cstdio>
#include <fstream>
#include <iterator>

#include "errors.h"
#include "log.h"
#include "runner.h"

namespace rd {
namespace {

class Logger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    const int32_t level = severity <= Severity::kERROR ? RD_LOG_ERROR
                          : severity == Severity::kWARNING ? RD_LOG_WARNING
                          : severity == Severity::kINFO    ? RD_LOG_INFO
                                                           : RD_LOG_DEBUG;
    log_message(level, std::string("tensorrt: ") + msg);
  }
};

Logger& logger() {
  static Logger instance;
  return instance;
}

at::ScalarType to_torch(nvinfer1::DataType t) {
  switch (t) {
    case nvinfer1::DataType::kFLOAT: return at::kFloat;
    case nvinfer1::DataType::kHALF: return at::kHalf;
    case nvinfer1::DataType::kBF16: return at::kBFloat16;
    case nvinfer1::DataType::kINT32: return at::kInt;
    case nvinfer1::DataType::kINT64: return at::kLong;
    default: fail(RD_ERR_ENGINE, "TensorRT plan: an input or output of an unsupported data type");
  }
}

class TensorRTRunner : public ComponentRunner {
 public:
  TensorRTRunner(const std::string& path, std::vector<std::string> inputs, const c10::Device& device)
      : inputs_(std::move(inputs)), device_(device) {
    // deserialize and create the context on the engine's device (cuda:N), not the current one
    const c10::cuda::CUDAGuard guard(device_);
    std::ifstream in(path, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.empty()) fail(RD_ERR_IO, "cannot read TensorRT plan " + path);
    runtime_.reset(nvinfer1::createInferRuntime(logger()));
    if (runtime_) engine_.reset(runtime_->deserializeCudaEngine(bytes.data(), bytes.size()));
    if (!engine_) fail(RD_ERR_ENGINE, "TensorRT could not load " + path + " (corrupt, or built by another TensorRT)");
    for (int i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* name = engine_->getIOTensorName(i);
      if (engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kOUTPUT) outputs_.emplace_back(name);
    }
    context_.reset(engine_->createExecutionContext());
    if (!context_) fail(RD_ERR_RUNTIME, "TensorRT could not create an execution context for " + path);
  }

  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs) override {
    const c10::cuda::CUDAGuard guard(device_);  // TensorRT runs in the current device's context
    std::vector<at::Tensor> held;  // inputs converted to the plan's dtypes, alive until the stream is done
    for (size_t i = 0; i < inputs_.size(); ++i) {
      const char* name = inputs_[i].c_str();
      at::Tensor x = inputs.at(i).to(device_, to_torch(engine_->getTensorDataType(name))).contiguous();
      nvinfer1::Dims dims;
      dims.nbDims = static_cast<int32_t>(x.dim());
      for (int64_t d = 0; d < x.dim(); ++d) dims.d[d] = x.size(d);
      if (!context_->setInputShape(name, dims))
        fail(RD_ERR_PROFILE, "TensorRT: input " + inputs_[i] + " is outside the plan's profile");
      context_->setTensorAddress(name, x.data_ptr());
      held.push_back(std::move(x));
    }
    std::vector<at::Tensor> outs;
    for (const auto& name : outputs_) {
      const nvinfer1::Dims d = context_->getTensorShape(name.c_str());
      std::vector<int64_t> shape(d.d, d.d + d.nbDims);
      at::Tensor y = at::empty(shape, at::TensorOptions().device(device_).dtype(to_torch(engine_->getTensorDataType(name.c_str()))));
      context_->setTensorAddress(name.c_str(), y.data_ptr());
      outs.push_back(std::move(y));
    }
    const auto stream = at::cuda::getCurrentCUDAStream(device_.index());
    if (!context_->enqueueV3(stream.stream())) fail(RD_ERR_RUNTIME, "TensorRT failed to run a plan");
    for (auto& x : held) x.record_stream(stream);
    return outs;
  }

 private:
  std::vector<std::string> inputs_, outputs_;
  c10::Device device_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
};

}  // namespace

std::unique_ptr<ComponentRunner> make_tensorrt_runner(const std::string& plan, const std::vector<std::string>& inputs,
                                                      const c10::Device& device) {
  return std::make_unique<TensorRTRunner>(plan, inputs, device);
}

std::string tensorrt_version() {
  return std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) + "." +
         std::to_string(NV_TENSORRT_PATCH);
}

}  // namespace rd
