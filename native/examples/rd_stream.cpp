// rd_stream: online depth from raw RGB frames on standard input, with no Python.
//
//   ffmpeg -i in.mp4 -f rawvideo -pix_fmt rgb24 - | rd_stream --engine DIR --size WxH > depth.f32
//
// Writes each finished frame as raw float32 (row-major, at the processed size unless --restore),
// as `rd-engine run --stream` computes it, or as 16-bit PNGs (--png16 DIR: the stream's range
// [-1, 1] onto 0..65535). A per-frame latency log with --latency-log FILE; a summary on stderr.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#ifdef RD_HAVE_PNG
#include <png.h>
#endif

#include "rd_engine/rd_engine.hpp"

namespace fs = std::filesystem;

namespace {

const char* const kUsage = R"(usage: rd_stream --engine DIR --size WxH [options] < frames.rgb > depth.f32

Online RollingDepth on raw RGB24 frames read from standard input (e.g. from
ffmpeg -f rawvideo -pix_fmt rgb24 -). Each finished frame is written to standard
output as raw float32, row-major (relative inverse depth in the stream's frame,
the first snippet spanning [-1, 1]).

options:
  --engine DIR        engine folder with AOTInductor packages (rd-engine build --backend aoti)
  --size WxH          size of the input frames
  --device DEV        cpu (default), cuda or cuda:N: what the engine was built for
  --backend B         aoti (default): AOTInductor packages; tensorrt: TensorRT plans (a TensorRT build)
  --preset NAME       fast (default), fast1024, full, paper: resolution and dilations
  --lag K             frames of look-ahead before a frame is finished (default 0)
  --res N             longer processed edge (default: the preset's; 0 keeps the input size)
  --dilations D...    snippet dilations (default: the preset's; must include 1)
  --seed S            initial noise seed (default: random, printed in the summary)
  --fps F             timestamps are index / F seconds (default 30)
  --restore           depth at the input size instead of the processed size
  --png16 DIR         write DIR/frame_NNNNNN.png (16-bit) instead of raw floats; DIR appears when complete
  --latency-log FILE  CSV per frame: index,timestamp,latency_s
  --stats FILE        JSON: frames, seed, latency percentiles, seconds per stage
  --warmup N          first run a throwaway stream over the first N frames (loads and warms the
                      packages, for latency measurements)
  -h, --help          this help
)";

struct Args {
  std::string engine, device = "cpu", backend = "aoti", preset = "fast", png16, latency_log, stats;
  int width = 0, height = 0, lag = 0, res = -1, warmup = 0;
  std::vector<int> dilations;
  int64_t seed = -1;
  double fps = 30.0;
  bool restore = false;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "rd_stream: error: " << message << " (see rd_stream --help)\n";
  std::exit(2);
}

long parse_int(const std::string& flag, const std::string& text, long lo) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || v < lo)
    usage_error(flag + " takes an integer >= " + std::to_string(lo) + ", got '" + text + "'");
  return v;
}

Args parse(int argc, char** argv) {
  Args a;
  auto value = [&](int& i, const std::string& flag) -> std::string {
    if (i + 1 >= argc) usage_error(flag + " needs a value");
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "-h" || f == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else if (f == "--engine") {
      a.engine = value(i, f);
    } else if (f == "--size") {
      const std::string s = value(i, f);
      const auto x = s.find('x');
      if (x == std::string::npos) usage_error("--size takes WxH, got '" + s + "'");
      a.width = static_cast<int>(parse_int("--size", s.substr(0, x), 1));
      a.height = static_cast<int>(parse_int("--size", s.substr(x + 1), 1));
    } else if (f == "--device") {
      a.device = value(i, f);
    } else if (f == "--backend") {
      a.backend = value(i, f);
    } else if (f == "--preset") {
      a.preset = value(i, f);
    } else if (f == "--lag") {
      a.lag = static_cast<int>(parse_int(f, value(i, f), 0));
    } else if (f == "--res") {
      a.res = static_cast<int>(parse_int(f, value(i, f), 0));
    } else if (f == "--dilations") {
      while (i + 1 < argc && argv[i + 1][0] != '-') a.dilations.push_back(static_cast<int>(parse_int(f, argv[++i], 1)));
      if (a.dilations.empty()) usage_error("--dilations needs at least one value");
    } else if (f == "--seed") {
      a.seed = parse_int(f, value(i, f), 0);
    } else if (f == "--fps") {
      const std::string s = value(i, f);
      char* end = nullptr;
      a.fps = std::strtod(s.c_str(), &end);
      if (s.empty() || *end != '\0' || !(a.fps > 0) || !std::isfinite(a.fps))
        usage_error("--fps takes a positive number, got '" + s + "'");
    } else if (f == "--restore") {
      a.restore = true;
    } else if (f == "--png16") {
      a.png16 = value(i, f);
    } else if (f == "--latency-log") {
      a.latency_log = value(i, f);
    } else if (f == "--warmup") {
      a.warmup = static_cast<int>(parse_int(f, value(i, f), 0));
    } else if (f == "--stats") {
      a.stats = value(i, f);
    } else {
      usage_error("unknown option '" + f + "'");
    }
  }
  if (a.engine.empty()) usage_error("--engine DIR is required");
  if (a.width == 0) usage_error("--size WxH is required");
  return a;
}

#ifdef RD_HAVE_PNG
void write_png16(const fs::path& path, const rd::Frame& f) {
  FILE* fp = std::fopen(path.c_str(), "wb");
  if (!fp) throw std::runtime_error("cannot write " + path.string() + ": " + std::strerror(errno));
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    std::fclose(fp);
    throw std::runtime_error("cannot encode " + path.string());
  }
  png_init_io(png, fp);
  png_set_IHDR(png, info, f.width, f.height, 16, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  std::vector<uint8_t> row(static_cast<size_t>(f.width) * 2);
  for (int y = 0; y < f.height; ++y) {
    for (int x = 0; x < f.width; ++x) {
      // the stream's range [-1, 1] onto 0..65535, as rd-engine's 16-bit PNGs: round(clip((d - lo) / (hi - lo)) * 65535)
      const float d = f.depth[static_cast<size_t>(y) * f.width + x];
      const double u = std::clamp((static_cast<double>(d) + 1.0) / 2.0, 0.0, 1.0);
      const auto v = static_cast<uint16_t>(std::nearbyint(u * 65535.0));
      row[2 * x] = static_cast<uint8_t>(v >> 8);  // PNG stores 16-bit samples big-endian
      row[2 * x + 1] = static_cast<uint8_t>(v & 0xff);
    }
    png_write_row(png, row.data());
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  if (std::fclose(fp) != 0) throw std::runtime_error("cannot write " + path.string());
}
#endif

struct Output {
  const Args& args;
  fs::path png_tmp;
  std::ofstream log;
  std::vector<double> latencies;
  long frames = 0;

  explicit Output(const Args& a) : args(a) {
    if (!a.png16.empty()) {
#ifndef RD_HAVE_PNG
      usage_error("--png16: this rd_stream was built without libpng");
#endif
      const fs::path dir(a.png16);
      png_tmp = dir.parent_path() / ("." + dir.filename().string() + ".partial");
      fs::remove_all(png_tmp);
      fs::create_directories(png_tmp);
    }
    if (!a.latency_log.empty()) {
      log.open(a.latency_log);
      if (!log) usage_error("cannot write the latency log " + a.latency_log);
      log << "index,timestamp,latency_s\n";
    }
  }

  void emit(rd::Stream& stream) {
    rd::Frame f;
    while (stream.poll(f)) {
      if (png_tmp.empty()) {
        const size_t n = f.depth.size();
        if (std::fwrite(f.depth.data(), sizeof(float), n, stdout) != n)
          throw std::runtime_error("cannot write to standard output");
      } else {
#ifdef RD_HAVE_PNG
        char name[32];
        std::snprintf(name, sizeof(name), "frame_%06lld.png", static_cast<long long>(f.index));
        write_png16(png_tmp / name, f);
#endif
      }
      if (log) log << f.index << ',' << f.timestamp << ',' << f.latency_s << '\n';
      latencies.push_back(f.latency_s);
      ++frames;
    }
  }

  void finish() {
    std::fflush(stdout);
    if (!png_tmp.empty()) {
      const fs::path dir(args.png16);
      fs::remove_all(dir);
      fs::rename(png_tmp, dir);
    }
  }

  void abandon() {
    if (!png_tmp.empty()) fs::remove_all(png_tmp);
  }
};

double percentile(std::vector<double> v, double q) {  // linear interpolation, as numpy's default
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const double pos = q / 100.0 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a closed reader becomes a write error, not a silent death
  const Args args = parse(argc, argv);
  std::unique_ptr<Output> out;
  try {
    rd::EngineHandle engine(args.engine, {args.device, "", true, args.backend});
    const rd::StreamConfig config{args.preset, args.lag, args.res, args.dilations, args.seed, args.restore};
    const size_t frame_bytes = static_cast<size_t>(args.width) * args.height * 3;
    std::vector<uint8_t> rgb(frame_bytes);
    std::vector<std::vector<uint8_t>> held;  // frames read for the warm-up, pushed again for real
    if (args.warmup > 0) {
      rd::Stream warm(engine, config);
      for (int i = 0; i < args.warmup; ++i) {
        const size_t got = std::fread(rgb.data(), 1, frame_bytes, stdin);
        if (got == 0) break;
        if (got != frame_bytes) throw std::runtime_error("standard input ended mid-frame during the warm-up");
        held.push_back(rgb);
        warm.push(rgb.data(), args.width, args.height, static_cast<double>(i) / args.fps);
        warm.take();
      }
      warm.flush();
    }
    rd::Stream stream(engine, config);
    out = std::make_unique<Output>(args);
    long index = 0;
    while (true) {
      size_t got;
      if (static_cast<size_t>(index) < held.size()) {
        rgb = held[index];
        got = frame_bytes;
      } else {
        got = std::fread(rgb.data(), 1, frame_bytes, stdin);
      }
      if (got == 0) break;
      if (got != frame_bytes)
        throw std::runtime_error("standard input ended mid-frame (" + std::to_string(got) + " of " +
                                 std::to_string(frame_bytes) + " bytes): is --size " + std::to_string(args.width) +
                                 "x" + std::to_string(args.height) + " the frames' size?");
      stream.push(rgb.data(), args.width, args.height, static_cast<double>(index) / args.fps);
      out->emit(stream);
      ++index;
    }
    if (index == 0) throw std::runtime_error("no frame on standard input");
    stream.flush();
    out->emit(stream);
    out->finish();
    std::fprintf(stderr, "rd_stream: %ld frames, seed %lld, latency p50 %.4f s, p95 %.4f s, p99 %.4f s\n", out->frames,
                 static_cast<long long>(stream.seed()), percentile(out->latencies, 50), percentile(out->latencies, 95),
                 percentile(out->latencies, 99));
    if (!args.stats.empty()) {
      const rd_session_timing_t t = stream.timing();
      std::ofstream js(args.stats);
      js.precision(9);
      js << "{\"frames\": " << out->frames << ", \"seed\": " << stream.seed() << ", \"latency_s\": {\"p50\": "
         << percentile(out->latencies, 50) << ", \"p95\": " << percentile(out->latencies, 95)
         << ", \"p99\": " << percentile(out->latencies, 99) << "}, \"stages_s\": {\"preprocess\": " << t.preprocess_s
         << ", \"encode\": " << t.encode_s << ", \"denoise\": " << t.denoise_s << ", \"decode\": " << t.decode_s
         << ", \"align\": " << t.align_s << ", \"total\": " << t.total_s << "}}\n";
      if (!js) throw std::runtime_error("cannot write " + args.stats);
    }
    return 0;
  } catch (const std::exception& e) {
    if (out) out->abandon();
    std::string what = e.what();
    std::cerr << "rd_stream: error: " << what.substr(0, what.find('\n')) << "\n";
    return 1;
  }
}
