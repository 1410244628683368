// depth_consumer ENGINE_DIR: an embedding of rd-engine, 20 lines of it (synthetic frames in, depth out).
#include <cstdio>
#include <vector>

#include "rd_engine/rd_engine.hpp"

int main(int argc, char** argv) try {
  if (argc != 2) return std::fprintf(stderr, "usage: depth_consumer ENGINE_DIR\n"), 2;
  rd::EngineHandle engine(argv[1]);                        // load once, share between streams
  rd::Stream stream(engine, {"fast", /*lag=*/2, /*res=*/64});  // one stream per thread
  std::vector<uint8_t> rgb(96 * 64 * 3);
  for (int i = 0; i < 8; ++i) {                            // e.g. frames from a camera callback
    for (size_t p = 0; p < rgb.size(); ++p) rgb[p] = static_cast<uint8_t>(p * 7 + i * 13);
    stream.push(rgb.data(), 96, 64, i / 30.0);
    for (const rd::Frame& f : stream.take())               // frames whose lag has passed
      std::printf("frame %lld: %dx%d, %.1f ms\n", (long long)f.index, f.width, f.height, 1e3 * f.latency_s);
  }
  stream.flush();                                          // end of stream: the rest
  for (const rd::Frame& f : stream.take()) std::printf("frame %lld (flush)\n", (long long)f.index);
  return 0;
} catch (const rd::Exception& e) {
  std::fprintf(stderr, "depth_consumer: %s\n", e.what());
  return 1;
}
