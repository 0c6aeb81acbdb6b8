/* model.h: the C API of a model exported by tensorforge (CompiledModel.export). The same for every
 * model: what differs (the number of inputs and outputs, their dtypes and shapes) is in model_io.h
 * as constants, and in tf_model_describe() at run time.
 *
 *     tf_model *m = tf_model_open(NULL);            // NULL: the weights linked into the library
 *     if (!m) { fprintf(stderr, "%s\n", tf_model_last_error()); return 1; }
 *     const void *inputs[TF_MODEL_N_INPUTS] = {x};  // C-contiguous, little-endian, of model_io.h's shapes
 *     void *outputs[TF_MODEL_N_OUTPUTS] = {y};
 *     int code = tf_model_run(m, inputs, outputs);  // 0: ok
 *     if (code) fprintf(stderr, "%s\n", tf_model_error(code));
 *     tf_model_close(m);
 *
 * Threads: tf_model_run may be called from several threads at once on separate tf_models (each has
 * its own workspace); one tf_model runs one call at a time (a second concurrent call on the same
 * tf_model returns TF_ERROR_BUSY). A model exported with threads > 1 shares one pool of
 * threads - 1 worker threads among all its open tf_models: tf_model_open starts it (one run on
 * zeros), a call that finds it busy with another tf_model's call runs on its own thread alone, and
 * the tf_model_close of the last open tf_model joins the workers.
 */
#ifndef TENSORFORGE_MODEL_H
#define TENSORFORGE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TF_API __attribute__((visibility("default")))

/* Element types (tf_tensor_info.dtype), all little-endian. */
enum { TF_F32 = 0, TF_I8 = 1, TF_U8 = 2, TF_I32 = 3, TF_I64 = 4, TF_BOOL = 5 };

/* tf_model_run's codes (tf_model_error gives the sentence). */
enum {
    TF_OK = 0,
    TF_ERROR_NULL_MODEL = 1,   /* the tf_model is NULL */
    TF_ERROR_NULL_BUFFER = 2,  /* inputs or outputs, or one of their pointers, is NULL */
    TF_ERROR_BUSY = 3,         /* the tf_model is running a call in another thread */
    TF_ERROR_BAD_ID = 4,       /* an input of ids holds one outside the table it indexes */
    TF_ERROR_NATIVE = 5,       /* the model's code returned a failure status */
    TF_ERROR_PROMPT = 6        /* generator.h: an empty prompt, or prompt and new ids over max_len */
};

#define TF_MAX_RANK 8

typedef struct {
    const char *name;             /* the graph input's or output's name */
    int dtype;                    /* TF_F32, ... */
    int rank;
    int64_t shape[TF_MAX_RANK];   /* the first `rank` entries */
    size_t bytes;                 /* the buffer's size: product of the shape times the element size */
} tf_tensor_info;

typedef struct {
    const char *target;           /* what the code was compiled for, e.g. "aarch64 armv8" */
    int n_inputs, n_outputs;
    const tf_tensor_info *inputs, *outputs;
    size_t weights_bytes;         /* the weights buffer (linked or read from the file) */
    size_t workspace_bytes;       /* allocated by each tf_model_open */
    int threads;                  /* 1: every call on its caller's thread; n: a pool of n - 1 workers */
    int weights_linked;           /* 1: tf_model_open(NULL) uses weights in the library */
} tf_model_io;

typedef struct tf_model tf_model;

/* NULL: the weights linked into the library; else a model.weights file, checked (header, target,
 * layout, size, checksum). NULL on failure: tf_model_last_error() says why. */
TF_API tf_model *tf_model_open(const char *weights_path);
/* inputs[i], outputs[i]: C-contiguous buffers of model_io.h's shapes and dtypes. 0 = ok. */
TF_API int tf_model_run(tf_model *m, const void *const *inputs, void *const *outputs);
/* A sentence for a code of tf_model_run. */
TF_API const char *tf_model_error(int code);
/* Why the last failed tf_model_open or tf_model_run on this thread failed, in a sentence naming
 * the file or input (empty before any failure). */
TF_API const char *tf_model_last_error(void);
TF_API const tf_model_io *tf_model_describe(void);
TF_API void tf_model_close(tf_model *m);

#ifdef __cplusplus
}
#endif

#endif
