/* export_threads.c: several threads, each running its own tf_model of an exported package at once
 * (tests/test_export.py builds it against the package's libmodel.a; weights: linked, or ./model.weights).
 *
 *   export_threads MODELS CALLS INPUT OUTPUT      (raw files; a model of one input and one output)
 *
 * Every call's output must equal the first one's bytes; OUTPUT gets it. Then every model is closed
 * (the last close joins the pool), one is opened again and must still give the same bytes.
 * Exit status 0 when all agree; a message and 1 otherwise.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

typedef struct {
    tf_model *model;
    const void *input;
    void *output;
    const void *expected;
    size_t bytes;
    long calls, mismatches, failures;
} job;

static void *run(void *argument) {
    job *j = argument;
    for (long c = 0; c < j->calls; c++) {
        const void *inputs[1] = {j->input};
        void *outputs[1] = {j->output};
        memset(j->output, 0xFF, j->bytes);
        if (tf_model_run(j->model, inputs, outputs) != TF_OK) j->failures++;
        else if (memcmp(j->output, j->expected, j->bytes) != 0) j->mismatches++;
    }
    return NULL;
}

static void *read_all(const char *path, size_t bytes) {
    void *data = malloc(bytes);
    FILE *file = fopen(path, "rb");
    if (!file || fread(data, 1, bytes, file) != bytes) {
        fprintf(stderr, "cannot read %zu bytes from %s\n", bytes, path);
        exit(1);
    }
    fclose(file);
    return data;
}

int main(int argc, char **argv) {
    if (argc != 5) return fprintf(stderr, "usage: export_threads MODELS CALLS INPUT OUTPUT\n"), 1;
    int n = atoi(argv[1]);
    long calls = atol(argv[2]);
    const tf_model_io *io = tf_model_describe();
    if (io->n_inputs != 1 || io->n_outputs != 1) return fprintf(stderr, "needs one input and one output\n"), 1;
    size_t out_bytes = io->outputs[0].bytes;
    void *input = read_all(argv[3], io->inputs[0].bytes);
    void *expected = malloc(out_bytes);

    const char *weights = io->weights_linked ? NULL : "model.weights"; /* in the current directory */
    tf_model *first = tf_model_open(weights);
    if (!first) return fprintf(stderr, "%s\n", tf_model_last_error()), 1;
    const void *inputs[1] = {input};
    void *outputs[1] = {expected};
    if (tf_model_run(first, inputs, outputs) != TF_OK) return fprintf(stderr, "the first run failed\n"), 1;

    job *jobs = calloc((size_t)n, sizeof *jobs);
    pthread_t *threads = calloc((size_t)n, sizeof *threads);
    for (int i = 0; i < n; i++) {
        jobs[i] = (job){i == 0 ? first : tf_model_open(weights), input, malloc(out_bytes), expected, out_bytes, calls, 0, 0};
        if (!jobs[i].model) return fprintf(stderr, "%s\n", tf_model_last_error()), 1;
    }
    for (int i = 0; i < n; i++) pthread_create(&threads[i], NULL, run, &jobs[i]);
    long mismatches = 0, failures = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(threads[i], NULL);
        mismatches += jobs[i].mismatches;
        failures += jobs[i].failures;
        tf_model_close(jobs[i].model);
    }
    /* every model closed: the pool's workers are joined; a new model starts them again */
    tf_model *again = tf_model_open(weights);
    void *after = malloc(out_bytes);
    outputs[0] = after;
    if (!again || tf_model_run(again, inputs, outputs) != TF_OK) return fprintf(stderr, "reopening failed\n"), 1;
    tf_model_close(again);
    if (failures || mismatches || memcmp(after, expected, out_bytes) != 0) {
        fprintf(stderr, "%ld failed calls, %ld calls with other bytes, after reopening: %s\n", failures, mismatches,
                memcmp(after, expected, out_bytes) ? "other bytes" : "the same bytes");
        return 1;
    }
    FILE *file = fopen(argv[4], "wb");
    fwrite(expected, 1, out_bytes, file);
    fclose(file);
    printf("%d models x %ld calls: the same bytes\n", n, calls);
    return 0;
}
