/* tf_internal.h: what model.c, common.c and generator.c share inside the library (hidden symbols).
 *
 * The weights file (model.weights), all integers little-endian:
 *   offset  0  char[8]   magic "TFWEIGHT"
 *           8  uint32    format version (TF_WEIGHTS_VERSION)
 *          12  uint32    header bytes (128): the weights start here
 *          16  uint64    weights bytes (the file is exactly header + this many bytes)
 *          24  uint64    layout id: FNV-1a 64 of the weights' layout (each constant's name and offset,
 *                        the total size, the target), so that a file of another model is refused
 *          32  uint32    CRC-32 (zlib's) of the weights bytes
 *          36  char[28]  zeros
 *          64  char[64]  target, NUL-padded, e.g. "aarch64 armv8"
 */
#ifndef TENSORFORGE_INTERNAL_H
#define TENSORFORGE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

#define TF_WEIGHTS_MAGIC "TFWEIGHT"
#define TF_WEIGHTS_VERSION 1u
#define TF_WEIGHTS_HEADER_BYTES 128u
#define TF_WEIGHTS_TARGET_BYTES 64u
#define TF_WEIGHTS_TARGET_OFFSET 64u
#define TF_ALIGNMENT 64u

#define TF_CAT_(a, b) a##b
#define TF_CAT(a, b) TF_CAT_(a, b)

/* An input of ids (an integer graph input read by a gather) and the rows of the table it indexes. */
typedef struct {
    int input;
    int dtype;
    int64_t rows;
} tf_id_check;

/* The weights file at `path`, checked against what the code expects, in a 64-byte aligned buffer
 * (free it with free()); NULL with the reason set (tf__set_error) when it does not fit. */
void *tf__load_weights(const char *path, const char *target, uint64_t layout_id, size_t bytes);
/* A 64-byte aligned, zeroed buffer of at least `bytes` (at least 64), or NULL. */
void *tf__alloc(size_t bytes);
uint32_t tf__crc32(uint32_t crc, const void *data, size_t bytes);
/* Set the calling thread's last error (printf format). */
void tf__set_error(const char *format, ...) __attribute__((format(printf, 1, 2)));
/* 0 when every id of every checked input is in [0, rows); else TF_ERROR_BAD_ID, with the error set. */
int tf__check_ids(const tf_id_check *checks, int n_checks, const void *const *inputs,
                  const tf_tensor_info *infos);

#endif
