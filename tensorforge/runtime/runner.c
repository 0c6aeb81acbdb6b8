/* runner.c: serves one compiled tensorforge model over stdin/stdout, so that code for a foreign
 * target (AArch64 on an x86 host) can run under qemu-user and stay loaded across calls.
 *
 *   runner WEIGHTS_FILE WORKSPACE_BYTES N_INPUTS IN_BYTES... N_OUTPUTS OUT_BYTES...
 *
 * Protocol (little-endian, no framing beyond the sizes given on the command line):
 *   after loading the weights the runner writes "TFOK";
 *   request: 4-byte command "RUN\0" followed by every input's bytes in order, or "BYE\0" to exit;
 *   reply:   int32 status of tf_run; when it is 0, every output's bytes follow in order.
 * End of input also exits. Anything unexpected is reported on stderr with exit status 2.
 * Linked with the model's object file; TF_ENTRY names its entry (default tf_run).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef TF_ENTRY
#define TF_ENTRY tf_run
#endif

int32_t TF_ENTRY(void **inputs, void **outputs, void *weights, void *workspace);

static void fail(const char *what) {
    fprintf(stderr, "tensorforge runner: %s%s%s\n", what, errno ? ": " : "", errno ? strerror(errno) : "");
    exit(2);
}

/* Reads exactly n bytes. Returns 1, or 0 on end of input before the first byte. */
static int read_exactly(void *buffer, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t got = read(0, (char *)buffer + done, n - done);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) fail("reading a request");
        if (got == 0) {
            if (done == 0) return 0;
            errno = 0;
            fail("the request ended early");
        }
        done += (size_t)got;
    }
    return 1;
}

static void write_exactly(const void *buffer, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t put = write(1, (const char *)buffer + done, n - done);
        if (put < 0 && errno == EINTR) continue;
        if (put < 0) fail("writing a reply");
        done += (size_t)put;
    }
}

/* A 64-byte aligned buffer of at least n bytes (never NULL for n == 0). */
static void *alloc_aligned(size_t n) {
    void *p = NULL;
    errno = posix_memalign(&p, 64, n > 0 ? n : 64);
    if (errno) fail("allocating a buffer");
    return p;
}

static size_t parse_size(const char *text) {
    char *end = NULL;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno || end == text || *end != '\0') {
        errno = 0;
        fail("a size argument is not a number");
    }
    return (size_t)value;
}

static void *load_weights(const char *path) {
    FILE *file = fopen(path, "rb");
    if (!file) fail("opening the weights file");
    if (fseek(file, 0, SEEK_END) != 0) fail("seeking in the weights file");
    long size = ftell(file);
    if (size < 0) fail("sizing the weights file");
    rewind(file);
    void *weights = alloc_aligned((size_t)size);
    if (size > 0 && fread(weights, 1, (size_t)size, file) != (size_t)size) fail("reading the weights file");
    fclose(file);
    return weights;
}

int main(int argc, char **argv) {
    /* No PR_SET_PDEATHSIG: it fires when the *thread* that started us exits (a first call from a worker
       thread lost every later call). When the Python process ends, its end of our stdin closes and
       read_exactly sees the end of file: we return. */
    errno = 0;
    if (argc < 5) fail("usage: runner WEIGHTS_FILE WORKSPACE_BYTES N_INPUTS IN_BYTES... N_OUTPUTS OUT_BYTES...");
    void *weights = load_weights(argv[1]);
    void *workspace = alloc_aligned(parse_size(argv[2]));
    int arg = 3;
    size_t n_inputs = parse_size(argv[arg++]);
    if ((size_t)argc < (size_t)arg + n_inputs + 1) fail("missing input sizes");
    void **inputs = alloc_aligned((n_inputs + 1) * sizeof(void *));
    size_t *input_bytes = alloc_aligned((n_inputs + 1) * sizeof(size_t));
    for (size_t i = 0; i < n_inputs; i++) {
        input_bytes[i] = parse_size(argv[arg++]);
        inputs[i] = alloc_aligned(input_bytes[i]);
    }
    size_t n_outputs = parse_size(argv[arg++]);
    if ((size_t)argc != (size_t)arg + n_outputs) fail("wrong number of output sizes");
    void **outputs = alloc_aligned((n_outputs + 1) * sizeof(void *));
    size_t *output_bytes = alloc_aligned((n_outputs + 1) * sizeof(size_t));
    for (size_t i = 0; i < n_outputs; i++) {
        output_bytes[i] = parse_size(argv[arg++]);
        outputs[i] = alloc_aligned(output_bytes[i]);
    }

    write_exactly("TFOK", 4);
    for (;;) {
        char command[4];
        if (!read_exactly(command, 4) || memcmp(command, "BYE", 4) == 0) return 0;
        if (memcmp(command, "RUN", 4) != 0) {
            errno = 0;
            fail("unknown command");
        }
        for (size_t i = 0; i < n_inputs; i++) {
            if (!read_exactly(inputs[i], input_bytes[i]) && input_bytes[i] > 0) {
                errno = 0;
                fail("the request ended early");
            }
        }
        int32_t status = TF_ENTRY(inputs, outputs, weights, workspace);
        write_exactly(&status, sizeof status);
        if (status == 0) {
            for (size_t i = 0; i < n_outputs; i++) write_exactly(outputs[i], output_bytes[i]);
        }
    }
}
