/* common.c: the parts of the library every model shares: error sentences, the thread's last error,
 * aligned buffers, CRC-32, the weights file's checks (tf_internal.h describes its format), and the
 * check of ids that index a table.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model.h"
#include "tf_internal.h"

static __thread char last_error[512];

void tf__set_error(const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(last_error, sizeof last_error, format, args);
    va_end(args);
}

TF_API const char *tf_model_last_error(void) { return last_error; }

TF_API const char *tf_model_error(int code) {
    switch (code) {
    case TF_OK: return "success";
    case TF_ERROR_NULL_MODEL: return "the tf_model is NULL (did tf_model_open fail? tf_model_last_error says why)";
    case TF_ERROR_NULL_BUFFER: return "inputs or outputs, or one of their buffer pointers, is NULL";
    case TF_ERROR_BUSY:
        return "this tf_model is running a call in another thread: use one tf_model per thread";
    case TF_ERROR_BAD_ID:
        return "an input of ids holds one outside the table it indexes (tf_model_last_error names it)";
    case TF_ERROR_NATIVE: return "the model's code returned a failure status";
    case TF_ERROR_PROMPT:
        return "the prompt is empty, or the prompt and the new ids do not fit in the generator's max_len";
    default: return "unknown error code";
    }
}

void *tf__alloc(size_t bytes) {
    void *p = NULL;
    size_t size = (bytes + TF_ALIGNMENT - 1) / TF_ALIGNMENT * TF_ALIGNMENT;
    if (size == 0) size = TF_ALIGNMENT;
    if (posix_memalign(&p, TF_ALIGNMENT, size) != 0) return NULL;
    memset(p, 0, size);
    return p;
}

/* CRC-32 as zlib computes it (reflected polynomial 0xEDB88320), eight bytes a step. */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++) crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
}

static uint32_t load32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t load64(const unsigned char *p) { return (uint64_t)load32(p) | (uint64_t)load32(p + 4) << 32; }

uint32_t tf__crc32(uint32_t crc, const void *data, size_t bytes) {
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = data;
    crc = ~crc;
    for (; bytes >= 8; bytes -= 8, p += 8) {
        uint32_t lo = crc ^ load32(p), hi = load32(p + 4);
        crc = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^ crc_table[5][(lo >> 16) & 0xFF] ^
              crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF] ^
              crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
    }
    for (; bytes > 0; bytes--, p++) crc = crc_table[0][(crc ^ *p) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

void *tf__load_weights(const char *path, const char *target, uint64_t layout_id, size_t bytes) {
    unsigned char header[TF_WEIGHTS_HEADER_BYTES];
    FILE *file = fopen(path, "rb");
    if (!file) {
        tf__set_error("cannot open the weights file %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat status;
    if (fstat(fileno(file), &status) != 0 || !S_ISREG(status.st_mode)) {
        tf__set_error("the weights file %s is not a regular file", path);
        fclose(file);
        return NULL;
    }
    uint64_t file_bytes = (uint64_t)status.st_size;
    if (file_bytes < TF_WEIGHTS_HEADER_BYTES || fread(header, 1, sizeof header, file) != sizeof header) {
        tf__set_error("the weights file %s is too short to be a tensorforge weights file (%" PRIu64 " bytes)", path,
                      file_bytes);
        fclose(file);
        return NULL;
    }
    char file_target[TF_WEIGHTS_TARGET_BYTES + 1] = {0};
    memcpy(file_target, header + TF_WEIGHTS_TARGET_OFFSET, TF_WEIGHTS_TARGET_BYTES);
    uint64_t declared = load64(header + 16), file_layout = load64(header + 24);
    uint32_t version = load32(header + 8), header_bytes = load32(header + 12), checksum = load32(header + 32);
    const char *problem = NULL;
    char detail[320];
    if (memcmp(header, TF_WEIGHTS_MAGIC, 8) != 0) {
        problem = "is not a tensorforge weights file (no TFWEIGHT magic)";
    } else if (version != TF_WEIGHTS_VERSION || header_bytes != TF_WEIGHTS_HEADER_BYTES) {
        snprintf(detail, sizeof detail, "has format version %" PRIu32 ", this library reads version %u", version,
                 TF_WEIGHTS_VERSION);
        problem = detail;
    } else if (strcmp(file_target, target) != 0) {
        snprintf(detail, sizeof detail, "is for the target '%s', this library was compiled for '%s'", file_target,
                 target);
        problem = detail;
    } else if (file_layout != layout_id) {
        snprintf(detail, sizeof detail,
                 "is for another model (its weights layout %016" PRIx64 " is not this model's %016" PRIx64 ")",
                 file_layout, layout_id);
        problem = detail;
    } else if (declared != (uint64_t)bytes) {
        snprintf(detail, sizeof detail, "declares %" PRIu64 " bytes of weights, this model has %zu", declared, bytes);
        problem = detail;
    } else if (file_bytes != TF_WEIGHTS_HEADER_BYTES + declared) {
        snprintf(detail, sizeof detail, "is %s: %" PRIu64 " bytes of weights after the header, expected %" PRIu64,
                 file_bytes < TF_WEIGHTS_HEADER_BYTES + declared ? "truncated" : "too long",
                 file_bytes - TF_WEIGHTS_HEADER_BYTES, declared);
        problem = detail;
    }
    if (problem) {
        tf__set_error("the weights file %s %s", path, problem);
        fclose(file);
        return NULL;
    }
    void *weights = tf__alloc(bytes);
    if (!weights) {
        tf__set_error("cannot allocate %zu bytes for the weights of %s", bytes, path);
        fclose(file);
        return NULL;
    }
    if (bytes > 0 && fread(weights, 1, bytes, file) != bytes) {
        tf__set_error("cannot read the weights file %s: %s", path, ferror(file) ? strerror(errno) : "it ended early");
        fclose(file);
        free(weights);
        return NULL;
    }
    fclose(file);
    uint32_t computed = tf__crc32(0, weights, bytes);
    if (computed != checksum) {
        tf__set_error("the weights file %s is damaged: its CRC-32 is %08" PRIx32 ", the header says %08" PRIx32,
                      path, computed, checksum);
        free(weights);
        return NULL;
    }
    return weights;
}

int tf__check_ids(const tf_id_check *checks, int n_checks, const void *const *inputs, const tf_tensor_info *infos) {
    for (int c = 0; c < n_checks; c++) {
        const tf_tensor_info *info = &infos[checks[c].input];
        const void *data = inputs[checks[c].input];
        size_t count = info->bytes / (checks[c].dtype == TF_I64 ? 8 : 4);
        for (size_t i = 0; i < count; i++) {
            int64_t id = checks[c].dtype == TF_I64 ? ((const int64_t *)data)[i] : ((const int32_t *)data)[i];
            if (id < 0 || id >= checks[c].rows) {
                tf__set_error("input '%s' holds the id %" PRId64 " at flat index %zu, outside [0, %" PRId64
                              "): it indexes a table of %" PRId64 " rows", info->name, id, i, checks[c].rows,
                              checks[c].rows);
                return TF_ERROR_BAD_ID;
            }
        }
    }
    return TF_OK;
}
