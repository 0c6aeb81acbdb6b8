/* main.c: run an exported tensorforge model on files (built by the package's Makefile).
 *
 *   ./main [-w model.weights] [-n N] [-i] INPUT... OUTPUT...
 *
 * One INPUT file per model input, in order: a .npy file (its dtype, shape and C order must be the
 * input's) or raw little-endian bytes (exactly the input's size). One OUTPUT file per model output:
 * written as .npy when its name ends in .npy, else as raw bytes. -w reads the weights from a
 * model.weights file (default: the weights linked into the library, or ./model.weights when the
 * package was exported with weights="file"). -n N runs the model N times and prints the time per
 * call. -i prints the model's inputs and outputs and exits. Errors go to stderr, exit status 1.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"
#include "model_io.h"

static const char *dtype_names[] = {"f32", "i8", "u8", "i32", "i64", "bool"};
static const char *npy_descrs[] = {"<f4", "|i1", "|u1", "<i4", "<i8", "|b1"};

static void die(const char *format, const char *detail) {
    fprintf(stderr, "main: ");
    fprintf(stderr, format, detail);
    fprintf(stderr, "\n");
    exit(1);
}

static void describe(const tf_tensor_info *t, char *text, size_t size) {
    int n = snprintf(text, size, "'%s' %s[", t->name, dtype_names[t->dtype]);
    for (int d = 0; d < t->rank && n > 0 && (size_t)n < size; d++)
        n += snprintf(text + n, size - n, d ? ",%" PRId64 : "%" PRId64, t->shape[d]);
    if (n > 0 && (size_t)n < size) snprintf(text + n, size - n, "]");
}

static int ends_with(const char *text, const char *suffix) {
    size_t a = strlen(text), b = strlen(suffix);
    return a >= b && strcmp(text + a - b, suffix) == 0;
}

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *file = fopen(path, "rb");
    if (!file) die("cannot open %s", path);
    if (fseek(file, 0, SEEK_END) != 0) die("cannot seek in %s", path);
    long length = ftell(file);
    if (length < 0) die("cannot size %s", path);
    rewind(file);
    unsigned char *data = malloc((size_t)length + 1);
    if (!data) die("out of memory reading %s", path);
    if ((size_t)length != fread(data, 1, (size_t)length, file)) die("cannot read %s", path);
    fclose(file);
    *size = (size_t)length;
    return data;
}

/* The value text after 'key': in a .npy header dictionary, or NULL. */
static const char *npy_field(const char *header, const char *key) {
    char quoted[32];
    snprintf(quoted, sizeof quoted, "'%s'", key);
    const char *at = strstr(header, quoted);
    if (!at) return NULL;
    at = strchr(at + strlen(quoted), ':');
    if (!at) return NULL;
    for (at++; *at == ' '; at++) {}
    return at;
}

/* Check a .npy file against the input `t`; where its data starts. Refuses other dtypes, shapes, orders. */
static size_t npy_data_offset(const char *path, const unsigned char *data, size_t size, const tf_tensor_info *t) {
    char expected[256], message[1024];
    describe(t, expected, sizeof expected);
    if (size < 10 || memcmp(data, "\x93NUMPY", 6) != 0) die("%s is not a .npy file (no \\x93NUMPY magic)", path);
    size_t length, start;
    if (data[6] == 1) {
        length = data[8] | (size_t)data[9] << 8;
        start = 10;
    } else if ((data[6] == 2 || data[6] == 3) && size >= 12) {
        length = data[8] | (size_t)data[9] << 8 | (size_t)data[10] << 16 | (size_t)data[11] << 24;
        start = 12;
    } else {
        die("%s: unknown .npy format version", path);
    }
    if (start + length > size) die("%s: the .npy header runs past the end of the file", path);
    char *header = malloc(length + 1);
    memcpy(header, data + start, length);
    header[length] = '\0';
    const char *descr = npy_field(header, "descr"), *order = npy_field(header, "fortran_order"),
               *shape = npy_field(header, "shape");
    if (!descr || !order || !shape) die("%s: the .npy header lacks descr, fortran_order or shape", path);
    const char *want = npy_descrs[t->dtype];
    int same_dtype = descr[0] == '\'' && strncmp(descr + 1, want, 3) == 0 && descr[4] == '\'';
    if (!same_dtype && descr[0] == '\'' && want[0] == '<' && descr[1] == '=') /* native order: little-endian */
        same_dtype = strncmp(descr + 2, want + 1, 2) == 0 && descr[4] == '\'';
    if (!same_dtype) {
        int quoted = descr[0] == '\'' ? (int)strcspn(descr + 1, "'") + 2 : (int)strcspn(descr, ",}");
        snprintf(message, sizeof message, "%s holds dtype %.*s, the input %s needs '%s'", path, quoted < 32 ? quoted : 32,
                 descr, expected, want);
        die("%s", message);
    }
    if (strncmp(order, "False", 5) != 0) {
        snprintf(message, sizeof message, "%s is in Fortran order; the input %s needs C order", path, expected);
        die("%s", message);
    }
    int64_t dims[64];
    int rank = 0;
    const char *p = shape;
    if (*p++ != '(') die("%s: cannot read the .npy shape", path);
    while (*p && *p != ')') {
        while (*p == ' ' || *p == ',') p++;
        if (*p == ')') break;
        char *end;
        long long value = strtoll(p, &end, 10);
        if (end == p || rank == 64) die("%s: cannot read the .npy shape", path);
        dims[rank++] = value;
        p = end;
    }
    int same_shape = rank == t->rank;
    for (int d = 0; same_shape && d < rank; d++) same_shape = dims[d] == t->shape[d];
    if (!same_shape) {
        int n = snprintf(message, sizeof message, "%s holds an array of shape (", path);
        for (int d = 0; d < rank && n < (int)sizeof message; d++)
            n += snprintf(message + n, sizeof message - n, d ? ", %" PRId64 : "%" PRId64, dims[d]);
        snprintf(message + n, sizeof message - n, "), the input %s needs its shape", expected);
        die("%s", message);
    }
    free(header);
    if (size - start - length != t->bytes) die("%s: the .npy data is not the size its header says", path);
    return start + length;
}

/* An input's bytes, from a .npy or raw file, in a buffer of its own. */
static void *read_input(const char *path, const tf_tensor_info *t) {
    size_t size;
    unsigned char *data = read_file(path, &size);
    size_t offset = 0;
    if (size >= 6 && memcmp(data, "\x93NUMPY", 6) == 0) {
        offset = npy_data_offset(path, data, size, t);
    } else if (size != t->bytes) {
        char expected[256], message[600];
        describe(t, expected, sizeof expected);
        snprintf(message, sizeof message, "%s has %zu bytes, the raw input %s needs %zu", path, size, expected,
                 t->bytes);
        die("%s", message);
    }
    void *buffer = malloc(t->bytes ? t->bytes : 1);
    if (!buffer) die("out of memory for %s", path);
    memcpy(buffer, data + offset, t->bytes);
    free(data);
    return buffer;
}

static void write_output(const char *path, const tf_tensor_info *t, const void *data) {
    FILE *file = fopen(path, "wb");
    if (!file) die("cannot create %s", path);
    if (ends_with(path, ".npy")) {
        char dict[512];
        int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                         npy_descrs[t->dtype]);
        for (int d = 0; d < t->rank; d++) n += snprintf(dict + n, sizeof dict - n, "%" PRId64 ", ", t->shape[d]);
        if (t->rank > 1) n -= 2; /* (4, 8) but (8,) */
        else if (t->rank == 1) n -= 1;
        n += snprintf(dict + n, sizeof dict - n, "), }");
        size_t total = 10 + (size_t)n + 1, padded = (total + 63) / 64 * 64;
        unsigned char prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
        prefix[8] = (unsigned char)((padded - 10) & 0xFF);
        prefix[9] = (unsigned char)((padded - 10) >> 8);
        fwrite(prefix, 1, 10, file);
        fwrite(dict, 1, (size_t)n, file);
        for (size_t i = total; i < padded; i++) fputc(' ', file);
        fputc('\n', file);
    }
    if (t->bytes && fwrite(data, 1, t->bytes, file) != t->bytes) die("cannot write %s", path);
    if (fclose(file) != 0) die("cannot write %s", path);
}

static double seconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + now.tv_nsec * 1e-9;
}

static void usage(void) {
    const tf_model_io *io = tf_model_describe();
    char text[256];
    fprintf(stderr, "usage: main [-w model.weights] [-n N] [-i] INPUT... OUTPUT...\n  inputs:");
    for (int i = 0; i < io->n_inputs; i++) {
        describe(&io->inputs[i], text, sizeof text);
        fprintf(stderr, " %s", text);
    }
    fprintf(stderr, "\n  outputs:");
    for (int i = 0; i < io->n_outputs; i++) {
        describe(&io->outputs[i], text, sizeof text);
        fprintf(stderr, " %s", text);
    }
    fprintf(stderr, "\n");
    exit(1);
}

int main(int argc, char **argv) {
    const tf_model_io *io = tf_model_describe();
    const char *weights = io->weights_linked ? NULL : "model.weights";
    long calls = 1;
    int timing = 0, arg = 1;
    const uint16_t one = 1;
    if (*(const unsigned char *)&one != 1) die("%s", "this machine is big-endian; the model's files are little-endian");
    for (; arg < argc && argv[arg][0] == '-' && argv[arg][1] != '\0'; arg++) {
        if (strcmp(argv[arg], "-w") == 0 && arg + 1 < argc) {
            weights = argv[++arg];
        } else if (strcmp(argv[arg], "-n") == 0 && arg + 1 < argc) {
            char *end;
            calls = strtol(argv[++arg], &end, 10);
            if (*end || calls < 1) die("-n needs a positive count, got %s", argv[arg]);
            timing = 1;
        } else if (strcmp(argv[arg], "-i") == 0) {
            char text[256];
            printf("target %s, %d thread(s), weights %zu bytes (%s), workspace %zu bytes\n", io->target,
                   io->threads, io->weights_bytes, io->weights_linked ? "linked" : "file", io->workspace_bytes);
            for (int i = 0; i < io->n_inputs; i++) {
                describe(&io->inputs[i], text, sizeof text);
                printf("input %d: %s, %zu bytes\n", i, text, io->inputs[i].bytes);
            }
            for (int i = 0; i < io->n_outputs; i++) {
                describe(&io->outputs[i], text, sizeof text);
                printf("output %d: %s, %zu bytes\n", i, text, io->outputs[i].bytes);
            }
            return 0;
        } else {
            usage();
        }
    }
    if (argc - arg != io->n_inputs + io->n_outputs) usage();
    const void *inputs[TF_MODEL_N_INPUTS + 1];
    void *outputs[TF_MODEL_N_OUTPUTS + 1];
    for (int i = 0; i < io->n_inputs; i++) inputs[i] = read_input(argv[arg + i], &io->inputs[i]);
    for (int i = 0; i < io->n_outputs; i++) {
        outputs[i] = calloc(1, io->outputs[i].bytes ? io->outputs[i].bytes : 1);
        if (!outputs[i]) die("%s", "out of memory for the outputs");
    }
    tf_model *model = tf_model_open(weights);
    if (!model) die("%s", tf_model_last_error());
    double best = 1e300, start = seconds();
    for (long call = 0; call < calls; call++) {
        double before = seconds();
        int code = tf_model_run(model, inputs, outputs);
        if (code != TF_OK) {
            fprintf(stderr, "main: tf_model_run failed: %s\n", tf_model_error(code));
            if (code == TF_ERROR_BAD_ID) fprintf(stderr, "main: %s\n", tf_model_last_error());
            return 1;
        }
        double took = seconds() - before;
        if (took < best) best = took;
    }
    double total = seconds() - start;
    if (timing)
        printf("%ld calls: %.3f ms per call (best %.3f ms), %.3f s in all\n", calls, total / calls * 1e3, best * 1e3,
               total);
    for (int i = 0; i < io->n_outputs; i++) write_output(argv[arg + io->n_inputs + i], &io->outputs[i], outputs[i]);
    tf_model_close(model);
    return 0;
}
