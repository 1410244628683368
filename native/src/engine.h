// A loaded engine folder: its manifest checks and its AOTInductor packages (or TensorRT plans).
// Mirrors rd_engine.engine_format.folder (the refusals) and rd_engine.backends.aoti_backend (the calls).
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ddim.h"
#include "preprocess.h"
#include "runner.h"

namespace rd {

struct EngineOptions {
  std::string device = "cpu";
  std::string backend = "aoti";  // aoti: the AOTInductor packages; tensorrt: the TensorRT plans
  std::string expected_weights_hash;  // empty: not checked
  bool verify_files = true;
};

// What the runtime needs from manifest.json.
struct Manifest {
  int format_version = 0;
  std::string weights_hash;
  int min_res = 0, max_res = 0;
  std::string aoti_device, aoti_precision, aoti_torch_version;
  int aoti_cc_major = -1, aoti_cc_minor = -1;  // GPU compute capability of CUDA packages
  int64_t max_vae_batch = 1, max_snippet_batch = 1;
  std::map<std::string, std::string> packages;  // component name -> relative file (AOTInductor)
  std::map<std::string, std::string> plans;     // component name -> relative file (TensorRT)
  std::map<std::string, std::vector<std::string>> input_names;  // component -> its inputs, contract order
  std::string trt_version, trt_precision, trt_gpu_name, trt_cc;
  std::map<std::string, std::pair<int64_t, std::string>> files;  // relative file -> (bytes, sha256)
  std::vector<int> snippet_lens;
  DdimSchedule ddim;
  std::map<std::string, std::string> build_args;  // flag -> value, for the rebuild hint
  std::string checkpoint;
};

// `rd-engine build` command that rebuilds `folder` from `m`'s build arguments, with `changes`.
std::string rebuild_command(const Manifest& m, const std::string& folder,
                            const std::map<std::string, std::string>& changes = {});

// SHA-256 of a file, lowercase hex.
std::string sha256_file(const std::string& path);

class Engine {
 public:
  static std::shared_ptr<Engine> open(const std::string& folder, const EngineOptions& options);
  ~Engine();

  const std::string& folder() const { return folder_; }
  const Manifest& manifest() const { return manifest_; }
  const c10::Device& device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }

  // Refuse a processed size (width, height) outside the profile (RD_ERR_PROFILE, with the rebuild command).
  void check_size(Size processed) const;
  void check_snippet_len(int snippet_len) const;

  // Run each component once on zeros of a frame of this processed (width, height).
  void warmup(Size processed);

  at::Tensor encode(const at::Tensor& frames);   // [B, 3, H, W] -> latents [B, 4, H/8, W/8]
  at::Tensor decode(const at::Tensor& latents);  // [B, 4, h, w] -> depth [B, 1, 8h, 8w]
  // One UNet step with the DDIM update: rgb and depth latents [S, L, 4, h, w] -> depth latents.
  at::Tensor denoise(const at::Tensor& rgb, const at::Tensor& depth, const DdimStep& step);

 private:
  Engine(std::string folder, Manifest manifest, c10::Device device, std::string backend);
  ComponentRunner& runner(const std::string& name);  // with mutex_ held
  void load_all();  // every package of the backend, at open
  static void verify(const Manifest& m, const std::filesystem::path& dir, const std::map<std::string, std::string>& files,
                     bool checksums);
  static void check_tensorrt(const Manifest& m, const std::string& folder, const c10::Device& device);
  // Runs a package on `inputs`, splitting the batched ones (the first `batched`) into calls of at most `max_batch`.
  at::Tensor run(const std::string& name, std::vector<at::Tensor> inputs, size_t batched, int64_t max_batch);

  std::string folder_;
  Manifest manifest_;
  c10::Device device_;
  std::string backend_;
  at::ScalarType dtype_;
  std::mutex mutex_;  // loading and model calls: sessions on many threads share one engine
  std::map<std::string, std::unique_ptr<ComponentRunner>> loaded_;
};

}  // namespace rd
