// rd_stream: online depth from raw RGB frames on standard input, with no Python.
//
//   ffmpeg -i in.mp4 -f rawvideo -pix_fmt rgb24 - | rd_stream --engine DIR --size WxH > depth.f32
//
// Writes each finished frame as raw float32 (row-major, at the processed size unless --restore),
// as `rd-engine run --stream` computes it, or as 16-bit PNGs (--png16 DIR: the stream's range
// [-1, 1] onto 0..65535). A per-frame latency log with --latency-log FILE; a summary on stderr.
// With --anchors DIR (16-bit PNG sparse depth in millimetres, named by frame number) also metric depth
// (--depth-m FILE raw float32 metres, --depth-mm DIR 16-bit PNG millimetres) and confidence.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <regex>
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
  --cuts N...         0-based frame numbers that start a new shot (a cut before each, as an editor's
                      cut list: rd-engine --shots FILE)
  --png16 DIR         write DIR/frame_NNNNNN.png (16-bit) instead of raw floats; DIR appears when complete
  --latency-log FILE  CSV per frame: index,timestamp,latency_s
  --anchors DIR       sparse metric depth: DIR/*.png, 16-bit grayscale millimetres (0 = no sample), named
                      by the 0-based frame number (the last number in the name: 000012.png, depth_12.png);
                      any size (pixel centres map proportionally onto the frame), as rd-engine --anchors
  --depth-m FILE      metric depth per finished frame, raw float32 metres (NaN where invalid or before
                      the first fit), the layout of standard output's depth
  --depth-mm DIR      metric depth as DIR/frame_NNNNNN.png, 16-bit millimetres (ROS 16UC1, 0 = no depth)
  --confidence FILE   per-pixel confidence per finished frame, raw float32 in [0, 1]
  --confidence-png16 DIR  confidence as DIR/frame_NNNNNN.png, round(c * 65535)
  --metric-log FILE   CSV per frame: index,has_metric,anchors,samples,inliers,scale,shift,sigma
                      (1 / depth_m = scale * depth + shift)
  --stats FILE        JSON: frames, seed, latency percentiles, seconds per stage
  --warmup N          first run a throwaway stream over the first N frames (loads and warms the
                      packages, for latency measurements)
  -h, --help          this help
)";

struct Args {
  std::string engine, device = "cpu", backend = "aoti", preset = "fast", png16, latency_log, stats;
  std::string anchors, depth_m, depth_mm, confidence, confidence_png16, metric_log;
  int width = 0, height = 0, lag = 0, res = -1, warmup = 0;
  std::vector<int> dilations;
  std::vector<long> cuts;
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
    } else if (f == "--cuts") {
      while (i + 1 < argc && argv[i + 1][0] != '-') a.cuts.push_back(parse_int(f, argv[++i], 1));
      if (a.cuts.empty()) usage_error("--cuts needs at least one frame number");
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
    } else if (f == "--anchors") {
      a.anchors = value(i, f);
    } else if (f == "--depth-m") {
      a.depth_m = value(i, f);
    } else if (f == "--depth-mm") {
      a.depth_mm = value(i, f);
    } else if (f == "--confidence") {
      a.confidence = value(i, f);
    } else if (f == "--confidence-png16") {
      a.confidence_png16 = value(i, f);
    } else if (f == "--metric-log") {
      a.metric_log = value(i, f);
    } else {
      usage_error("unknown option '" + f + "'");
    }
  }
  if (a.engine.empty()) usage_error("--engine DIR is required");
  if (a.width == 0) usage_error("--size WxH is required");
  return a;
}

#ifdef RD_HAVE_PNG
// One 16-bit PNG of `values` (width x height) through `to_u16`.
template <typename F>
void write_png16(const fs::path& path, const std::vector<float>& values, int width, int height, F to_u16) {
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
  png_set_IHDR(png, info, width, height, 16, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  std::vector<uint8_t> row(static_cast<size_t>(width) * 2);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const uint16_t v = to_u16(values[static_cast<size_t>(y) * width + x]);
      row[2 * x] = static_cast<uint8_t>(v >> 8);  // PNG stores 16-bit samples big-endian
      row[2 * x + 1] = static_cast<uint8_t>(v & 0xff);
    }
    png_write_row(png, row.data());
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  if (std::fclose(fp) != 0) throw std::runtime_error("cannot write " + path.string());
}

// the stream's range [-1, 1] onto 0..65535, as rd-engine's 16-bit PNGs: round(clip((d - lo) / (hi - lo)) * 65535)
uint16_t relative_u16(float d) {
  const double u = std::clamp((static_cast<double>(d) + 1.0) / 2.0, 0.0, 1.0);
  return static_cast<uint16_t>(std::nearbyint(u * 65535.0));
}
// metres -> ROS 16UC1 millimetres: round(z * 1000), 0 where invalid (NaN, <= 0, past 65.535 m), as rd-engine
uint16_t millimetres_u16(float z) {
  const double mm = static_cast<double>(z) * 1000.0;
  return std::isfinite(mm) && mm > 0 && mm <= 65535.5 ? static_cast<uint16_t>(std::nearbyint(mm)) : 0;
}
uint16_t unit_u16(float c) { return static_cast<uint16_t>(std::nearbyint(std::clamp<double>(c, 0.0, 1.0) * 65535.0)); }

// A 16-bit grayscale PNG (sparse depth in millimetres): its size, and (unless header_only) its pixels.
struct Png16 {
  int width = 0, height = 0;
  std::vector<uint16_t> pixels;
};

Png16 read_png16(const fs::path& path, bool header_only) {
  FILE* fp = std::fopen(path.c_str(), "rb");
  if (!fp) throw std::runtime_error(path.string() + ": cannot read (" + std::strerror(errno) + ")");
  unsigned char sig[8];
  if (std::fread(sig, 1, 8, fp) != 8 || png_sig_cmp(sig, 0, 8) != 0) {
    std::fclose(fp);
    throw std::runtime_error(path.string() + ": not a readable PNG");
  }
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  Png16 out;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    std::fclose(fp);
    throw std::runtime_error(path.string() + ": not a readable PNG");
  }
  png_init_io(png, fp);
  png_set_sig_bytes(png, 8);
  png_read_info(png, info);
  const int depth = png_get_bit_depth(png, info), color = png_get_color_type(png, info);
  out.width = static_cast<int>(png_get_image_width(png, info));
  out.height = static_cast<int>(png_get_image_height(png, info));
  if (depth != 16 || color != PNG_COLOR_TYPE_GRAY) {
    png_destroy_read_struct(&png, &info, nullptr);
    std::fclose(fp);
    throw std::runtime_error(path.string() + ": sparse depth PNGs are 16-bit grayscale millimetres, got " +
                             std::to_string(depth) + "-bit " + (color == PNG_COLOR_TYPE_GRAY ? "grayscale" : "colour"));
  }
  if (!header_only) {
    png_set_swap(png);  // PNG stores 16-bit samples big-endian
    out.pixels.resize(static_cast<size_t>(out.width) * out.height);
    for (int y = 0; y < out.height; ++y)
      png_read_row(png, reinterpret_cast<png_bytep>(out.pixels.data() + static_cast<size_t>(y) * out.width), nullptr);
    png_read_end(png, nullptr);
  }
  png_destroy_read_struct(&png, &info, nullptr);
  std::fclose(fp);
  return out;
}
#endif

// --anchors DIR: frame number -> file, checked before any work (names, duplicates, PNG headers).
std::map<long, fs::path> anchor_files(const std::string& folder) {
  std::map<long, fs::path> out;
  if (folder.empty()) return out;
#ifndef RD_HAVE_PNG
  usage_error("--anchors: this rd_stream was built without libpng");
#else
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) throw std::runtime_error(folder + ": no such anchors folder");
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(folder)) {
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    if (ext == ".png") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) throw std::runtime_error(folder + ": no .png sparse depth images");
  const std::regex last_number("(\\d+)(?!.*\\d)");
  for (const auto& f : files) {
    const std::string stem = f.stem().string();
    std::smatch m;
    if (!std::regex_search(stem, m, last_number))
      throw std::runtime_error(f.string() + ": a sparse depth image is named by its frame number (e.g. 000012.png)");
    const long index = std::stol(m.str(1));
    if (out.count(index))
      throw std::runtime_error(f.string() + ": frame " + std::to_string(index) + " also has " +
                               out[index].filename().string());
    read_png16(f, /*header_only=*/true);
    out[index] = f;
  }
#endif
  return out;
}

// A raw float32 output file, written under a temporary name and renamed when complete.
struct RawOut {
  fs::path path, tmp;
  std::ofstream file;
  explicit RawOut(const std::string& p) : path(p) {
    if (p.empty()) return;
    tmp = path.parent_path() / ("." + path.filename().string() + ".partial");
    std::error_code ec;
    if (!path.parent_path().empty()) fs::create_directories(path.parent_path(), ec);
    file.open(tmp, std::ios::binary | std::ios::trunc);
    if (!file) usage_error("cannot write " + p);
  }
  explicit operator bool() const { return !tmp.empty(); }
  void write(const std::vector<float>& v) {
    file.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
    if (!file) throw std::runtime_error("cannot write " + path.string());
  }
  void finish() {
    if (tmp.empty()) return;
    file.close();
    if (!file) throw std::runtime_error("cannot write " + path.string());
    fs::rename(tmp, path);
  }
  void abandon() {
    if (tmp.empty()) return;
    file.close();
    std::error_code ec;
    fs::remove(tmp, ec);
  }
};

// A PNG output folder, written as .NAME.partial and renamed when complete.
struct PngDir {
  fs::path dir, tmp;
  explicit PngDir(const std::string& d, const char* flag) : dir(d) {
    if (d.empty()) return;
#ifndef RD_HAVE_PNG
    usage_error(std::string(flag) + ": this rd_stream was built without libpng");
#endif
    tmp = dir.parent_path() / ("." + dir.filename().string() + ".partial");
    fs::remove_all(tmp);
    fs::create_directories(tmp);
  }
  explicit operator bool() const { return !tmp.empty(); }
  fs::path file(int64_t index) const {
    char name[32];
    std::snprintf(name, sizeof(name), "frame_%06lld.png", static_cast<long long>(index));
    return tmp / name;
  }
  void finish() {
    if (tmp.empty()) return;
    fs::remove_all(dir);
    fs::rename(tmp, dir);
  }
  void abandon() {
    if (!tmp.empty()) fs::remove_all(tmp);
  }
};

struct Output {
  const Args& args;
  PngDir png, depth_mm, confidence_png;
  RawOut depth_m, confidence;
  std::ofstream log, metric_log;
  std::vector<double> latencies;
  long frames = 0, metric_frames = 0;

  explicit Output(const Args& a)
      : args(a),
        png(a.png16, "--png16"),
        depth_mm(a.depth_mm, "--depth-mm"),
        confidence_png(a.confidence_png16, "--confidence-png16"),
        depth_m(a.depth_m),
        confidence(a.confidence) {
    if (!a.latency_log.empty()) {
      log.open(a.latency_log);
      if (!log) usage_error("cannot write the latency log " + a.latency_log);
      log << "index,timestamp,latency_s\n";
    }
    if (!a.metric_log.empty()) {
      metric_log.open(a.metric_log);
      if (!metric_log) usage_error("cannot write the metric log " + a.metric_log);
      metric_log.precision(17);
      metric_log << "index,has_metric,anchors,samples,inliers,scale,shift,sigma\n";
    }
  }

  void emit(rd::Stream& stream) {
    rd::Frame f;
    while (stream.poll(f)) {
      if (!png) {
        const size_t n = f.depth.size();
        if (std::fwrite(f.depth.data(), sizeof(float), n, stdout) != n)
          throw std::runtime_error("cannot write to standard output");
      }
#ifdef RD_HAVE_PNG
      if (png) write_png16(png.file(f.index), f.depth, f.width, f.height, relative_u16);
      if (depth_mm) write_png16(depth_mm.file(f.index), f.depth_m, f.width, f.height, millimetres_u16);
      if (confidence_png) write_png16(confidence_png.file(f.index), f.confidence, f.width, f.height, unit_u16);
#endif
      if (depth_m) depth_m.write(f.depth_m);
      if (confidence) confidence.write(f.confidence);
      if (metric_log)
        metric_log << f.index << ',' << (f.has_metric ? 1 : 0) << ',' << f.anchors << ',' << f.fit.samples << ','
                   << f.fit.inliers << ',' << f.fit.scale << ',' << f.fit.shift << ',' << f.fit.sigma << '\n';
      metric_frames += f.has_metric ? 1 : 0;
      if (log) log << f.index << ',' << f.timestamp << ',' << f.latency_s << '\n';
      latencies.push_back(f.latency_s);
      ++frames;
    }
  }

  void finish() {
    std::fflush(stdout);
    if (metric_log) {
      metric_log.close();
      if (!metric_log) throw std::runtime_error("cannot write " + args.metric_log);
    }
    depth_m.finish();
    confidence.finish();
    png.finish();
    depth_mm.finish();
    confidence_png.finish();
  }

  void abandon() {
    depth_m.abandon();
    confidence.abandon();
    png.abandon();
    depth_mm.abandon();
    confidence_png.abandon();
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
    const std::map<long, fs::path> anchors = anchor_files(args.anchors);  // checked before any work
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
      if (std::find(args.cuts.begin(), args.cuts.end(), index) != args.cuts.end()) {
        stream.cut();
        out->emit(stream);
      }
      if (anchors.empty()) {
        stream.push(rgb.data(), args.width, args.height, static_cast<double>(index) / args.fps);
      } else {
        const int64_t ns = std::llround(static_cast<double>(index) / args.fps * 1e9);
        auto it = anchors.find(index);
        if (it == anchors.end()) {
          stream.push_ns(rgb.data(), args.width, args.height, ns);
        } else {
#ifdef RD_HAVE_PNG
          const Png16 image = read_png16(it->second, /*header_only=*/false);
          if (image.width == args.width && image.height == args.height) {
            const rd_anchors_t a = rd::anchor_image_mm(image.pixels.data(), image.width, image.height);
            stream.push_ns(rgb.data(), args.width, args.height, ns, 0, &a);
          } else {  // another size: its pixel centres map proportionally (rd_engine.io.anchors.points_from_image)
            std::vector<float> x, y, z;
            const double sx = static_cast<double>(args.width) / image.width,
                         sy = static_cast<double>(args.height) / image.height;
            for (int v = 0; v < image.height; ++v)
              for (int u = 0; u < image.width; ++u) {
                const uint16_t mm = image.pixels[static_cast<size_t>(v) * image.width + u];
                if (mm == 0) continue;
                x.push_back(static_cast<float>((u + 0.5) * sx - 0.5));
                y.push_back(static_cast<float>((v + 0.5) * sy - 0.5));
                z.push_back(static_cast<float>(mm / 1000.0));
              }
            const rd_anchors_t a = rd::anchor_points(x.data(), y.data(), z.data(), static_cast<int64_t>(z.size()));
            stream.push_ns(rgb.data(), args.width, args.height, ns, 0, &a);
          }
#endif
        }
      }
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
    if (!anchors.empty())
      std::fprintf(stderr, "rd_stream: metric depth on %ld of %ld frames (the others finished before the first fit)\n",
                   out->metric_frames, out->frames);
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
