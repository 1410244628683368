/* ABI 1 compatibility: the C example as written against ABI 1 (its header kept beside it), run on this library.
 * The rd-engine C API from plain C (C99): raw RGB frames on stdin, raw float32 depth on stdout.
 *
 *   rd_minimal_c_abi1 ENGINE_DIR WIDTH HEIGHT RES LAG SEED [DILATION...] < frames.rgb > depth.f32
 */
#include <stdio.h>
#include <stdlib.h>

#include "rd_engine_abi1.h" /* ABI 1 header, as released */

static int fail(const char* what, rd_status status) {
    fprintf(stderr, "rd_minimal_c: %s: %s (%s)\n", what, rd_last_error(), rd_status_name(status));
    return 1;
}

static int drain(rd_session_t* session, float* depth, size_t capacity) {
    rd_frame_info_t info;
    int32_t available = 1;
    while (available) {
        rd_status st = rd_session_poll(session, depth, capacity, &info, &available);
        if (st != RD_OK) return fail("poll", st);
        if (available && fwrite(depth, sizeof(float), (size_t)info.width * info.height, stdout) !=
                             (size_t)info.width * info.height) {
            fprintf(stderr, "rd_minimal_c: cannot write to stdout\n");
            return 1;
        }
    }
    return 0;
}

int main(int argc, char** argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: rd_minimal_c_abi1 ENGINE_DIR WIDTH HEIGHT RES LAG SEED [DILATION...]\n");
        return 2;
    }
    int width = atoi(argv[2]), height = atoi(argv[3]);
    if (width <= 0 || height <= 0) {
        fprintf(stderr, "rd_minimal_c: WIDTH and HEIGHT must be positive\n");
        return 2;
    }
    rd_engine_t* engine = NULL;
    rd_status st = rd_engine_open(argv[1], NULL, &engine);
    if (st != RD_OK) return fail("open engine", st);

    rd_session_options_t options;
    rd_session_options_init(&options);
    options.res = atoi(argv[4]);
    options.lag = atoi(argv[5]);
    options.seed = atoll(argv[6]);
    for (int i = 7; i < argc && options.num_dilations < 8; ++i) options.dilations[options.num_dilations++] = atoi(argv[i]);
    rd_session_t* session = NULL;
    st = rd_session_open(engine, &options, &session);
    if (st != RD_OK) return fail("open session", st);

    size_t frame_bytes = (size_t)width * height * 3;
    unsigned char* rgb = malloc(frame_bytes);
    float* depth = NULL;
    size_t capacity = 0;
    int rc = 0;
    long index = 0;
    while (rc == 0 && fread(rgb, 1, frame_bytes, stdin) == frame_bytes) {
        st = rd_session_push(session, rgb, width, height, 3 * (int64_t)width, index / 30.0, NULL);
        if (st != RD_OK) {
            rc = fail("push", st);
            break;
        }
        if (!depth) {
            int32_t w = 0, h = 0;
            rd_session_output_size(session, &w, &h);
            capacity = (size_t)w * h;
            depth = malloc(capacity * sizeof(float));
        }
        rc = drain(session, depth, capacity);
        ++index;
    }
    if (rc == 0 && depth) {
        st = rd_session_flush(session, NULL);
        rc = st != RD_OK ? fail("flush", st) : drain(session, depth, capacity);
    }
    free(rgb);
    free(depth);
    rd_session_close(session);
    rd_engine_close(engine);
    return rc;
}
