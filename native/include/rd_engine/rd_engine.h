/*
 * rd-engine C API: online RollingDepth from an engine folder, with no Python at run time.
 *
 * An engine folder is made by `rd-engine build --backend aoti` (AOTInductor packages of the VAE
 * encoder, the VAE decoder and the snippet UNet step). A session is one live stream: push RGB
 * frames, poll the frames that finished (relative inverse depth, float32), flush at the end.
 * It computes what the Python `rd_engine.online.session.StreamSession` computes.
 *
 * Metric depth (ABI 2.1): frames may carry sparse metric anchors (`rd_anchors_t`: points or a sparse
 * depth image); the session fits `1 / depth_m = scale * depth + shift` to them robustly as they arrive
 * and gives each finished frame its metric depth (float32 metres along the optical axis, ROS REP 118;
 * NaN where invalid) and a per-pixel confidence (float32 in [0, 1]) through `rd_session_poll_outputs`
 * or the on_frame callback (docs/native.md, "Metric depth and confidence").
 *
 * Conventions
 * - Every function returns an `rd_status`; RD_OK is 0. On failure, `rd_last_error()` returns a
 *   one-line message for the calling thread (valid until that thread's next rd_* call).
 * - No C++ exception crosses this boundary; no pointer passed in is kept after the call returns
 *   (except the callbacks and their user data, kept while their session or the log hook lives).
 * - Handles: `rd_engine_t` (a loaded engine folder) and `rd_session_t` (one stream) are opaque
 *   tokens, never reused within a process. A handle that was closed, belongs to the other type,
 *   or was never returned by this library gets RD_ERR_INVALID_HANDLE (never a use after free).
 * - Buffers: the caller owns every buffer. `rd_session_poll*` write into the caller's buffer.
 *
 * Threads
 * - Any function may be called from any thread. Calls on one engine are thread-safe; closing an
 *   engine while another thread opens a session on it is safe (the open either succeeds and keeps
 *   the engine loaded, or gets RD_ERR_INVALID_HANDLE).
 * - One session: push, flush, cut, reset and warmup are serialized by the session (a second
 *   concurrent call waits). `rd_session_poll*`, `rd_session_output_size` and `rd_session_cancel`
 *   never wait for a running push: one producer thread may push while one consumer thread polls
 *   (single producer, single consumer). Closing a session while another thread uses it is safe:
 *   the running call finishes, later calls get RD_ERR_INVALID_HANDLE.
 * - Sessions sharing one engine serialize their model calls on the engine.
 * - Closing an engine while its sessions live is allowed: the sessions keep it loaded.
 *
 * ABI policy (see docs/native.md)
 * - The shared library's SONAME carries RD_ENGINE_ABI_MAJOR (librd_engine.so.2). Within one major
 *   version, functions are only added, and structs only grow at their end.
 * - Every struct whose first field is `struct_size` is read (inputs) or written (outputs) only as
 *   far as `struct_size` covers: a caller built against an older header passes a smaller size and
 *   gets the defaults for the fields it does not know; a size larger than this library knows is
 *   refused with RD_ERR_VERSION (the caller was built against a newer header).
 * - `rd_frame_info_t` and `rd_session_timing_t` (from ABI 1) have no `struct_size` and never
 *   change; `rd_frame_t` (written by `rd_session_poll_frame`) is their growing successor.
 */
#ifndef RD_ENGINE_H
#define RD_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) || defined(__CYGWIN__)
#if defined(RD_STATIC)
#define RD_API
#elif defined(RD_BUILDING_DLL)
#define RD_API __declspec(dllexport)
#else
#define RD_API __declspec(dllimport)
#endif
#else
#define RD_API __attribute__((visibility("default")))
#endif

#define RD_ENGINE_ABI_MAJOR 2
#define RD_ENGINE_ABI_MINOR 1
/* (major << 16) | minor: compare with rd_abi_version() at run time */
#define RD_ENGINE_ABI_VERSION ((RD_ENGINE_ABI_MAJOR << 16) | RD_ENGINE_ABI_MINOR)

typedef enum rd_status {
    RD_OK = 0,
    RD_ERR_INVALID_ARGUMENT = 1, /* null pointer, bad option, bad size, stride or buffer */
    RD_ERR_INVALID_HANDLE = 2,   /* closed, unknown or wrong-type handle */
    RD_ERR_ENGINE = 3,           /* missing, unfinished, corrupt, stale or foreign engine folder */
    RD_ERR_PROFILE = 4,          /* frame size outside the engine's profile, or changed mid-stream */
    RD_ERR_STATE = 5,            /* a call out of order: a frame after flush, a size before the first frame */
    RD_ERR_RUNTIME = 6,          /* the model failed (e.g. NaN depth) */
    RD_ERR_OUT_OF_MEMORY = 7,    /* host or device memory exhausted */
    RD_ERR_UNSUPPORTED = 8,      /* not in this build: CUDA, TensorRT, device-memory input */
    RD_ERR_DEVICE = 9,           /* no such device (e.g. cuda:N beyond the device count), or a device error */
    RD_ERR_IO = 10,              /* a file could not be read */
    RD_ERR_SESSION_BROKEN = 11,  /* an earlier push or flush failed midway: rd_session_reset or close it */
    RD_ERR_CANCELLED = 12,       /* rd_session_cancel stopped the call (the session is then broken) */
    RD_ERR_VERSION = 13          /* a struct_size larger than this library knows (newer header), or too small */
} rd_status;

typedef struct rd_engine rd_engine_t;
typedef struct rd_session rd_session_t;

/* Log messages of the library (levels below). */
typedef enum rd_log_level { RD_LOG_DEBUG = 0, RD_LOG_INFO = 1, RD_LOG_WARNING = 2, RD_LOG_ERROR = 3 } rd_log_level;
typedef void (*rd_log_callback)(int32_t level, const char* message, void* user);

/* Options of `rd_engine_open`. Initialize with `rd_engine_options_init`. */
typedef struct rd_engine_options {
    uint32_t struct_size;            /* sizeof(rd_engine_options_t) (set by rd_engine_options_init) */
    const char* device;              /* "cpu" (default), "cuda" or "cuda:N": what the packages were built for */
    const char* expected_weights_hash; /* optional: refuse an engine built from other weights (SHA-256 hex) */
    int32_t verify_files;            /* 1 (default): check every package's size and SHA-256 against the manifest */
    const char* backend;             /* "aoti" (default): AOTInductor packages; "tensorrt": TensorRT plans (CUDA,
                                        only in a runtime configured with -DRD_WITH_TENSORRT=ON) */
    /* -- ABI 2 -- */
    int32_t intra_op_threads;        /* > 0: libtorch's intra-op CPU threads (process-wide); 0 (default): unchanged */
} rd_engine_options_t;

/* Called once for each finished frame, on the thread that pushes (inside push, flush or cut), instead
 * of queueing the frame for rd_session_poll*. `depth` (width * height floats) and `frame` (with
 * frame->depth_m and frame->confidence, ABI 2.1) are valid only during the call. */
struct rd_frame;
typedef void (*rd_frame_callback)(const float* depth, const struct rd_frame* frame, void* user);

/* Options of `rd_session_open`. Initialize with `rd_session_options_init`. */
typedef struct rd_session_options {
    uint32_t struct_size;  /* sizeof(rd_session_options_t) (set by rd_session_options_init) */
    const char* preset;    /* "fast" (default), "fast1024", "full", "paper": res and dilations */
    int32_t lag;           /* frames of look-ahead before a frame is finished (default 0: causal) */
    int32_t res;           /* longer processed edge in pixels; -1 (default): the preset's; 0: the input size */
    int32_t num_dilations; /* 0 (default): the preset's dilations */
    int32_t dilations[8];  /* positive, 1 among them */
    int64_t seed;          /* initial noise seed; -1 (default): random (see rd_session_seed) */
    int32_t restore_input_size; /* 1: depth resized back to the input size; 0 (default): processed size */
    /* -- ABI 2 -- */
    rd_frame_callback on_frame; /* optional: finished frames go to this callback instead of the poll queue */
    void* on_frame_user;        /* passed to on_frame */
} rd_session_options_t;

/* Where an input frame's pixels are. */
typedef enum rd_memory { RD_MEMORY_HOST = 0, RD_MEMORY_CUDA = 1 } rd_memory;

/* What an rd_anchors_t holds (ABI 2.1). */
typedef enum rd_anchors_kind {
    RD_ANCHORS_NONE = 0,        /* no anchors (the default) */
    RD_ANCHORS_POINTS = 1,      /* `count` points: x[i], y[i] (input-frame pixels), depth[i] (metres) */
    RD_ANCHORS_IMAGE_U16_MM = 2, /* a sparse depth image, uint16 millimetres (RealSense, Kinect, ROS 16UC1) */
    RD_ANCHORS_IMAGE_F32_M = 3  /* a sparse depth image, float32 metres (ROS 32FC1) */
} rd_anchors_kind;

/* Sparse metric depth of one frame (ABI 2.1), referenced by rd_frame_input_t.anchors. Initialize with
 * `rd_anchors_init`. Depth is z-depth along the optical axis in metres (REP 118), not the ray length.
 * - Points: x right, y down, in the pixels of the input frame (as pushed, before any resize), pixel
 *   centres at integers: -0.5 <= x <= width - 0.5, -0.5 <= y <= height - 0.5. Every value finite,
 *   every depth > 0 (leave invalid samples out). count 0: no anchors (the arrays may then be NULL).
 * - Image: width x height pixels, the input frame's size; pixel (u, v) is the point (u, v). 0 means
 *   "no sample"; so do NaN and Inf in a float image (ROS 32FC1); a negative value is refused.
 * Refused input (RD_ERR_INVALID_ARGUMENT, one line in rd_last_error()) leaves the session unchanged. */
typedef struct rd_anchors {
    uint32_t struct_size;  /* sizeof(rd_anchors_t) (set by rd_anchors_init) */
    int32_t kind;          /* rd_anchors_kind */
    int64_t count;         /* RD_ANCHORS_POINTS: the number of points (>= 0) */
    const float* x;        /* RD_ANCHORS_POINTS: count floats each */
    const float* y;
    const float* depth;    /* metres */
    int32_t width, height; /* RD_ANCHORS_IMAGE_*: the image's size, equal to the frame's */
    int64_t row_stride;    /* RD_ANCHORS_IMAGE_*: bytes between rows (0: packed) */
    const void* image;     /* RD_ANCHORS_IMAGE_*: uint16_t or float pixels */
} rd_anchors_t;

/* One input frame for `rd_session_push_frame`. Initialize with `rd_frame_input_init`. */
typedef struct rd_frame_input {
    uint32_t struct_size;  /* sizeof(rd_frame_input_t) */
    int32_t width, height; /* pixels */
    int64_t row_stride;    /* bytes between rows, >= 3 * width (0: 3 * width) */
    const uint8_t* rgb;    /* RGB8 triplets; host memory, or device memory of the engine's CUDA device */
    int64_t timestamp_ns;  /* any int64 (e.g. a ROS stamp in nanoseconds), returned exactly with the frame */
    int32_t memory;        /* rd_memory: RD_MEMORY_HOST (default) or RD_MEMORY_CUDA */
    void* cuda_stream;     /* RD_MEMORY_CUDA: the cudaStream_t the pixels are ready on (NULL: the default stream) */
    /* -- ABI 2.1 -- */
    const rd_anchors_t* anchors; /* optional sparse metric depth of this frame (NULL: none); host memory */
} rd_frame_input_t;

/* One finished frame, as written by `rd_session_poll_frame` (and given to an rd_frame_callback).
 * Set struct_size (rd_frame_init) before polling: the library writes only the fields it covers. */
typedef struct rd_frame {
    uint32_t struct_size;  /* sizeof(rd_frame_t) */
    int32_t starts_shot;   /* 1: the first frame of the stream or the first after rd_session_cut; else 0 */
    int64_t index;         /* frame number in push order, from 0 (keeps counting across cuts) */
    int64_t timestamp_ns;  /* rd_frame_input_t.timestamp_ns; rd_session_push: round(seconds * 1e9) */
    double timestamp;      /* seconds: rd_session_push's value; rd_session_push_frame: timestamp_ns * 1e-9 */
    double latency_s;      /* seconds from the push of this frame to its finishing */
    int32_t width;         /* width and height of the depth written */
    int32_t height;
    /* -- ABI 2.1: metric depth and confidence (all 0 / NULL for a stream without anchors) -- */
    int32_t has_metric;    /* 1: a fit existed when this frame finished, depth_m holds metres; 0: the
                              frame is flagged (no fit yet in this shot), depth_m is all NaN */
    int32_t reserved;      /* 0 */
    int64_t anchors;       /* anchors pushed with this frame (they joined the fit when it finished) */
    int64_t metric_samples; /* the fit: anchors it saw (the shot's most recent, at most 20000 + a frame's) */
    int64_t metric_inliers; /* ... of them with a nonzero robust weight */
    double metric_scale;   /* 1 / depth_m = metric_scale * depth + metric_shift (1 / metres) */
    double metric_shift;
    double metric_sigma;   /* robust sigma of the inliers' relative depth error (0.01: 1 %) */
    const float* depth_m;  /* on_frame only: metric depth (width * height floats, metres, NaN where
                              invalid), valid during the call; NULL when has_metric is 0 */
    const float* confidence; /* on_frame only: confidence (width * height floats in [0, 1]), valid during
                                the call (rd_session_poll_outputs: the caller's buffers, or NULL) */
} rd_frame_t;

/* One finished frame, as written by `rd_session_poll` (ABI 1; frozen, see rd_frame_t). */
typedef struct rd_frame_info {
    int64_t index;     /* frame number in push order, from 0 */
    double timestamp;  /* the timestamp given to rd_session_push */
    double latency_s;  /* seconds from the push of this frame to its finishing */
    int32_t width;     /* width and height of the depth written */
    int32_t height;
} rd_frame_info_t;

/* Seconds a session spent per stage since it opened (`rd_session_timing`; ABI 1, frozen). On CUDA,
 * asynchronous GPU work is counted by the stage that waits for it. The non-model part is
 * preprocess_s + align_s (+ total_s minus all five stages: scheduling and bookkeeping). */
typedef struct rd_session_timing {
    double preprocess_s; /* resize, normalize, pad */
    double encode_s;     /* VAE encoder */
    double denoise_s;    /* UNet steps */
    double decode_s;     /* VAE decoder */
    double align_s;      /* online co-alignment and merge */
    double total_s;      /* inside rd_session_push and rd_session_flush */
    int64_t frames;      /* frames pushed */
} rd_session_timing_t;

RD_API const char* rd_last_error(void);
RD_API const char* rd_status_name(rd_status status);
RD_API const char* rd_version(void);
/* The library's ABI: (major << 16) | minor. A caller built with RD_ENGINE_ABI_VERSION runs on a library
 * with the same major and a minor >= its own. */
RD_API uint32_t rd_abi_version(void);
/* One line: "rd_engine X.Y.Z abi A.B torch T cuda C tensorrt R sanitizers S" (C, R: a version or "no"). */
RD_API const char* rd_build_info(void);
/* Route the library's messages (warnings from TensorRT, engine loading) to `callback` (NULL: stderr for
 * warnings and errors, the default). Process-wide; may be called from any thread. */
RD_API void rd_set_log_callback(rd_log_callback callback, void* user);

/* Set a struct to its defaults and its struct_size to `struct_size` (the caller's sizeof): use the macros
 * below, which pass the size the caller was compiled with, so a newer library never writes past the end
 * of an older caller's struct. */
RD_API void rd_engine_options_init_sized(rd_engine_options_t* options, uint32_t struct_size);
RD_API void rd_session_options_init_sized(rd_session_options_t* options, uint32_t struct_size);
RD_API void rd_frame_input_init_sized(rd_frame_input_t* frame, uint32_t struct_size);
RD_API void rd_frame_init_sized(rd_frame_t* frame, uint32_t struct_size);
RD_API void rd_anchors_init_sized(rd_anchors_t* anchors, uint32_t struct_size); /* ABI 2.1 */
/* ABI 1's init functions (they write the ABI 1 struct sizes), kept for callers built against ABI 1. */
RD_API void(rd_engine_options_init)(rd_engine_options_t* options);
RD_API void(rd_session_options_init)(rd_session_options_t* options);
#define rd_engine_options_init(o) rd_engine_options_init_sized((o), (uint32_t)sizeof(*(o)))
#define rd_session_options_init(o) rd_session_options_init_sized((o), (uint32_t)sizeof(*(o)))
#define rd_frame_input_init(f) rd_frame_input_init_sized((f), (uint32_t)sizeof(*(f)))
#define rd_frame_init(f) rd_frame_init_sized((f), (uint32_t)sizeof(*(f)))
#define rd_anchors_init(a) rd_anchors_init_sized((a), (uint32_t)sizeof(*(a)))

/* Load an engine folder (checks its manifest, files, torch version and device) and load every package
 * it needs: a package that will not load fails here (RD_ERR_ENGINE), not at the first push. */
RD_API rd_status rd_engine_open(const char* folder, const rd_engine_options_t* options, rd_engine_t** engine);
/* Run each model once on a frame of this (processed) size, so the first push of a stream pays no
 * one-time cost (allocator, kernel selection). */
RD_API rd_status rd_engine_warmup(rd_engine_t* engine, int32_t width, int32_t height);
RD_API rd_status rd_engine_close(rd_engine_t* engine);

RD_API rd_status rd_session_open(rd_engine_t* engine, const rd_session_options_t* options, rd_session_t** session);

/* Push one RGB8 frame (`height` rows of `width` RGB triplets, rows `row_stride` bytes apart, >= 3 * width).
 * Every frame of a stream has the size of the first. `*finished` (optional) gets the number of frames
 * that finished (waiting in `rd_session_poll*`, or given to the on_frame callback). A push that fails
 * before the stream's state changes (a bad argument, a size outside the profile) leaves the session as
 * it was; one that fails midway (the model, memory, cancellation) marks it broken: later pushes and
 * flushes get RD_ERR_SESSION_BROKEN until rd_session_reset. */
RD_API rd_status rd_session_push(rd_session_t* session, const uint8_t* rgb, int32_t width, int32_t height,
                                 int64_t row_stride, double timestamp, int32_t* finished);
/* rd_session_push with an int64 timestamp (returned exactly), device-memory input and (ABI 2.1) sparse
 * metric anchors (`frame->anchors`). A frame's anchors join the shot's fit when the frame finishes (its
 * relative depth is final then); each anchor takes the relative depth of the processed pixel containing
 * it. Bad anchors are refused before anything changes (RD_ERR_INVALID_ARGUMENT): a wrong kind, count < 0,
 * NULL arrays with count > 0, NaN or Inf in x, y or depth, depth <= 0, a point outside the frame, an image
 * whose size differs from the frame's, a NULL image, a row_stride too small, a negative image value. */
RD_API rd_status rd_session_push_frame(rd_session_t* session, const rd_frame_input_t* frame, int32_t* finished);

/* End of stream: finish every remaining frame (they wait in `rd_session_poll*`). Pushing afterwards is
 * RD_ERR_STATE. */
RD_API rd_status rd_session_flush(rd_session_t* session, int32_t* finished);

/* A cut (the boundary before the first frame of a new shot), between two pushes: finishes every frame
 * of the current shot as rd_session_flush would finish a stream of that shot alone, then starts a new
 * shot as a fresh session would (same settings and seed); frame indices keep counting. The new shot
 * starts without a metric fit (its anchors fit its own affine frame). A cut before any frame, or right
 * after another cut, does nothing. */
RD_API rd_status rd_session_cut(rd_session_t* session, int32_t* finished);

/* Back to the state of a freshly opened session (same options and seed): drops every unfinished and
 * unpolled frame, clears a broken or cancelled state, and drops the metric fit and its anchors. */
RD_API rd_status rd_session_reset(rd_session_t* session);

/* Ask a running (or the next) push, flush or cut of this session to stop at its next model call; it
 * returns RD_ERR_CANCELLED and leaves the session broken (rd_session_reset to reuse it). Any thread. */
RD_API rd_status rd_session_cancel(rd_session_t* session);

/* Size of the depth `rd_session_poll*` write (known after the first push; RD_ERR_STATE before). */
RD_API rd_status rd_session_output_size(const rd_session_t* session, int32_t* width, int32_t* height);

/* The oldest finished frame not yet polled: writes `width * height` floats (row-major) into `depth`
 * (`capacity` floats available) and its info, and sets `*available` to 1; sets it to 0 when none waits. */
RD_API rd_status rd_session_poll(rd_session_t* session, float* depth, size_t capacity, rd_frame_info_t* info,
                                 int32_t* available);
/* rd_session_poll with the growing frame struct (timestamp_ns, starts_shot). `frame` may be NULL. */
RD_API rd_status rd_session_poll_frame(rd_session_t* session, float* depth, size_t capacity, rd_frame_t* frame,
                                       int32_t* available);

/* ABI 2.1: rd_session_poll_frame with the frame's metric depth and confidence. `depth`, `depth_m` and
 * `confidence` are optional (NULL: not wanted); each buffer given holds `capacity` floats, at least
 * width * height (rd_session_output_size). `depth_m`: metres along the optical axis, NaN where the fitted
 * inverse depth is not positive or no fit existed yet (frame->has_metric 0); `confidence`: in [0, 1],
 * 1 / (1 + spread / 0.02) with `spread` the weighted standard deviation of the aligned snippet entries
 * merged into the pixel (the units of the relative depth; 0 where one entry covers the frame). Both at
 * the size of `depth` (the input size with restore_input_size: resized as the relative depth, the fit
 * taken at the processed size). */
RD_API rd_status rd_session_poll_outputs(rd_session_t* session, float* depth, float* depth_m, float* confidence,
                                         size_t capacity, rd_frame_t* frame, int32_t* available);

/* The seed the session's initial noise was drawn with (to repeat a run). */
RD_API rd_status rd_session_seed(const rd_session_t* session, int64_t* seed);

RD_API rd_status rd_session_timing(const rd_session_t* session, rd_session_timing_t* timing);

RD_API rd_status rd_session_close(rd_session_t* session);

#ifdef __cplusplus
}
#endif

#endif /* RD_ENGINE_H */
