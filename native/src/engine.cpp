#include "engine.h"

#include <ATen/ATen.h>
#include <openssl/evp.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/headeronly/version.h>

#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "errors.h"
#include "log.h"

#ifdef RD_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace fs = std::filesystem;
using nlohmann::json;

namespace rd {
namespace {

constexpr int kSupportedFormatVersion = 1;
const char* const kManifest = "manifest.json";

std::string quote(const std::string& s) {  // POSIX shell quoting, as Python's shlex.quote
  if (s.empty()) return "''";
  bool safe = true;
  for (char c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || std::string("@%+=:,./-_").find(c) != std::string::npos))
      safe = false;
  }
  if (safe) return s;
  std::string out = "'";
  for (char c : s) out += (c == '\'') ? std::string("'\"'\"'") : std::string(1, c);
  return out + "'";
}

std::string as_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

class AotiRunner : public ComponentRunner {
 public:
  AotiRunner(const std::string& path, const c10::Device& device)
      : loader_(path, "model", false, 1, device.is_cuda() ? device.index() : static_cast<c10::DeviceIndex>(-1)) {}
  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs) override { return loader_.run(inputs); }

 private:
  torch::inductor::AOTIModelPackageLoader loader_;
};

Manifest parse_manifest(const json& d) {
  Manifest m;
  m.format_version = d.at("format_version").get<int>();
  if (m.format_version != kSupportedFormatVersion) return m;  // the caller refuses it with a rebuild hint
  m.weights_hash = d.at("source").at("weights_hash").get<std::string>();
  m.checkpoint = d.at("source").value("checkpoint", std::string("CHECKPOINT"));
  const json& p = d.at("profile");
  m.min_res = p.at("min_res").get<int>();
  m.max_res = p.at("max_res").get<int>();
  const json& aoti = d.at("aoti");
  if (!aoti.is_null()) {
    m.aoti_device = aoti.at("device").get<std::string>();
    m.aoti_precision = aoti.at("precision").get<std::string>();
    m.aoti_torch_version = aoti.at("torch_version").get<std::string>();
    m.max_vae_batch = aoti.at("dynamic").at("B").at(1).get<int64_t>();
    m.max_snippet_batch = aoti.at("dynamic").at("S").at(1).get<int64_t>();
    const json& gpu = aoti.value("gpu", json());
    if (gpu.is_object() && gpu.contains("compute_capability")) {
      const json& cc = gpu.at("compute_capability");
      if (cc.is_array()) {
        m.aoti_cc_major = cc.at(0).get<int>();
        m.aoti_cc_minor = cc.at(1).get<int>();
      } else {  // "9.0"
        const std::string s = as_text(cc);
        m.aoti_cc_major = std::stoi(s.substr(0, s.find('.')));
        m.aoti_cc_minor = std::stoi(s.substr(s.find('.') + 1));
      }
    }
  }
  for (const auto& [name, comp] : d.at("components").items()) {
    if (comp.at("kind") == "unet_step") m.snippet_lens.push_back(comp.at("snippet_len").get<int>());
    const json& pkg = comp.value("aoti", json());
    if (pkg.is_object()) m.packages[name] = pkg.at("file").get<std::string>();
    const json& plan = comp.value("tensorrt", json());
    if (plan.is_object()) m.plans[name] = plan.at("file").get<std::string>();
    for (const auto& input : comp.at("inputs")) m.input_names[name].push_back(input.at("name").get<std::string>());
  }
  const json& trt = d.value("tensorrt", json());
  if (trt.is_object()) {
    m.trt_version = trt.value("version", json()).is_string() ? trt.at("version").get<std::string>() : "";
    m.trt_precision = trt.at("precision").get<std::string>();
    m.trt_gpu_name = trt.at("gpu").value("name", std::string());
    m.trt_cc = as_text(trt.at("gpu").value("compute_capability", json("")));
  }
  for (const auto& [rel, meta] : d.at("files").items())
    m.files[rel] = {meta.at("bytes").get<int64_t>(), meta.at("sha256").get<std::string>()};
  const json& dd = d.at("ddim");
  const json& cfg = dd.at("config");
  m.ddim.num_train_timesteps = cfg.value("num_train_timesteps", 1000L);
  m.ddim.timestep_spacing = cfg.value("timestep_spacing", std::string("leading"));
  m.ddim.steps_offset = cfg.value("steps_offset", 0L);
  m.ddim.alphas_cumprod = dd.at("alphas_cumprod").get<std::vector<float>>();
  // the alpha_bar of the last step's "previous" timestep, exactly as stored at build time
  const float final_alpha = dd.at("final_alpha_cumprod").get<float>();
  m.ddim.set_alpha_to_one = (final_alpha == 1.0f);
  if (!m.ddim.set_alpha_to_one && (m.ddim.alphas_cumprod.empty() || final_alpha != m.ddim.alphas_cumprod[0]))
    throw std::invalid_argument("ddim.final_alpha_cumprod is neither 1 nor alphas_cumprod[0]");
  if (static_cast<int64_t>(m.ddim.alphas_cumprod.size()) != m.ddim.num_train_timesteps)
    throw std::invalid_argument("ddim.alphas_cumprod does not have num_train_timesteps entries");
  for (const auto& [key, value] : d.at("build").at("args").items()) {
    if (key == "snippet_lens" && value.is_array()) {
      std::string s;
      for (const auto& n : value) s += (s.empty() ? "" : " ") + as_text(n);
      m.build_args[key] = s;
    } else if (!value.is_null()) {
      m.build_args[key] = as_text(value);
    }
  }
  return m;
}

std::string base_version(const std::string& v) { return v.substr(0, v.find('+')); }

}  // namespace

std::unique_ptr<ComponentRunner> make_aoti_runner(const std::string& package, const c10::Device& device) {
  return std::make_unique<AotiRunner>(package, device);
}

std::string rebuild_command(const Manifest& m, const std::string& folder,
                            const std::map<std::string, std::string>& changes) {
  auto args = m.build_args;
  for (const auto& [k, v] : changes) args[k] = v;
  std::string cmd = "rd-engine build --checkpoint " + quote(args.count("checkpoint") ? args["checkpoint"] : "CHECKPOINT");
  const std::array<std::pair<const char*, const char*>, 8> flags = {{{"backend", "--backend"},
                                                                      {"precision", "--precision"},
                                                                      {"device", "--device"},
                                                                      {"res", "--res"},
                                                                      {"min_res", "--min-res"},
                                                                      {"max_res", "--max-res"},
                                                                      {"max_batch", "--max-batch"},
                                                                      {"max_vae_batch", "--max-vae-batch"}}};
  for (const auto& [key, flag] : flags) {
    if (args.count(key)) cmd += std::string(" ") + flag + " " + quote(args[key]);
  }
  if (args.count("snippet_lens") && !args["snippet_lens"].empty()) cmd += " --snippet-lens " + args["snippet_lens"];
  return cmd + " -o " + quote(folder) + " --force";
}

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(RD_ERR_IO, "cannot read " + path);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) fail(RD_ERR_RUNTIME, "SHA-256 unavailable");
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() > 0) EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &len);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

std::shared_ptr<Engine> Engine::open(const std::string& folder, const EngineOptions& options) {
  const fs::path dir(folder);
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(options.device);
  } catch (const std::exception&) {
    fail(RD_ERR_INVALID_ARGUMENT, "device must be cpu, cuda or cuda:N, got '" + options.device + "'");
  }
  if (device.is_cuda() && !device.has_index()) device = c10::Device(c10::kCUDA, 0);
  if (!device.is_cpu() && !device.is_cuda())
    fail(RD_ERR_INVALID_ARGUMENT, "device must be cpu, cuda or cuda:N, got '" + options.device + "'");
  if (device.is_cuda()) {
#ifdef RD_WITH_CUDA
    if (!at::hasCUDA()) fail(RD_ERR_DEVICE, "device " + device.str() + ": this machine has no CUDA device");
    const int count = static_cast<int>(c10::cuda::device_count());
    if (device.index() < 0 || device.index() >= count)
      fail(RD_ERR_DEVICE, "device " + device.str() + " does not exist: this machine has " + std::to_string(count) +
                              " CUDA device(s), cuda:0.." + "cuda:" + std::to_string(count - 1));
#else
    fail(RD_ERR_UNSUPPORTED, "device " + device.str() + ": this runtime was built against a libtorch without CUDA");
#endif
  }
  if (!fs::is_directory(dir))
    fail(RD_ERR_ENGINE, "engine folder " + folder + " does not exist (build one with: rd-engine build --checkpoint "
                        "CHECKPOINT --backend aoti --device " + std::string(device.is_cuda() ? "cuda" : "cpu") +
                        " -o " + quote(folder) + ")");
  const fs::path mpath = dir / kManifest;
  if (!fs::is_regular_file(mpath))
    fail(RD_ERR_ENGINE, folder + " is not an engine folder, or its build did not finish (no manifest.json); build it "
                        "with: rd-engine build --checkpoint CHECKPOINT --backend aoti -o " + quote(folder) + " --force");
  json data;
  try {
    std::ifstream in(mpath);
    data = json::parse(in);
  } catch (const std::exception& e) {
    fail(RD_ERR_ENGINE, "engine " + folder + ": unreadable manifest.json (" + e.what() + "); rebuild it with rd-engine build");
  }
  Manifest m;
  try {
    m = parse_manifest(data);
  } catch (const std::exception& e) {
    fail(RD_ERR_ENGINE, "engine " + folder + ": incomplete manifest (" + e.what() + "); rebuild it with rd-engine build");
  }
  if (m.format_version != kSupportedFormatVersion)
    fail(RD_ERR_ENGINE, "engine " + folder + " has format version " + std::to_string(m.format_version) +
                        "; this runtime reads version " + std::to_string(kSupportedFormatVersion) + ". Rebuild it");
  if (options.backend != "aoti" && options.backend != "tensorrt")
    fail(RD_ERR_INVALID_ARGUMENT, "backend must be aoti or tensorrt, got '" + options.backend + "'");
  if (!options.expected_weights_hash.empty() && options.expected_weights_hash != m.weights_hash)
    fail(RD_ERR_ENGINE, "engine " + folder + " was built from other weights (weights hash " +
                        m.weights_hash.substr(0, 12) + " vs expected " + options.expected_weights_hash.substr(0, 12) +
                        "); rebuild: " + rebuild_command(m, folder));
  if (options.backend == "tensorrt") {
    check_tensorrt(m, folder, device);
    verify(m, dir, m.plans, options.verify_files);
    std::shared_ptr<Engine> engine(new Engine(folder, std::move(m), device, "tensorrt"));
    engine->load_all();
    return engine;
  }
  if (m.aoti_device.empty() || m.packages.empty())
    fail(RD_ERR_ENGINE, "engine " + folder + " holds no AOTInductor packages; build them: " +
                        rebuild_command(m, folder, {{"backend", "aoti"}}));
  std::vector<std::string> problems;
  if (base_version(m.aoti_torch_version) != base_version(TORCH_VERSION))
    problems.push_back("torch " + m.aoti_torch_version + " at build time, libtorch " + TORCH_VERSION + " here");
  const std::string run_type = device.is_cuda() ? "cuda" : "cpu";
  if (m.aoti_device != run_type) {
    problems.push_back("compiled for " + m.aoti_device + ", the run is on " + run_type);
  } else if (device.is_cuda()) {
#ifdef RD_WITH_CUDA
    if (!at::hasCUDA()) {
      problems.push_back("compiled for cuda, and this machine has no CUDA device");
    } else if (m.aoti_cc_major >= 0) {
      const auto* prop = at::cuda::getDeviceProperties(device.index());
      if (prop->major != m.aoti_cc_major || prop->minor != m.aoti_cc_minor)
        problems.push_back("compute capability " + std::to_string(m.aoti_cc_major) + "." +
                           std::to_string(m.aoti_cc_minor) + " at build time, " + std::to_string(prop->major) + "." +
                           std::to_string(prop->minor) + " here");
    }
#else
    problems.push_back("compiled for cuda, and this runtime was built without CUDA");
#endif
  }
  if (!problems.empty()) {
    std::string joined;
    for (const auto& p : problems) joined += (joined.empty() ? "" : "; ") + p;
    fail(RD_ERR_ENGINE, "engine " + folder + ": its AOTInductor packages do not fit this run (" + joined +
                        "); rebuild here: " + rebuild_command(m, folder, {{"backend", "aoti"}, {"device", run_type}}));
  }
  verify(m, dir, m.packages, options.verify_files);
  std::shared_ptr<Engine> engine(new Engine(folder, std::move(m), device, "aoti"));
  engine->load_all();
  return engine;
}

void Engine::verify(const Manifest& m, const fs::path& dir, const std::map<std::string, std::string>& files,
                    bool checksums) {
  const std::string folder = dir.string();
  for (const auto& [name, rel] : files) {
    const auto meta = m.files.find(rel);
    if (meta == m.files.end())
      fail(RD_ERR_ENGINE, "engine " + folder + ": " + rel + " is not listed in the manifest; rebuild: " +
                          rebuild_command(m, folder));
    const fs::path p = dir / rel;
    if (!fs::is_regular_file(p))
      fail(RD_ERR_ENGINE, "engine " + folder + ": " + rel + " is missing; rebuild: " + rebuild_command(m, folder));
    if (checksums &&
        (static_cast<int64_t>(fs::file_size(p)) != meta->second.first || sha256_file(p.string()) != meta->second.second))
      fail(RD_ERR_ENGINE, "engine " + folder + ": " + rel + " was modified after the build (checksum mismatch); rebuild: " +
                          rebuild_command(m, folder));
  }
  for (const char* needed : {"vae_encoder", "vae_decoder"}) {
    if (!files.count(needed))
      fail(RD_ERR_ENGINE, "engine " + folder + " has no compiled " + needed + " for this backend; rebuild: " +
                          rebuild_command(m, folder));
  }
}

void Engine::check_tensorrt(const Manifest& m, const std::string& folder, const c10::Device& device) {
  const std::string rebuild = rebuild_command(m, folder, {{"backend", "tensorrt"}});
  if (m.plans.empty() || m.trt_precision.empty())
    fail(RD_ERR_ENGINE, "engine " + folder + " holds no TensorRT plans; build them on this machine: " + rebuild);
  if (!device.is_cuda()) fail(RD_ERR_INVALID_ARGUMENT, "TensorRT plans run on a CUDA device, not " + device.str());
#ifdef RD_HAVE_TENSORRT
  std::vector<std::string> problems;
  if (m.trt_version != tensorrt_version())
    problems.push_back("TensorRT " + m.trt_version + " at build time, " + tensorrt_version() + " here");
#ifdef RD_WITH_CUDA
  const auto* prop = at::cuda::getDeviceProperties(device.index());
  const std::string cc = std::to_string(prop->major) + "." + std::to_string(prop->minor);
  if (cc != m.trt_cc) problems.push_back("compute capability " + m.trt_cc + " at build time, " + cc + " here");
  if (std::string(prop->name) != m.trt_gpu_name)
    problems.push_back("GPU '" + m.trt_gpu_name + "' at build time, '" + prop->name + "' here");
#endif
  if (!problems.empty()) {
    std::string joined;
    for (const auto& p : problems) joined += (joined.empty() ? "" : "; ") + p;
    fail(RD_ERR_ENGINE, "engine " + folder + ": its TensorRT plans do not fit this machine (" + joined +
                            "); rebuild here: " + rebuild);
  }
#else
  fail(RD_ERR_UNSUPPORTED, "this runtime was built without TensorRT (configure with -DRD_WITH_TENSORRT=ON where "
                                "TensorRT's headers and libraries are installed)");
#endif
}

Engine::Engine(std::string folder, Manifest manifest, c10::Device device, std::string backend)
    : folder_(std::move(folder)), manifest_(std::move(manifest)), device_(device), backend_(std::move(backend)) {
  const auto& p = backend_ == "tensorrt" ? manifest_.trt_precision : manifest_.aoti_precision;
  dtype_ = p == "fp16" ? at::kHalf : p == "bf16" ? at::kBFloat16 : at::kFloat;
}

Engine::~Engine() = default;

void Engine::check_size(Size processed) const {
  auto cdiv = [](int a) { return (a + 7) / 8; };
  const int lo = cdiv(manifest_.min_res), hi = cdiv(manifest_.max_res);
  const auto [w, h] = processed;
  if (lo <= cdiv(w) && cdiv(w) <= hi && lo <= cdiv(h) && cdiv(h) <= hi) return;
  const int pw = 8 * cdiv(w), ph = 8 * cdiv(h);
  const int new_min = std::min({manifest_.min_res, pw, ph}), new_max = std::max({manifest_.max_res, pw, ph});
  fail(RD_ERR_PROFILE, "engine " + folder_ + " serves frames whose sides are " + std::to_string(8 * lo) + ".." +
                           std::to_string(8 * hi) + " px (after padding to a multiple of 8); this stream's frames are " +
                           std::to_string(w) + "x" + std::to_string(h) + " (padded " + std::to_string(pw) + "x" +
                           std::to_string(ph) + "). Change the resolution, or rebuild with a wider range: " +
                           rebuild_command(manifest_, folder_,
                                           {{"min_res", std::to_string(new_min)}, {"max_res", std::to_string(new_max)}}));
}

void Engine::check_snippet_len(int snippet_len) const {
  const std::string name = "unet_step_L" + std::to_string(snippet_len);
  if (!(backend_ == "tensorrt" ? manifest_.plans : manifest_.packages).count(name))
    fail(RD_ERR_ENGINE, "engine " + folder_ + " has no compiled UNet step for snippet length " +
                            std::to_string(snippet_len) + "; rebuild: " +
                            rebuild_command(manifest_, folder_, {{"backend", backend_}, {"snippet_lens", std::to_string(snippet_len)}}));
}

ComponentRunner& Engine::runner(const std::string& name) {
  auto it = loaded_.find(name);
  if (it != loaded_.end()) return *it->second;
  const bool trt = backend_ == "tensorrt";
  const std::string rel = trt ? manifest_.plans.at(name) : manifest_.packages.at(name);
  const std::string path = (fs::path(folder_) / rel).string();
  try {
    std::unique_ptr<ComponentRunner> r;
#ifdef RD_HAVE_TENSORRT
    if (trt) r = make_tensorrt_runner(path, manifest_.input_names.at(name), device_);
#endif
    if (!trt) r = make_aoti_runner(path, device_);
    return *loaded_.emplace(name, std::move(r)).first->second;
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    fail(RD_ERR_ENGINE, "engine " + folder_ + ": cannot load " + rel + " (" + what +
                            "); rebuild: " + rebuild_command(manifest_, folder_, {{"backend", backend_}}));
  }
}

void Engine::load_all() {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto t0 = std::chrono::steady_clock::now();
  const auto& files = backend_ == "tensorrt" ? manifest_.plans : manifest_.packages;
  for (const auto& [name, rel] : files) runner(name);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log_message(RD_LOG_INFO, "engine " + folder_ + ": loaded " + std::to_string(files.size()) + " " + backend_ +
                               " components on " + device_.str() + " in " + std::to_string(s) + " s");
}

void Engine::warmup(Size processed) {
  check_size(processed);
  const Size padded = padded_size(processed);
  auto opts = at::TensorOptions().device(device_).dtype(dtype_);
  const at::Tensor lat = encode(at::zeros({1, 3, padded.second, padded.first}, opts));
  for (int L : manifest_.snippet_lens) {
    if (!(backend_ == "tensorrt" ? manifest_.plans : manifest_.packages).count("unet_step_L" + std::to_string(L)))
      continue;
    const at::Tensor x = lat.unsqueeze(1).expand({1, L, lat.size(1), lat.size(2), lat.size(3)}).contiguous();
    const auto steps = manifest_.ddim.schedule(1);
    if (!steps.empty()) denoise(x, x, steps[0]);
  }
  decode(lat);
  if (device_.is_cuda()) {
#ifdef RD_WITH_CUDA
    at::cuda::getCurrentCUDAStream(device_.index()).synchronize();
#endif
  }
}

at::Tensor Engine::run(const std::string& name, std::vector<at::Tensor> inputs, size_t batched, int64_t max_batch) {
  for (auto& x : inputs) x = x.to(device_).contiguous();  // callers give the dtypes (fp32 step coefficients)
  const int64_t n = inputs.at(0).size(0);
  std::lock_guard<std::mutex> lock(mutex_);
  auto& loader = runner(name);
  std::vector<at::Tensor> parts;
  for (int64_t a = 0; a < n; a += max_batch) {
    std::vector<at::Tensor> args;
    for (size_t i = 0; i < inputs.size(); ++i)
      args.push_back(i < batched ? inputs[i].slice(0, a, std::min(n, a + max_batch)) : inputs[i]);
    auto out = loader.run(args);
    parts.push_back(out.at(0));
  }
  return parts.size() == 1 ? parts[0] : at::cat(parts);
}

at::Tensor Engine::encode(const at::Tensor& frames) {
  check_size({static_cast<int>(frames.size(3)), static_cast<int>(frames.size(2))});
  return run("vae_encoder", {frames.to(dtype_)}, 1, manifest_.max_vae_batch);
}

at::Tensor Engine::decode(const at::Tensor& latents) {
  return run("vae_decoder", {latents.to(dtype_)}, 1, manifest_.max_vae_batch);
}

at::Tensor Engine::denoise(const at::Tensor& rgb, const at::Tensor& depth, const DdimStep& step) {
  const std::string name = "unet_step_L" + std::to_string(depth.size(1));
  check_snippet_len(static_cast<int>(depth.size(1)));
  auto t = at::full({1}, step.t, at::TensorOptions().dtype(at::kLong));
  auto a = at::full({1}, step.alpha_t, at::TensorOptions().dtype(at::kFloat));
  auto ap = at::full({1}, step.alpha_prev, at::TensorOptions().dtype(at::kFloat));
  return run(name, {rgb.to(dtype_), depth.to(dtype_), t, a, ap}, 2, manifest_.max_snippet_batch);
}

}  // namespace rd
