/* A verbatim copy of rd_engine.h at ABI 1 (before struct_size growth): the ABI 1 compatibility test builds against it. */
/*
 * rd-engine C API: online RollingDepth from an engine folder, with no Python at run time.
 *
 * An engine folder is made by `rd-engine build --backend aoti` (AOTInductor packages of the VAE
 * encoder, the VAE decoder and the snippet UNet step). A session is one live stream: push RGB
 * frames, poll the frames that finished (relative inverse depth, float32), flush at the end.
 * It computes what the Python `rd_engine.online.session.StreamSession` computes.
 *
 * Conventions
 * - Every function returns an `rd_status`; RD_OK is 0. On failure, `rd_last_error()` returns a
 *   one-line message for the calling thread (valid until that thread's next rd_* call).
 * - No C++ exception crosses this boundary; no pointer passed in is kept after the call returns.
 * - Handles: `rd_engine_t` (a loaded engine folder) and `rd_session_t` (one stream). A handle
 *   that was closed, or was never returned by this library, gets RD_ERR_INVALID_HANDLE.
 * - Buffers: the caller owns every buffer. `rd_session_poll` writes into the caller's buffer.
 *
 * Threads
 * - One session is used by one thread at a time (calls on one session are not synchronized).
 * - Any number of sessions may share one engine, each on its own thread: the engine serializes
 *   its model calls internally. Closing an engine while its sessions live is allowed: the
 *   sessions keep it loaded until they are closed.
 */
#ifndef RD_ENGINE_H
#define RD_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define RD_API __declspec(dllexport)
#else
#define RD_API __attribute__((visibility("default")))
#endif

#define RD_ENGINE_ABI_VERSION 1

typedef enum rd_status {
    RD_OK = 0,
    RD_ERR_INVALID_ARGUMENT = 1, /* null pointer, bad option, bad size, stride or buffer */
    RD_ERR_INVALID_HANDLE = 2,   /* closed or unknown handle */
    RD_ERR_ENGINE = 3,           /* missing, unfinished, corrupt, stale or foreign engine folder */
    RD_ERR_PROFILE = 4,          /* frame size outside the engine's profile, or changed mid-stream */
    RD_ERR_STATE = 5,            /* a call out of order: a frame after flush, a size before the first frame */
    RD_ERR_RUNTIME = 6           /* the model failed (e.g. NaN depth), or out of memory */
} rd_status;

typedef struct rd_engine rd_engine_t;
typedef struct rd_session rd_session_t;

/* Options of `rd_engine_open`. Initialize with `rd_engine_options_init`. */
typedef struct rd_engine_options {
    uint32_t struct_size;            /* sizeof(rd_engine_options_t) */
    const char* device;              /* "cpu" (default), "cuda" or "cuda:N": what the packages were built for */
    const char* expected_weights_hash; /* optional: refuse an engine built from other weights (SHA-256 hex) */
    int32_t verify_files;            /* 1 (default): check every package's size and SHA-256 against the manifest */
    const char* backend;             /* "aoti" (default): AOTInductor packages; "tensorrt": TensorRT plans (CUDA,
                                        only in a runtime configured with -DRD_WITH_TENSORRT=ON) */
} rd_engine_options_t;

/* Options of `rd_session_open`. Initialize with `rd_session_options_init`. */
typedef struct rd_session_options {
    uint32_t struct_size;  /* sizeof(rd_session_options_t) */
    const char* preset;    /* "fast" (default), "fast1024", "full", "paper": res and dilations */
    int32_t lag;           /* frames of look-ahead before a frame is finished (default 0: causal) */
    int32_t res;           /* longer processed edge in pixels; -1 (default): the preset's; 0: the input size */
    int32_t num_dilations; /* 0 (default): the preset's dilations */
    int32_t dilations[8];  /* positive, 1 among them */
    int64_t seed;          /* initial noise seed; -1 (default): random (see rd_session_seed) */
    int32_t restore_input_size; /* 1: depth resized back to the input size; 0 (default): processed size */
} rd_session_options_t;

/* One finished frame, as written by `rd_session_poll`. */
typedef struct rd_frame_info {
    int64_t index;     /* frame number in push order, from 0 */
    double timestamp;  /* the timestamp given to rd_session_push */
    double latency_s;  /* seconds from the push of this frame to its finishing */
    int32_t width;     /* width and height of the depth written */
    int32_t height;
} rd_frame_info_t;

/* Seconds a session spent per stage since it opened (`rd_session_timing`). On CUDA, asynchronous GPU
 * work is counted by the stage that waits for it. The non-model part is preprocess_s + align_s
 * (+ total_s minus all five stages: scheduling and bookkeeping). */
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

RD_API void rd_engine_options_init(rd_engine_options_t* options);
RD_API void rd_session_options_init(rd_session_options_t* options);

/* Load an engine folder (checks its manifest, files, torch version and device). */
RD_API rd_status rd_engine_open(const char* folder, const rd_engine_options_t* options, rd_engine_t** engine);
RD_API rd_status rd_engine_close(rd_engine_t* engine);

RD_API rd_status rd_session_open(rd_engine_t* engine, const rd_session_options_t* options, rd_session_t** session);

/* Push one RGB8 frame (`height` rows of `width` RGB triplets, rows `row_stride` bytes apart, >= 3 * width).
 * Every frame of a stream has the size of the first. `*finished` (optional) gets the number of frames
 * that finished and wait in `rd_session_poll`. */
RD_API rd_status rd_session_push(rd_session_t* session, const uint8_t* rgb, int32_t width, int32_t height,
                                 int64_t row_stride, double timestamp, int32_t* finished);

/* End of stream: finish every remaining frame (they wait in `rd_session_poll`). Pushing afterwards is
 * RD_ERR_STATE. */
RD_API rd_status rd_session_flush(rd_session_t* session, int32_t* finished);

/* Size of the depth `rd_session_poll` writes (known after the first push; RD_ERR_STATE before). */
RD_API rd_status rd_session_output_size(const rd_session_t* session, int32_t* width, int32_t* height);

/* The oldest finished frame not yet polled: writes `width * height` floats (row-major) into `depth`
 * (`capacity` floats available) and its info, and sets `*available` to 1; sets it to 0 when none waits. */
RD_API rd_status rd_session_poll(rd_session_t* session, float* depth, size_t capacity, rd_frame_info_t* info,
                                 int32_t* available);

/* The seed the session's initial noise was drawn with (to repeat a run). */
RD_API rd_status rd_session_seed(const rd_session_t* session, int64_t* seed);

RD_API rd_status rd_session_timing(const rd_session_t* session, rd_session_timing_t* timing);

RD_API rd_status rd_session_close(rd_session_t* session);

#ifdef __cplusplus
}
#endif

#endif /* RD_ENGINE_H */
