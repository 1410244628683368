// The C API's answers to bad input: an error code and a message, never a crash.
// Usage: rd_c_api_tests [ENGINE_DIR]  (with an AOTInductor CPU engine folder, also the cases that need a model)
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cmath>
#include <cstddef>
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
  RD_CHECK(info.find("abi 2.0") != std::string::npos && info.find(" torch 2.") != std::string::npos);
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
}  // namespace

int main(int argc, char** argv) {
  without_engine();
  abi();
  if (argc > 1) {
    with_engine(argv[1]);
    embedder(argv[1]);
  }
  std::printf("c_api: ok%s\n", argc > 1 ? " (with engine)" : "");
  return 0;
}
