// The C API's answers to bad input: an error code and a message, never a crash.
// Usage: rd_c_api_tests [ENGINE_DIR]  (with an AOTInductor CPU engine folder, also the cases that need a model)
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "check.h"
#include "rd_engine/rd_engine.hpp"

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
  RD_CHECK(std::strcmp(rd_status_name(RD_ERR_SESSION_BROKEN), "RD_ERR_SESSION_BROKEN") == 0);
  RD_CHECK(std::strlen(rd_version()) > 0);
  // tokens of the right shape that the library never returned
  EXPECT_STATUS(rd_session_close(reinterpret_cast<rd_session_t*>(uintptr_t{(123u << 2) | 2u})), RD_ERR_INVALID_HANDLE);
  EXPECT_STATUS(rd_engine_close(reinterpret_cast<rd_engine_t*>(uintptr_t{(123u << 2) | 1u})), RD_ERR_INVALID_HANDLE);
}

// The ABI: versions, build information, struct_size read as "the fields it covers".
void abi() {
  RD_CHECK(rd_abi_version() == RD_ENGINE_ABI_VERSION);
  RD_CHECK((rd_abi_version() >> 16) == 2);
  const std::string info = rd_build_info();
  RD_CHECK(info.find("abi 2.1") != std::string::npos && info.find(" torch 2.") != std::string::npos);
  RD_CHECK(info.find(" cuda ") != std::string::npos && info.find(" tensorrt ") != std::string::npos);
  rd_engine_t* e = nullptr;
  rd_engine_options_t o;
  rd_engine_options_init(&o);
  RD_CHECK(o.struct_size == sizeof(o) && o.intra_op_threads == 0 && std::strcmp(o.device, "cpu") == 0);
  o.struct_size = sizeof(o) + 8;  // a caller built against a newer header
  EXPECT_STATUS(rd_engine_open("/nonexistent/rd-engine", &o, &e), RD_ERR_VERSION);
  RD_CHECK(std::string(rd_last_error()).find("newer rd_engine.h") != std::string::npos);
  o.struct_size = 4;  // never a size of any header
  EXPECT_STATUS(rd_engine_open("/nonexistent/rd-engine", &o, &e), RD_ERR_VERSION);
  // the ABI 1 size (no intra_op_threads): accepted, the missing field takes its default
  o.struct_size = offsetof(rd_engine_options_t, intra_op_threads);
  o.intra_op_threads = -5;  // beyond struct_size: not read
  EXPECT_STATUS(rd_engine_open("/nonexistent/rd-engine", &o, &e), RD_ERR_ENGINE);
  rd_engine_options_init(&o);
  o.intra_op_threads = -5;  // read at the full size: refused
  EXPECT_STATUS(rd_engine_open("/nonexistent/rd-engine", &o, &e), RD_ERR_INVALID_ARGUMENT);
  // the sized init writes no byte past the size it is given (an older caller's struct)
  unsigned char buf[sizeof(rd_session_options_t) + 16];
  std::memset(buf, 0xAB, sizeof(buf));
  const uint32_t v1 = offsetof(rd_session_options_t, on_frame);
  rd_session_options_init_sized(reinterpret_cast<rd_session_options_t*>(buf), v1);
  RD_CHECK(reinterpret_cast<rd_session_options_t*>(buf)->struct_size == v1);
  for (size_t i = v1; i < sizeof(buf); ++i) RD_CHECK(buf[i] == 0xAB);
  std::memset(buf, 0xAB, sizeof(buf));
  (rd_session_options_init)(reinterpret_cast<rd_session_options_t*>(buf));  // the ABI 1 symbol
  RD_CHECK(reinterpret_cast<rd_session_options_t*>(buf)->struct_size == v1);
  for (size_t i = v1; i < sizeof(buf); ++i) RD_CHECK(buf[i] == 0xAB);
  // devices this build cannot serve
  rd_engine_options_init(&o);
  o.device = "cuda";
  if (info.find(" cuda no ") != std::string::npos) {
    EXPECT_STATUS(rd_engine_open("/nonexistent/rd-engine", &o, &e), RD_ERR_UNSUPPORTED);
  } else {
    o.device = "cuda:99";
    EXPECT_STATUS(rd_engine_open("/nonexistent/rd-engine", &o, &e), RD_ERR_DEVICE);
  }
  RD_CHECK(e == nullptr);
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

  // a size outside the profile (1024 px against the test engine's 32..768)
  rd_session_options_init(&so);
  so.res = 1024;
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


struct Polled {
  rd_frame_t info;
  std::vector<float> depth;
};

rd_session_options_t small_options(int lag) {
  rd_session_options_t so;
  rd_session_options_init(&so);
  so.res = 64;
  so.seed = 7;
  so.lag = lag;
  so.num_dilations = 2;
  so.dilations[0] = 1;
  so.dilations[1] = 2;
  return so;
}

std::vector<Polled> drain(rd_session_t* s) {
  std::vector<Polled> out;
  int32_t w = 0, h = 0, available = 0;
  if (rd_session_output_size(s, &w, &h) != RD_OK) return out;
  for (;;) {
    Polled p;
    rd_frame_init(&p.info);
    p.depth.resize(static_cast<size_t>(w) * h);
    EXPECT_STATUS(rd_session_poll_frame(s, p.depth.data(), p.depth.size(), &p.info, &available), RD_OK);
    if (!available) break;
    out.push_back(std::move(p));
  }
  return out;
}

// A fresh session on frames [first, first + count) (pixel seeds), flushed: its finished frames.
std::vector<Polled> fresh_run(rd_engine_t* e, int lag, int first, int count) {
  rd_session_options_t so = small_options(lag);
  rd_session_t* s = nullptr;
  EXPECT_STATUS(rd_session_open(e, &so, &s), RD_OK);
  for (int i = first; i < first + count; ++i) {
    auto p = frame(96, 64, 96 * 3, i);
    EXPECT_STATUS(rd_session_push(s, p.data(), 96, 64, 96 * 3, i / 30.0, nullptr), RD_OK);
  }
  EXPECT_STATUS(rd_session_flush(s, nullptr), RD_OK);
  auto out = drain(s);
  EXPECT_STATUS(rd_session_close(s), RD_OK);
  RD_CHECK(static_cast<int>(out.size()) == count);
  return out;
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  RD_CHECK(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

void on_frame_collect(const float* depth, const rd_frame_t* f, void* user) {
  auto* out = static_cast<std::vector<Polled>*>(user);
  Polled p;
  p.info = *f;
  p.depth.assign(depth, depth + static_cast<size_t>(f->width) * f->height);
  out->push_back(std::move(p));
}

std::vector<std::pair<int32_t, std::string>> logged;
void log_collect(int32_t level, const char* message, void*) { logged.emplace_back(level, message); }

// What an embedder relies on: typed and stale handles, eager loading, warmup, a broken session, cuts,
// exact timestamps, the frame callback, struct_size on the output struct.
void embedder(const fs::path& engine) {
  // eager loading: a package that does not load fails at open, not at the first push
  {
    const fs::path bad = edited_copy(engine, "garbage", nullptr);
    std::ofstream(bad / "aoti/vae_decoder.fp32.cpu.pt2", std::ios::binary | std::ios::trunc) << "not a package";
    rd_engine_options_t eo;
    rd_engine_options_init(&eo);
    eo.verify_files = 0;  // past the checksums: the load itself must fail
    rd_engine_t* e = nullptr;
    EXPECT_STATUS(rd_engine_open(bad.c_str(), &eo, &e), RD_ERR_ENGINE);
    RD_CHECK(e == nullptr);
    RD_CHECK(std::string(rd_last_error()).find("cannot load") != std::string::npos);
    fs::remove_all(bad);
  }
  rd_set_log_callback(log_collect, nullptr);
  rd_engine_t* e = nullptr;
  EXPECT_STATUS(rd_engine_open(engine.c_str(), nullptr, &e), RD_OK);
  rd_set_log_callback(nullptr, nullptr);
  RD_CHECK(!logged.empty() && logged.back().first == RD_LOG_INFO &&
           logged.back().second.find("loaded") != std::string::npos);
  EXPECT_STATUS(rd_engine_warmup(e, 64, 42), RD_OK);
  EXPECT_STATUS(rd_engine_warmup(e, 2048, 2048), RD_ERR_PROFILE);
  EXPECT_STATUS(rd_engine_warmup(e, 0, 42), RD_ERR_INVALID_ARGUMENT);

  // handles of the wrong type, and stale ones
  rd_session_options_t so = small_options(0);
  rd_session_t* s = nullptr;
  EXPECT_STATUS(rd_session_open(e, &so, &s), RD_OK);
  auto px = frame(96, 64, 96 * 3, 0);
  EXPECT_STATUS(rd_session_push(reinterpret_cast<rd_session_t*>(e), px.data(), 96, 64, 96 * 3, 0.0, nullptr),
                RD_ERR_INVALID_HANDLE);
  RD_CHECK(std::string(rd_last_error()).find("an engine handle was passed") != std::string::npos);
  EXPECT_STATUS(rd_engine_close(reinterpret_cast<rd_engine_t*>(s)), RD_ERR_INVALID_HANDLE);
  RD_CHECK(std::string(rd_last_error()).find("a session handle was passed") != std::string::npos);
  EXPECT_STATUS(rd_session_open(reinterpret_cast<rd_engine_t*>(s), &so, &s), RD_ERR_INVALID_HANDLE);
  RD_CHECK(s == nullptr);
  EXPECT_STATUS(rd_session_open(e, &so, &s), RD_OK);
  rd_session_t* old = s;
  EXPECT_STATUS(rd_session_close(s), RD_OK);
  for (int i = 0; i < 20; ++i) {  // new handles never take a closed one's value
    EXPECT_STATUS(rd_session_open(e, &so, &s), RD_OK);
    RD_CHECK(s != old);
    EXPECT_STATUS(rd_session_close(s), RD_OK);
  }
  EXPECT_STATUS(rd_session_push(old, px.data(), 96, 64, 96 * 3, 0.0, nullptr), RD_ERR_INVALID_HANDLE);

  // the reference: fresh sessions on shot A (frames 0..6) and shot B (frames 7..11)
  const int lag = 2, na = 7, nb = 5;
  const auto ref_a = fresh_run(e, lag, 0, na), ref_b = fresh_run(e, lag, na, nb);

  // a failed push (here: cancelled) marks the session broken until rd_session_reset
  so = small_options(lag);
  EXPECT_STATUS(rd_session_open(e, &so, &s), RD_OK);
  for (int i = 0; i < 3; ++i) {
    auto p = frame(96, 64, 96 * 3, i);
    EXPECT_STATUS(rd_session_push(s, p.data(), 96, 64, 96 * 3, i / 30.0, nullptr), RD_OK);
  }
  EXPECT_STATUS(rd_session_cancel(s), RD_OK);
  EXPECT_STATUS(rd_session_push(s, px.data(), 96, 64, 96 * 3, 0.1, nullptr), RD_ERR_CANCELLED);
  EXPECT_STATUS(rd_session_push(s, px.data(), 96, 64, 96 * 3, 0.1, nullptr), RD_ERR_SESSION_BROKEN);
  RD_CHECK(std::string(rd_last_error()).find("rd_session_reset") != std::string::npos);
  EXPECT_STATUS(rd_session_flush(s, nullptr), RD_ERR_SESSION_BROKEN);
  EXPECT_STATUS(rd_session_cut(s, nullptr), RD_ERR_SESSION_BROKEN);
  EXPECT_STATUS(rd_session_reset(s), RD_OK);
  // after the reset: a fresh session (same seed), with a cut after shot A, and exact int64 stamps
  int32_t finished = 0, total = 0;
  EXPECT_STATUS(rd_session_cut(s, &finished), RD_OK);  // before any frame: nothing
  RD_CHECK(finished == 0);
  const int64_t base = 1733100000123456789LL;  // a ROS stamp: not representable as a double
  auto push_ns = [&](int i) {
    auto p = frame(96, 64, 96 * 3, i);
    rd_frame_input_t in;
    rd_frame_input_init(&in);
    in.rgb = p.data();
    in.width = 96;
    in.height = 64;
    in.timestamp_ns = base + i;
    EXPECT_STATUS(rd_session_push_frame(s, &in, &finished), RD_OK);
    total += finished;
  };
  for (int i = 0; i < na; ++i) push_ns(i);
  EXPECT_STATUS(rd_session_cut(s, &finished), RD_OK);
  total += finished;
  RD_CHECK(total == na);  // the cut finished all of shot A
  EXPECT_STATUS(rd_session_cut(s, &finished), RD_OK);  // two cuts in a row: no empty shot
  RD_CHECK(finished == 0);
  for (int i = na; i < na + nb; ++i) push_ns(i);
  EXPECT_STATUS(rd_session_flush(s, &finished), RD_OK);
  EXPECT_STATUS(rd_session_cut(s, &finished), RD_ERR_STATE);  // after the end of the stream
  const auto got = drain(s);
  RD_CHECK(static_cast<int>(got.size()) == na + nb);
  double worst = 0;
  for (int i = 0; i < na + nb; ++i) {
    const auto& g = got[i];
    const auto& r = i < na ? ref_a[i] : ref_b[i - na];
    RD_CHECK(g.info.index == i);  // indices keep counting across the cut
    RD_CHECK(g.info.timestamp_ns == base + i);
    RD_CHECK(g.info.starts_shot == (i == 0 || i == na ? 1 : 0));
    RD_CHECK(r.info.starts_shot == (i == 0 || i == na ? 1 : 0));
    worst = std::max(worst, max_diff(g.depth, r.depth));
  }
  std::printf("cut vs two fresh sessions: max abs diff %.3g\n", worst);
  RD_CHECK(worst <= 1e-6);  // CUT_CONTRACT: each shot equals a fresh session on it, to 1e-6
  EXPECT_STATUS(rd_session_close(s), RD_OK);

  // the frame callback gets what poll would (on the pushing thread), and nothing waits in poll
  std::vector<Polled> called;
  so = small_options(lag);
  so.on_frame = on_frame_collect;
  so.on_frame_user = &called;
  EXPECT_STATUS(rd_session_open(e, &so, &s), RD_OK);
  for (int i = 0; i < na; ++i) {
    auto p = frame(96, 64, 96 * 3, i);
    EXPECT_STATUS(rd_session_push(s, p.data(), 96, 64, 96 * 3, i / 30.0, nullptr), RD_OK);
  }
  EXPECT_STATUS(rd_session_flush(s, nullptr), RD_OK);
  RD_CHECK(drain(s).empty());
  RD_CHECK(static_cast<int>(called.size()) == na);
  for (int i = 0; i < na; ++i) {
    RD_CHECK(called[i].info.index == i && called[i].info.width == 64 && called[i].info.height == 42);
    RD_CHECK(called[i].info.timestamp_ns == std::llround(i / 30.0 * 1e9));
    RD_CHECK(max_diff(called[i].depth, ref_a[i].depth) == 0);
  }
  EXPECT_STATUS(rd_session_close(s), RD_OK);

  // an output struct of an older (smaller) size: only the fields it covers are written
  so = small_options(0);
  EXPECT_STATUS(rd_session_open(e, &so, &s), RD_OK);
  for (int i = 0; i < 3; ++i) EXPECT_STATUS(rd_session_push(s, px.data(), 96, 64, 96 * 3, 0.5, nullptr), RD_OK);
  std::vector<float> depth(64 * 42);
  rd_frame_t f;
  std::memset(&f, 0x5A, sizeof(f));
  f.struct_size = offsetof(rd_frame_t, width);
  int32_t available = 0;
  EXPECT_STATUS(rd_session_poll_frame(s, depth.data(), depth.size(), &f, &available), RD_OK);
  RD_CHECK(available == 1 && f.index == 0 && f.timestamp == 0.5 && f.starts_shot == 1);
  RD_CHECK(f.struct_size == offsetof(rd_frame_t, width));
  int32_t untouched;
  std::memset(&untouched, 0x5A, sizeof(untouched));
  RD_CHECK(f.width == untouched && f.height == untouched);
  f.struct_size = sizeof(f) + 4;  // newer than this library: refused, and no frame is lost
  EXPECT_STATUS(rd_session_poll_frame(s, depth.data(), depth.size(), &f, &available), RD_ERR_VERSION);
  rd_frame_init(&f);
  EXPECT_STATUS(rd_session_poll_frame(s, depth.data(), depth.size(), &f, &available), RD_OK);
  RD_CHECK(available == 1 && f.index == 1 && f.width == 64 && f.starts_shot == 0);
  // the ABI 1 options struct (its layout, kept here) opens a session with the defaults of the newer fields
  struct session_options_v1 {
    uint32_t struct_size;
    const char* preset;
    int32_t lag, res, num_dilations, dilations[8];
    int64_t seed;
    int32_t restore_input_size;
  } v1;
  static_assert(sizeof(session_options_v1) == offsetof(rd_session_options_t, on_frame), "ABI 1 layout");
  (rd_session_options_init)(reinterpret_cast<rd_session_options_t*>(&v1));
  RD_CHECK(v1.struct_size == sizeof(v1) && v1.res == -1 && v1.seed == -1);
  v1.res = 64;
  v1.seed = 7;
  v1.num_dilations = 2;
  v1.dilations[0] = 1;
  v1.dilations[1] = 2;
  rd_session_t* s1 = nullptr;
  EXPECT_STATUS(rd_session_open(e, reinterpret_cast<const rd_session_options_t*>(&v1), &s1), RD_OK);
  for (int i = 0; i < na; ++i) {
    auto p = frame(96, 64, 96 * 3, i);
    EXPECT_STATUS(rd_session_push(s1, p.data(), 96, 64, 96 * 3, i / 30.0, nullptr), RD_OK);
  }
  EXPECT_STATUS(rd_session_flush(s1, nullptr), RD_OK);
  const auto v1_frames = drain(s1);  // no on_frame read from beyond its struct: the frames wait in poll
  RD_CHECK(static_cast<int>(v1_frames.size()) == na);
  EXPECT_STATUS(rd_session_close(s1), RD_OK);
  EXPECT_STATUS(rd_session_close(s), RD_OK);
  EXPECT_STATUS(rd_engine_close(e), RD_OK);
}

// Sparse metric anchors (ABI 2.1): every bad input refused with its message and the session unchanged; exact
// affine anchors reproduced at every pixel; frames before the first fit flagged; a cut and a reset drop the fit.
constexpr double kA = 0.2, kB = 0.6;  // anchors at 1 / z = kA * d + kB of the relative depth d

struct Pushed {
  rd_status status;
  std::string error;
};

Pushed push_anchored(rd_session_t* s, int i, const rd_anchors_t* a, int32_t* finished = nullptr) {
  auto p = frame(96, 64, 96 * 3, i);
  rd_frame_input_t in;
  rd_frame_input_init(&in);
  in.rgb = p.data();
  in.width = 96;
  in.height = 64;
  in.timestamp_ns = i * 1000;
  in.anchors = a;
  const rd_status st = rd_session_push_frame(s, &in, finished);
  return {st, rd_last_error()};
}

void expect_refused_anchors(rd_session_t* s, int i, const rd_anchors_t& a, const std::string& words,
                            rd_status code = RD_ERR_INVALID_ARGUMENT) {
  const Pushed r = push_anchored(s, i, &a);
  if (r.status != code || r.error.find(words) == std::string::npos || r.error.find('\n') != std::string::npos) {
    std::fprintf(stderr, "anchors: expected %s with '%s', got %s: %s\n", rd_status_name(code), words.c_str(),
                 rd_status_name(r.status), r.error.c_str());
    std::exit(1);
  }
}

struct Outputs {
  rd_frame_t info;
  std::vector<float> depth, depth_m, confidence;
};

std::vector<Outputs> drain_outputs(rd_session_t* s) {
  std::vector<Outputs> out;
  int32_t w = 0, h = 0, available = 0;
  if (rd_session_output_size(s, &w, &h) != RD_OK) return out;
  for (;;) {
    Outputs o;
    rd_frame_init(&o.info);
    const size_t n = static_cast<size_t>(w) * h;
    o.depth.resize(n);
    o.depth_m.resize(n);
    o.confidence.resize(n);
    EXPECT_STATUS(rd_session_poll_outputs(s, o.depth.data(), o.depth_m.data(), o.confidence.data(), n, &o.info,
                                          &available), RD_OK);
    if (!available) break;
    RD_CHECK(o.info.depth_m == o.depth_m.data() && o.info.confidence == o.confidence.data());
    out.push_back(std::move(o));
  }
  return out;
}

// Points at the centres of processed pixels (64x42 of a 96x64 frame), in input pixels, with exact anchors.
struct Points {
  std::vector<float> x, y, z;
};
Points exact_points(const std::vector<float>& depth, int step) {
  Points p;
  for (int py = 1; py < 42; py += step)
    for (int px = 2; px < 64; px += step) {
      p.x.push_back(static_cast<float>((px + 0.5) * 96.0 / 64.0 - 0.5));
      p.y.push_back(static_cast<float>((py + 0.5) * 64.0 / 42.0 - 0.5));
      p.z.push_back(static_cast<float>(1.0 / (kA * depth[static_cast<size_t>(py) * 64 + px] + kB)));
    }
  return p;
}

double worst_metric_error(const Outputs& o) {  // relative, over every pixel, against the exact affine
  double worst = 0;
  for (size_t k = 0; k < o.depth.size(); ++k) {
    const double truth = 1.0 / (kA * static_cast<double>(o.depth[k]) + kB);
    worst = std::max(worst, std::fabs(o.depth_m[k] / truth - 1.0));
  }
  return worst;
}

void anchors(const fs::path& engine) {
  rd_engine_t* e = nullptr;
  EXPECT_STATUS(rd_engine_open(engine.c_str(), nullptr, &e), RD_OK);
  const int n = 8, first_anchored = 3;
  const auto ref = fresh_run(e, 0, 0, n);  // without anchors
  rd_session_options_t so = small_options(0);
  rd_session_t* s = nullptr;
  EXPECT_STATUS(rd_session_open(e, &so, &s), RD_OK);

  // bad anchors, before and during a stream: each refused with its own message, nothing pushed
  const float xs[2] = {10, 20}, ys[2] = {5, 6}, zs[2] = {1.5f, 2.5f};
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<uint16_t> mm(96 * 64, 0);
  std::vector<float> metres(96 * 64, 0.0f);
  auto check_all_refused = [&](int i) {
    rd_anchors_t a;
    rd_anchors_init(&a);
    RD_CHECK(a.struct_size == sizeof(a) && a.kind == RD_ANCHORS_NONE);
    a.kind = 7;
    expect_refused_anchors(s, i, a, "kind must be");
    a = rd_anchors_t{};
    expect_refused_anchors(s, i, a, "not initialized");  // struct_size 0
    rd_anchors_init(&a);
    a.struct_size = sizeof(a) + 8;
    expect_refused_anchors(s, i, a, "newer rd_engine.h", RD_ERR_VERSION);
    rd_anchors_init(&a);
    a.kind = RD_ANCHORS_POINTS;
    a.count = -1;
    expect_refused_anchors(s, i, a, "count must be >= 0");
    a.count = 2;
    a.x = xs;
    a.y = ys;
    expect_refused_anchors(s, i, a, "depth NULL");  // NULL arrays with count > 0
    float bx[2] = {10, nan}, by[2] = {inf, 6}, bz[2] = {nan, 2};
    a.depth = zs;
    a.x = bx;
    expect_refused_anchors(s, i, a, "x[1] is nan");
    a.x = xs;
    a.y = by;
    expect_refused_anchors(s, i, a, "y[0] is inf");
    a.y = ys;
    a.depth = bz;
    expect_refused_anchors(s, i, a, "depth[0] is nan");
    float neg[2] = {2, -1}, zero[2] = {0, 2};
    a.depth = neg;
    expect_refused_anchors(s, i, a, "depth[1] is -1: depth must be > 0 metres");
    a.depth = zero;
    expect_refused_anchors(s, i, a, "depth[0] is 0: depth must be > 0 metres");
    a.depth = zs;
    float out_x[2] = {95.5f, 95.6f}, out_y[2] = {-0.5f, -0.6f};
    a.x = out_x;
    expect_refused_anchors(s, i, a, "point 1 (95.6, 6) lies outside the 96x64 input frame");
    a.x = xs;
    a.y = out_y;
    expect_refused_anchors(s, i, a, "point 1 (20, -0.6) lies outside");
    a = rd::anchor_image_mm(mm.data(), 95, 64);
    expect_refused_anchors(s, i, a, "the sparse depth image is 95x64; it must have the frame's size 96x64");
    a = rd::anchor_image_mm(nullptr, 96, 64);
    expect_refused_anchors(s, i, a, "image is NULL");
    a = rd::anchor_image_mm(mm.data(), 96, 64, 96 * 2 - 2);
    expect_refused_anchors(s, i, a, "row_stride 190 is smaller than 2 * width = 192");
    metres[5 * 96 + 7] = -0.5f;
    a = rd::anchor_image_m(metres.data(), 96, 64);
    expect_refused_anchors(s, i, a, "negative depth -0.5 at pixel (7, 5)");
    metres[5 * 96 + 7] = 0.0f;
  };
  check_all_refused(0);
  int32_t w = 0, h = 0;
  EXPECT_STATUS(rd_session_output_size(s, &w, &h), RD_ERR_STATE);  // no frame went in
  // an ABI 2.0 caller's smaller rd_frame_input_t: the anchors field beyond its size is never read
  {
    auto p = frame(96, 64, 96 * 3, 0);
    rd_frame_input_t in;
    rd_frame_input_init(&in);
    in.struct_size = offsetof(rd_frame_input_t, anchors);
    in.rgb = p.data();
    in.width = 96;
    in.height = 64;
    in.anchors = reinterpret_cast<const rd_anchors_t*>(uintptr_t{8});  // garbage past the struct
    rd_session_t* old = nullptr;
    EXPECT_STATUS(rd_session_open(e, &so, &old), RD_OK);
    EXPECT_STATUS(rd_session_push_frame(old, &in, nullptr), RD_OK);
    EXPECT_STATUS(rd_session_close(old), RD_OK);
  }
  // frames 0..2 without anchors (an empty points list, an all-zero image, none), then bad anchors again
  rd_anchors_t empty = rd::anchor_points(nullptr, nullptr, nullptr, 0);
  RD_CHECK(push_anchored(s, 0, &empty).status == RD_OK);
  rd_anchors_t zeros = rd::anchor_image_mm(mm.data(), 96, 64);
  RD_CHECK(push_anchored(s, 1, &zeros).status == RD_OK);
  RD_CHECK(push_anchored(s, 2, nullptr).status == RD_OK);
  check_all_refused(3);
  rd_session_timing_t t{};
  EXPECT_STATUS(rd_session_timing(s, &t), RD_OK);
  RD_CHECK(t.frames == 3);
  // frames 3.. with exact affine anchors (points on frame 3, a float32 metres image on frame 5, nothing on
  // the others; the edges x = -0.5 and x = 95.5 are inside)
  int64_t n_points = 0, n_image = 0;
  for (int i = first_anchored; i < n; ++i) {
    Points p = exact_points(ref[i].depth, 3);
    if (i == first_anchored) {
      p.x.push_back(-0.5f);
      p.y.push_back(63.5f);
      p.z.push_back(static_cast<float>(1.0 / (kA * ref[i].depth[41 * 64 + 0] + kB)));
      p.x.push_back(95.5f);
      p.y.push_back(-0.5f);
      p.z.push_back(static_cast<float>(1.0 / (kA * ref[i].depth[63] + kB)));
    }
    if (i == 5) {
      // the image's pixel (u, v) is the point (u, v), sampled at the processed pixel containing it
      std::vector<float> kept(96 * 64, 0.0f);
      for (int py = 1; py < 42; py += 3)
        for (int px = 2; px < 64; px += 3) {
          const int u = static_cast<int>(std::lround((px + 0.5) * 1.5 - 0.5)),
                    v = static_cast<int>(std::lround((py + 0.5) * 64.0 / 42.0 - 0.5));
          const double xp = (u + 0.5) * (64.0 / 96.0) - 0.5, yp = (v + 0.5) * (42.0 / 64.0) - 0.5;
          const size_t q = static_cast<size_t>(std::nearbyint(yp)) * 64 + static_cast<size_t>(std::nearbyint(xp));
          kept[static_cast<size_t>(v) * 96 + u] = static_cast<float>(1.0 / (kA * ref[i].depth[q] + kB));
        }
      kept[0] = nan;  // NaN: no sample (ROS 32FC1)
      kept[1] = inf;
      for (float z : kept) n_image += z > 0 && std::isfinite(z) ? 1 : 0;
      const rd_anchors_t a = rd::anchor_image_m(kept.data(), 96, 64);
      RD_CHECK(push_anchored(s, i, &a).status == RD_OK);
    } else if (i == first_anchored) {
      n_points = static_cast<int64_t>(p.z.size());
      const rd_anchors_t a = rd::anchor_points(p.x.data(), p.y.data(), p.z.data(), static_cast<int64_t>(p.z.size()));
      RD_CHECK(push_anchored(s, i, &a).status == RD_OK);
    } else {
      RD_CHECK(push_anchored(s, i, nullptr).status == RD_OK);
    }
  }
  EXPECT_STATUS(rd_session_flush(s, nullptr), RD_OK);
  const auto got = drain_outputs(s);
  RD_CHECK(static_cast<int>(got.size()) == n);
  for (int i = 0; i < n; ++i) {
    const Outputs& o = got[i];
    RD_CHECK(max_diff(o.depth, ref[i].depth) == 0);  // anchors never change the relative depth
    for (float c : o.confidence) RD_CHECK(c >= 0.0f && c <= 1.0f);
    if (i < first_anchored) {  // finished before any anchor: flagged, no metric depth
      RD_CHECK(o.info.has_metric == 0 && o.info.metric_samples == 0 && o.info.anchors == 0);
      for (float z : o.depth_m) RD_CHECK(std::isnan(z));
    } else {
      const double worst = worst_metric_error(o);
      std::printf("anchors: frame %d: %lld anchors, fit of %lld (%lld inliers), scale %.9g shift %.9g, worst "
                  "relative depth error %.3g\n", i, static_cast<long long>(o.info.anchors),
                  static_cast<long long>(o.info.metric_samples), static_cast<long long>(o.info.metric_inliers),
                  o.info.metric_scale, o.info.metric_shift, worst);
      RD_CHECK(o.info.has_metric == 1);
      RD_CHECK(worst < 1e-4);  // exact affine anchors reproduced at every pixel (the issue's bound)
      RD_CHECK(std::fabs(o.info.metric_scale / kA - 1) < 1e-5 && std::fabs(o.info.metric_shift / kB - 1) < 1e-5);
      RD_CHECK(o.info.anchors == (i == first_anchored ? n_points : i == 5 ? n_image : 0));
      RD_CHECK(o.info.metric_samples == (i < 5 ? n_points : n_points + n_image));
    }
  }
  // confidence: 0 where one entry covers the frame, else 1 / (1 + spread / 0.02) > 0 somewhere
  double cmax = 0;
  for (float c : got[4].confidence) cmax = std::max<double>(cmax, c);
  RD_CHECK(cmax > 0.0);
  // the old poll on a full-size struct gets the fit too, without the buffer pointers
  EXPECT_STATUS(rd_session_reset(s), RD_OK);
  for (int i = 0; i < 4; ++i) {
    Points p = exact_points(ref[i].depth, 4);
    const rd_anchors_t a = rd::anchor_points(p.x.data(), p.y.data(), p.z.data(), static_cast<int64_t>(p.z.size()));
    RD_CHECK(push_anchored(s, i, i == 2 ? &a : nullptr).status == RD_OK);
  }
  std::vector<float> depth(64 * 42);
  rd_frame_t f;
  int32_t available = 0;
  for (int i = 0; i < 3; ++i) {  // frames 0, 1 before the fit; frame 2 brings it
    rd_frame_init(&f);
    f.depth_m = depth.data();  // overwritten with NULL
    EXPECT_STATUS(rd_session_poll_frame(s, depth.data(), depth.size(), &f, &available), RD_OK);
    RD_CHECK(available == 1 && f.index == i && f.has_metric == (i == 2) && f.depth_m == nullptr);
  }
  RD_CHECK(std::fabs(f.metric_scale / kA - 1) < 1e-5);
  // a cut: the new shot starts without a fit (frames flagged until its own anchors)
  EXPECT_STATUS(rd_session_cut(s, nullptr), RD_OK);
  RD_CHECK(push_anchored(s, 4, nullptr).status == RD_OK);
  RD_CHECK(push_anchored(s, 5, nullptr).status == RD_OK);
  RD_CHECK(push_anchored(s, 6, nullptr).status == RD_OK);
  auto after = drain_outputs(s);
  RD_CHECK(after.size() == 4);  // frame 3 (finished by the cut, with shot 1's fit), then 4, 5, 6
  RD_CHECK(after[0].info.index == 3 && after[0].info.has_metric == 1);
  for (size_t k = 1; k < after.size(); ++k) RD_CHECK(after[k].info.has_metric == 0 && after[k].info.starts_shot == (k == 1));
  // a reset drops the fit as well
  EXPECT_STATUS(rd_session_reset(s), RD_OK);
  for (int i = 0; i < 3; ++i) RD_CHECK(push_anchored(s, i, nullptr).status == RD_OK);
  for (const auto& o : drain_outputs(s)) RD_CHECK(o.info.has_metric == 0);
  EXPECT_STATUS(rd_session_close(s), RD_OK);

  // restore_input_size: depth_m and confidence at the input size, from the fit at the processed size
  so = small_options(0);
  so.restore_input_size = 1;
  EXPECT_STATUS(rd_session_open(e, &so, &s), RD_OK);
  for (int i = 0; i < 4; ++i) {
    Points p = exact_points(ref[i].depth, 3);
    const rd_anchors_t a = rd::anchor_points(p.x.data(), p.y.data(), p.z.data(), static_cast<int64_t>(p.z.size()));
    RD_CHECK(push_anchored(s, i, i == 2 ? &a : nullptr).status == RD_OK);
  }
  EXPECT_STATUS(rd_session_output_size(s, &w, &h), RD_OK);
  RD_CHECK(w == 96 && h == 64);
  const auto restored = drain_outputs(s);
  RD_CHECK(restored.size() == 4 && restored[2].info.has_metric == 1 && restored[2].depth_m.size() == 96 * 64);
  RD_CHECK(worst_metric_error(restored[2]) < 1e-4);  // the resized relative depth through the same fit
  for (float c : restored[2].confidence) RD_CHECK(c >= 0.0f && c <= 1.0f);
  EXPECT_STATUS(rd_session_close(s), RD_OK);

  // the frame callback gets depth_m and confidence as the poll does
  std::vector<Polled> called;
  std::vector<std::vector<float>> called_m, called_c;
  struct Sink {
    std::vector<Polled>* frames;
    std::vector<std::vector<float>>* m;
    std::vector<std::vector<float>>* c;
  } sink{&called, &called_m, &called_c};
  so = small_options(0);
  so.on_frame = [](const float* d, const rd_frame_t* fr, void* user) {
    auto* k = static_cast<Sink*>(user);
    on_frame_collect(d, fr, k->frames);
    const size_t m = static_cast<size_t>(fr->width) * fr->height;
    k->m->push_back(fr->depth_m ? std::vector<float>(fr->depth_m, fr->depth_m + m) : std::vector<float>());
    k->c->push_back(std::vector<float>(fr->confidence, fr->confidence + m));
  };
  so.on_frame_user = &sink;
  EXPECT_STATUS(rd_session_open(e, &so, &s), RD_OK);
  for (int i = 0; i < n; ++i) {
    Points p = exact_points(ref[i].depth, 3);
    const rd_anchors_t a = rd::anchor_points(p.x.data(), p.y.data(), p.z.data(), static_cast<int64_t>(p.z.size()));
    RD_CHECK(push_anchored(s, i, i == first_anchored ? &a : nullptr).status == RD_OK);
  }
  EXPECT_STATUS(rd_session_flush(s, nullptr), RD_OK);
  RD_CHECK(static_cast<int>(called.size()) == n);
  for (int i = 0; i < n; ++i) {
    RD_CHECK(called[i].info.has_metric == (i >= first_anchored));
    RD_CHECK(called_m[i].empty() == (i < first_anchored));  // depth_m NULL in the callback without a fit
    if (i >= first_anchored) {
      Outputs o{called[i].info, called[i].depth, called_m[i], called_c[i]};
      RD_CHECK(worst_metric_error(o) < 1e-4);
    }
    RD_CHECK(max_diff(called_c[i], got[i].confidence) == 0);
  }
  EXPECT_STATUS(rd_session_close(s), RD_OK);
  EXPECT_STATUS(rd_engine_close(e), RD_OK);
}

}  // namespace

int main(int argc, char** argv) {
  without_engine();
  abi();
  if (argc > 1) {
    with_engine(argv[1]);
    embedder(argv[1]);
    anchors(argv[1]);
  }
  std::printf("c_api: ok%s\n", argc > 1 ? " (with engine)" : "");
  return 0;
}
