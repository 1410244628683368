// The C API under concurrent use: close during open, close during push, cancel during push, one producer
// pushing while one consumer polls. Built plain, under ASan+UBSan, and (RD_TSAN) under ThreadSanitizer.
// Usage: rd_thread_tests ENGINE_DIR
#include <atomic>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <thread>
#include <vector>

#include "check.h"
#include "rd_engine/rd_engine.h"

namespace {

std::vector<uint8_t> frame(int w, int h, int seed) {
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>((i * 7 + seed * 13) & 255);
  return px;
}

rd_session_options_t options() {
  rd_session_options_t so;
  rd_session_options_init(&so);
  so.res = 64;
  so.seed = 3;
  so.lag = 1;
  so.num_dilations = 2;
  so.dilations[0] = 1;
  so.dilations[1] = 2;
  return so;
}

rd_engine_t* open_engine(const char* dir) {
  rd_engine_options_t eo;
  rd_engine_options_init(&eo);
  eo.verify_files = 0;  // the checksums are tested elsewhere; here only the handles matter
  rd_engine_t* e = nullptr;
  const rd_status st = rd_engine_open(dir, &eo, &e);
  if (st != RD_OK) std::fprintf(stderr, "rd_engine_open: %s\n", rd_last_error());
  RD_CHECK(st == RD_OK);
  return e;
}

// One thread opens sessions on an engine while another closes it: every open either succeeds (and its
// session works: it keeps the engine loaded) or gets RD_ERR_INVALID_HANDLE; never a use after free.
void close_during_open(const char* dir) {
  const auto px = frame(96, 64, 0);
  for (int round = 0; round < 2; ++round) {
    rd_engine_t* e = open_engine(dir);
    std::atomic<bool> go{false};
    std::atomic<int> opened{0}, refused{0};
    std::thread opener([&] {
      while (!go.load()) std::this_thread::yield();
      for (int i = 0; i < 400; ++i) {
        const rd_session_options_t so = options();
        rd_session_t* s = nullptr;
        const rd_status st = rd_session_open(e, &so, &s);
        RD_CHECK(st == RD_OK || st == RD_ERR_INVALID_HANDLE);
        if (st == RD_OK) {
          ++opened;
          if (i % 100 == 0) RD_CHECK(rd_session_push(s, px.data(), 96, 64, 96 * 3, 0.0, nullptr) == RD_OK);
          RD_CHECK(rd_session_close(s) == RD_OK);
        } else {
          RD_CHECK(s == nullptr);
          ++refused;
        }
      }
    });
    go.store(true);
    for (int spin = 0; spin < 20000 * round; ++spin) std::this_thread::yield();  // close early, then later
    RD_CHECK(rd_engine_close(e) == RD_OK);
    opener.join();
    RD_CHECK(opened.load() + refused.load() == 400);
    RD_CHECK(rd_engine_close(e) == RD_ERR_INVALID_HANDLE);
    std::printf("close during open, round %d: %d opened, %d refused\n", round, opened.load(), refused.load());
  }
}

// One producer pushes (with sparse metric anchors from frame 2 on), one consumer polls the outputs at the
// same time: the relative depth equals a one-thread run without anchors; frames 2.. carry metric depth.
void producer_consumer(rd_engine_t* e) {
  const int n = 10;
  const rd_session_options_t so = options();
  std::vector<std::vector<float>> sequential;
  {
    rd_session_t* s = nullptr;
    RD_CHECK(rd_session_open(e, &so, &s) == RD_OK);
    for (int i = 0; i < n; ++i) {
      const auto px = frame(96, 64, i);
      RD_CHECK(rd_session_push(s, px.data(), 96, 64, 96 * 3, i, nullptr) == RD_OK);
    }
    RD_CHECK(rd_session_flush(s, nullptr) == RD_OK);
    std::vector<float> d(64 * 42);
    int32_t available = 1;
    while (true) {
      RD_CHECK(rd_session_poll(s, d.data(), d.size(), nullptr, &available) == RD_OK);
      if (!available) break;
      sequential.push_back(d);
    }
    RD_CHECK(rd_session_close(s) == RD_OK);
  }
  RD_CHECK(static_cast<int>(sequential.size()) == n);
  rd_session_t* s = nullptr;
  RD_CHECK(rd_session_open(e, &so, &s) == RD_OK);
  std::atomic<bool> done{false};
  std::vector<std::vector<float>> polled;
  std::vector<int64_t> indices;
  std::vector<int> metric;
  std::thread consumer([&] {
    std::vector<float> d(64 * 42), m(64 * 42), c(64 * 42);
    rd_frame_t f;
    for (;;) {
      const bool finished = done.load();
      int32_t available = 0;
      rd_frame_init(&f);
      RD_CHECK(rd_session_poll_outputs(s, d.data(), m.data(), c.data(), d.size(), &f, &available) == RD_OK);
      if (available) {
        polled.push_back(d);
        indices.push_back(f.index);
        metric.push_back(f.has_metric);
        for (float v : c) RD_CHECK(v >= 0.0f && v <= 1.0f);
      } else if (finished) {
        break;
      } else {
        std::this_thread::yield();
      }
    }
  });
  std::vector<uint16_t> sparse(96 * 64, 0);
  for (int y = 2; y < 64; y += 8)
    for (int x = 1; x < 96; x += 4) sparse[y * 96 + x] = static_cast<uint16_t>(1500 + 20 * x + 7 * y);
  for (int i = 0; i < n; ++i) {
    const auto px = frame(96, 64, i);
    rd_anchors_t a;
    rd_anchors_init(&a);
    a.kind = RD_ANCHORS_IMAGE_U16_MM;
    a.image = sparse.data();
    a.width = 96;
    a.height = 64;
    rd_frame_input_t in;
    rd_frame_input_init(&in);
    in.rgb = px.data();
    in.width = 96;
    in.height = 64;
    in.timestamp_ns = i;
    in.anchors = i >= 2 ? &a : nullptr;
    RD_CHECK(rd_session_push_frame(s, &in, nullptr) == RD_OK);
  }
  RD_CHECK(rd_session_flush(s, nullptr) == RD_OK);
  done.store(true);
  consumer.join();
  RD_CHECK(static_cast<int>(polled.size()) == n);
  for (int i = 0; i < n; ++i) {
    RD_CHECK(indices[i] == i);
    RD_CHECK(metric[i] == (i >= 2 ? 1 : 0));
    RD_CHECK(std::memcmp(polled[i].data(), sequential[i].data(), polled[i].size() * sizeof(float)) == 0);
  }
  RD_CHECK(rd_session_close(s) == RD_OK);
}

// Cancel and close from another thread while a thread pushes: every push returns OK, CANCELLED, BROKEN
// (after the cancel) or INVALID_HANDLE (after the close).
void cancel_and_close_during_push(rd_engine_t* e) {
  const rd_session_options_t so = options();
  rd_session_t* s = nullptr;
  RD_CHECK(rd_session_open(e, &so, &s) == RD_OK);
  std::atomic<int> pushed{0};
  std::atomic<bool> cancelled_seen{false};
  std::thread pusher([&] {
    for (int i = 0;; ++i) {
      const auto px = frame(96, 64, i);
      const rd_status st = rd_session_push(s, px.data(), 96, 64, 96 * 3, i, nullptr);
      RD_CHECK(st == RD_OK || st == RD_ERR_CANCELLED || st == RD_ERR_SESSION_BROKEN || st == RD_ERR_INVALID_HANDLE);
      if (st == RD_ERR_CANCELLED) cancelled_seen.store(true);
      if (st == RD_ERR_SESSION_BROKEN) RD_CHECK(cancelled_seen.load());
      if (st == RD_ERR_INVALID_HANDLE) break;
      ++pushed;
    }
  });
  while (pushed.load() < 4) std::this_thread::yield();
  RD_CHECK(rd_session_cancel(s) == RD_OK);
  while (!cancelled_seen.load()) std::this_thread::yield();
  RD_CHECK(rd_session_close(s) == RD_OK);
  pusher.join();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return std::fprintf(stderr, "usage: rd_thread_tests ENGINE_DIR\n"), 2;
  close_during_open(argv[1]);
  rd_engine_t* e = open_engine(argv[1]);
  producer_consumer(e);
  cancel_and_close_during_push(e);
  RD_CHECK(rd_engine_close(e) == RD_OK);
  std::printf("threads: ok\n");
  return 0;
}
