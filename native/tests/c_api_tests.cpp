// The C API's answers to bad input: an error code and a message, never a crash.
// Usage: rd_c_api_tests [ENGINE_DIR]  (with an AOTInductor CPU engine folder, also the cases that need a model)
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "check.h"
#include "rd_engine/rd_engine.h"

namespace fs = std::filesystem;

namespace {

#define EXPECT_STATUS(call, expected)                                                                    \
  do {                                                                                                   \
    const rd_status rd_got_ = (call);                                                                    \
    if (rd_got_ != (expected)) {                                                                         \
      std::fprintf(stderr, "%s:%d: %s returned %s (%s), expected %s\n", __FILE__, __LINE__, #call,       \
                   rd_status_name(rd_got_), rd_last_error(), rd_status_name(expected));                   \
      std::exit(1);                                                                                      \
    }                                                                                                    \
    if ((expected) != RD_OK) RD_CHECK(std::strlen(rd_last_error()) > 0);                                 \
  } while (0)

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("rd_c_api_tests-" + std::to_string(::getpid()) + "-" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

void without_engine() {
  rd_engine_t* e = nullptr;
  EXPECT_STATUS(rd_engine_open(nullptr, nullptr, &e), RD_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(rd_engine_open("/nonexistent", nullptr, nullptr), RD_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(rd_engine_open("/nonexistent/rd-engine", nullptr, &e), RD_ERR_ENGINE);
  RD_CHECK(e == nullptr);
  RD_CHECK(std::string(rd_last_error()).find("does not exist") != std::string::npos);
  const fs::path empty = temp_dir("empty");
  EXPECT_STATUS(rd_engine_open(empty.c_str(), nullptr, &e), RD_ERR_ENGINE);
  RD_CHECK(std::string(rd_last_error()).find("no manifest.json") != std::string::npos);
  std::ofstream(empty / "manifest.json") << "{ not json";
  EXPECT_STATUS(rd_engine_open(empty.c_str(), nullptr, &e), RD_ERR_ENGINE);
  std::ofstream(empty / "manifest.json") << R"({"format_version": 1})";
  EXPECT_STATUS(rd_engine_open(empty.c_str(), nullptr, &e), RD_ERR_ENGINE);
  RD_CHECK(std::string(rd_last_error()).find("incomplete manifest") != std::string::npos);
  std::ofstream(empty / "manifest.json") << R"({"format_version": 99})";
  EXPECT_STATUS(rd_engine_open(empty.c_str(), nullptr, &e), RD_ERR_ENGINE);
  fs::remove_all(empty);
  rd_engine_options_t bad_options;
  std::memset(&bad_options, 0, sizeof(bad_options));  // not initialized with rd_engine_options_init
  EXPECT_STATUS(rd_engine_open("/tmp", &bad_options, &e), RD_ERR_INVALID_ARGUMENT);
  rd_engine_options_t o;
  rd_engine_options_init(&o);
  o.device = "tpu";
  EXPECT_STATUS(rd_engine_open("/tmp", &o, &e), RD_ERR_INVALID_ARGUMENT);
  // handles the library never returned, or already closed
  int not_a_handle = 0;
  EXPECT_STATUS(rd_engine_close(reinterpret_cast<rd_engine_t*>(&not_a_handle)), RD_ERR_INVALID_HANDLE);
  EXPECT_STATUS(rd_engine_close(nullptr), RD_ERR_INVALID_HANDLE);
  rd_session_t* s = nullptr;
  EXPECT_STATUS(rd_session_open(reinterpret_cast<rd_engine_t*>(&not_a_handle), nullptr, &s), RD_ERR_INVALID_HANDLE);
  const uint8_t px[3] = {0, 0, 0};
  EXPECT_STATUS(rd_session_push(reinterpret_cast<rd_session_t*>(&not_a_handle), px, 1, 1, 3, 0.0, nullptr),
                RD_ERR_INVALID_HANDLE);
  EXPECT_STATUS(rd_session_close(nullptr), RD_ERR_INVALID_HANDLE);
  RD_CHECK(std::strcmp(rd_status_name(RD_ERR_PROFILE), "RD_ERR_PROFILE") == 0);
  RD_CHECK(std::strlen(rd_version()) > 0);
}

// A copy of the engine folder with its manifest edited by `edit` (and its files by `touch`).
fs::path edited_copy(const fs::path& engine, const std::string& name, void (*edit)(nlohmann::json&),
                     const char* corrupt_file = nullptr) {
  const fs::path dst = temp_dir(name);
  fs::copy(engine, dst, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  nlohmann::json m;
  {
    std::ifstream in(dst / "manifest.json");
    m = nlohmann::json::parse(in);
  }
  if (edit) edit(m);
  std::ofstream(dst / "manifest.json") << m.dump(2);
  if (corrupt_file) {
    std::fstream f(dst / corrupt_file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
  }
  return dst;
}

void expect_refused(const fs::path& folder, const std::string& words) {
  rd_engine_t* e = nullptr;
  EXPECT_STATUS(rd_engine_open(folder.c_str(), nullptr, &e), RD_ERR_ENGINE);
  if (std::string(rd_last_error()).find(words) == std::string::npos) {
    std::fprintf(stderr, "message without '%s': %s\n", words.c_str(), rd_last_error());
    std::exit(1);
  }
  RD_CHECK(std::string(rd_last_error()).find("rd-engine build") != std::string::npos);  // says how to rebuild
  fs::remove_all(folder);
}

std::vector<uint8_t> frame(int w, int h, int stride, int seed) {
  std::vector<uint8_t> px(static_cast<size_t>(stride) * h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < 3 * w; ++x) px[static_cast<size_t>(y) * stride + x] = static_cast<uint8_t>((x * 3 + y * 5 + seed * 11) & 255);
  return px;
}

void with_engine(const fs::path& engine) {
  // stale or foreign folders
  expect_refused(edited_copy(engine, "device", [](nlohmann::json& m) { m["aoti"]["device"] = "cuda"; }), "compiled for cuda");
  expect_refused(edited_copy(engine, "torch", [](nlohmann::json& m) { m["aoti"]["torch_version"] = "1.0.0"; }),
                 "torch 1.0.0 at build time");
  expect_refused(edited_copy(engine, "noaoti", [](nlohmann::json& m) { m["aoti"] = nullptr; }), "no AOTInductor packages");
  expect_refused(edited_copy(engine, "corrupt", nullptr, "aoti/vae_encoder.fp32.cpu.pt2"), "checksum mismatch");
  {
    const fs::path missing = edited_copy(engine, "missing", nullptr);
    fs::remove(missing / "aoti/vae_decoder.fp32.cpu.pt2");
    expect_refused(missing, "is missing");
  }
  rd_engine_options_t eo;
  rd_engine_options_init(&eo);
  eo.expected_weights_hash = "0123456789abcdef";
  rd_engine_t* e = nullptr;
  EXPECT_STATUS(rd_engine_open(engine.c_str(), &eo, &e), RD_ERR_ENGINE);
  RD_CHECK(std::string(rd_last_error()).find("other weights") != std::string::npos);

  rd_engine_options_init(&eo);
  eo.backend = "onnx";
  EXPECT_STATUS(rd_engine_open(engine.c_str(), &eo, &e), RD_ERR_INVALID_ARGUMENT);
  eo.backend = "tensorrt";  // this engine has no plans (and this machine no GPU)
  EXPECT_STATUS(rd_engine_open(engine.c_str(), &eo, &e), RD_ERR_ENGINE);
  RD_CHECK(std::string(rd_last_error()).find("no TensorRT plans") != std::string::npos);

  EXPECT_STATUS(rd_engine_open(engine.c_str(), nullptr, &e), RD_OK);
  rd_session_options_t so;
  rd_session_t* s = nullptr;
  // bad options
  rd_session_options_init(&so);
  so.preset = "fastest";
  EXPECT_STATUS(rd_session_open(e, &so, &s), RD_ERR_INVALID_ARGUMENT);
  rd_session_options_init(&so);
  so.num_dilations = 2;
  so.dilations[0] = 2;
  so.dilations[1] = 5;
  EXPECT_STATUS(rd_session_open(e, &so, &s), RD_ERR_INVALID_ARGUMENT);  // no 1
  so.dilations[0] = 0;
  EXPECT_STATUS(rd_session_open(e, &so, &s), RD_ERR_INVALID_ARGUMENT);
  rd_session_options_init(&so);
  so.lag = -1;
  EXPECT_STATUS(rd_session_open(e, &so, &s), RD_ERR_INVALID_ARGUMENT);
  rd_session_options_init(&so);
  so.num_dilations = 9;
  EXPECT_STATUS(rd_session_open(e, &so, &s), RD_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(rd_session_open(e, &so, nullptr), RD_ERR_INVALID_ARGUMENT);

  // a size outside the profile (the preset's 768 px against a small engine)
  rd_session_options_init(&so);
  EXPECT_STATUS(rd_session_open(e, &so, &s), RD_OK);
  auto px = frame(96, 64, 96 * 3, 0);
  EXPECT_STATUS(rd_session_push(s, px.data(), 96, 64, 96 * 3, 0.0, nullptr), RD_ERR_PROFILE);
  RD_CHECK(std::string(rd_last_error()).find("--max-res") != std::string::npos);
  EXPECT_STATUS(rd_session_close(s), RD_OK);
  EXPECT_STATUS(rd_session_close(s), RD_ERR_INVALID_HANDLE);  // closed twice

  rd_session_options_init(&so);
  so.res = 4;  // too small to process
  EXPECT_STATUS(rd_session_open(e, &so, &s), RD_OK);
  EXPECT_STATUS(rd_session_push(s, px.data(), 96, 64, 96 * 3, 0.0, nullptr), RD_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(rd_session_close(s), RD_OK);

  // a good stream with bad calls in between
  rd_session_options_init(&so);
  so.res = 64;
  so.seed = 7;
  so.num_dilations = 2;
  so.dilations[0] = 1;
  so.dilations[1] = 2;
  EXPECT_STATUS(rd_session_open(e, &so, &s), RD_OK);
  int32_t w = 0, h = 0, available = 0, finished = 0;
  float one = 0;
  EXPECT_STATUS(rd_session_output_size(s, &w, &h), RD_ERR_STATE);  // before the first frame
  EXPECT_STATUS(rd_session_poll(s, &one, 1, nullptr, &available), RD_OK);
  RD_CHECK(available == 0);
  EXPECT_STATUS(rd_session_push(s, nullptr, 96, 64, 96 * 3, 0.0, nullptr), RD_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(rd_session_push(s, px.data(), 0, 64, 96 * 3, 0.0, nullptr), RD_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(rd_session_push(s, px.data(), 96, -1, 96 * 3, 0.0, nullptr), RD_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(rd_session_push(s, px.data(), 96, 64, 96 * 3 - 1, 0.0, nullptr), RD_ERR_INVALID_ARGUMENT);
  const int stride = 96 * 3 + 13;  // padded rows
  int total = 0;
  for (int i = 0; i < 6; ++i) {
    auto p = frame(96, 64, stride, i);
    EXPECT_STATUS(rd_session_push(s, p.data(), 96, 64, stride, i / 30.0, &finished), RD_OK);
    total += finished;
  }
  EXPECT_STATUS(rd_session_output_size(s, &w, &h), RD_OK);
  RD_CHECK(w == 64 && h == 42);
  std::vector<float> depth(static_cast<size_t>(w) * h);
  rd_frame_info_t info;
  EXPECT_STATUS(rd_session_poll(s, depth.data(), depth.size() - 1, &info, &available), RD_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(rd_session_poll(s, nullptr, depth.size(), &info, &available), RD_ERR_INVALID_ARGUMENT);
  auto other = frame(80, 64, 80 * 3, 0);
  EXPECT_STATUS(rd_session_push(s, other.data(), 80, 64, 80 * 3, 1.0, nullptr), RD_ERR_PROFILE);  // size changed
  EXPECT_STATUS(rd_session_flush(s, &finished), RD_OK);
  total += finished;
  RD_CHECK(total == 6);
  EXPECT_STATUS(rd_session_push(s, px.data(), 96, 64, 96 * 3, 1.0, nullptr), RD_ERR_STATE);  // after the flush
  int64_t expected = 0;
  for (;;) {
    EXPECT_STATUS(rd_session_poll(s, depth.data(), depth.size(), &info, &available), RD_OK);
    if (!available) break;
    RD_CHECK(info.index == expected && info.width == 64 && info.height == 42);
    RD_CHECK(info.latency_s >= 0);
    for (float v : depth) RD_CHECK(std::isfinite(v));
    ++expected;
  }
  RD_CHECK(expected == 6);
  int64_t seed = 0;
  EXPECT_STATUS(rd_session_seed(s, &seed), RD_OK);
  RD_CHECK(seed == 7);
  // closing the engine first: the session keeps it loaded
  rd_session_t* s2 = nullptr;
  EXPECT_STATUS(rd_session_open(e, &so, &s2), RD_OK);
  EXPECT_STATUS(rd_engine_close(e), RD_OK);
  rd_session_t* s3 = nullptr;
  EXPECT_STATUS(rd_session_open(e, &so, &s3), RD_ERR_INVALID_HANDLE);
  RD_CHECK(s3 == nullptr);
  EXPECT_STATUS(rd_session_push(s2, px.data(), 96, 64, 96 * 3, 0.0, nullptr), RD_OK);
  EXPECT_STATUS(rd_session_close(s2), RD_OK);
  EXPECT_STATUS(rd_session_close(s), RD_OK);
  EXPECT_STATUS(rd_session_push(s, px.data(), 96, 64, 96 * 3, 1.0, nullptr), RD_ERR_INVALID_HANDLE);  // after close
}

}  // namespace

int main(int argc, char** argv) {
  without_engine();
  if (argc > 1) with_engine(argv[1]);
  std::printf("c_api: ok%s\n", argc > 1 ? " (with engine)" : "");
  return 0;
}
