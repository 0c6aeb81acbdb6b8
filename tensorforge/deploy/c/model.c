/* model.c: the C API of model.h around the compiled model's code (`<name>__run`, tensorforge's
 * `tf_run(inputs, outputs, weights, workspace)` renamed), written by tensorforge's export.
 *
 * Built once per model in the library, with the functions' prefix and the model's constants:
 *   cc -c model.c                                   tf_model_open ... from model_io.h (TF_MODEL_...)
 *   cc -c model.c -DTF_NAME=tf_decode -DTF_IO=TF_DECODE -DTF_IO_HEADER='"decode_io.h"'   (a generator)
 *
 * A tf_model holds its weights (the linked ones, or a file's) and its own workspace. The code of a
 * model exported with threads > 1 has one pool of worker threads (module globals): its run lets one
 * caller at a time use the workers, and a caller that finds them busy runs its parts alone on its own
 * thread, so separate tf_models run correctly at the same time. The pool must not be shut down
 * during a run: open counts the open tf_models, and the close of the last one joins the workers.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "tf_internal.h"

#ifndef TF_NAME
#define TF_NAME tf_model
#define TF_IO TF_MODEL
#define TF_IO_HEADER "model_io.h"
#endif
#include TF_IO_HEADER

#define API(suffix) TF_CAT(TF_NAME, suffix)     /* API(_open): tf_model_open */
#define CODE(suffix) TF_CAT(TF_NAME, suffix)    /* CODE(__run): tf_model__run, in the model's object */
#define IO(suffix) TF_CAT(TF_IO, suffix)        /* IO(_N_INPUTS): TF_MODEL_N_INPUTS */

int32_t CODE(__run)(void **inputs, void **outputs, const void *weights, void *workspace);
#if IO(_THREADS) > 1
void CODE(__pool_shutdown)(void);
#endif
#if IO(_WEIGHTS_LINKED)
extern const unsigned char CODE(__weights)[];
#endif

struct tf_model {
    const void *weights;
    void *owned_weights; /* read from a file; NULL for the linked weights */
    void *workspace;
    int running;         /* a call in progress (atomic) */
};

static const tf_tensor_info input_infos[] = IO(_INPUT_INFOS);
static const tf_tensor_info output_infos[] = IO(_OUTPUT_INFOS);
static const tf_id_check id_checks[] = IO(_ID_CHECKS);

static const tf_model_io description = {
    IO(_TARGET), IO(_N_INPUTS), IO(_N_OUTPUTS), input_infos, output_infos, IO(_WEIGHTS_BYTES),
    IO(_WORKSPACE_BYTES), IO(_THREADS), IO(_WEIGHTS_LINKED),
};

TF_API const tf_model_io *API(_describe)(void) { return &description; }

#if IO(_THREADS) > 1
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static int open_models;

/* One run on zeros: starts the pool's workers (they are created by the first run that gets them). */
static void start_pool(tf_model *m) {
    void *inputs[IO(_N_INPUTS) + 1], *outputs[IO(_N_OUTPUTS) + 1];
    for (int i = 0; i < IO(_N_INPUTS); i++) inputs[i] = tf__alloc(input_infos[i].bytes);
    for (int i = 0; i < IO(_N_OUTPUTS); i++) outputs[i] = tf__alloc(output_infos[i].bytes);
    int ready = 1;
    for (int i = 0; i < IO(_N_INPUTS); i++) ready = ready && inputs[i];
    for (int i = 0; i < IO(_N_OUTPUTS); i++) ready = ready && outputs[i];
    if (ready) CODE(__run)(inputs, outputs, m->weights, m->workspace); /* ids 0 are in every table */
    for (int i = 0; i < IO(_N_INPUTS); i++) free(inputs[i]);
    for (int i = 0; i < IO(_N_OUTPUTS); i++) free(outputs[i]);
}
#endif

TF_API tf_model *API(_open)(const char *weights_path) {
    tf_model *m = calloc(1, sizeof *m);
    if (!m) {
        tf__set_error("cannot allocate a tf_model");
        return NULL;
    }
    if (weights_path) {
        m->owned_weights = tf__load_weights(weights_path, IO(_TARGET), IO(_LAYOUT_ID), IO(_WEIGHTS_BYTES));
        m->weights = m->owned_weights;
        if (!m->weights) {
            free(m);
            return NULL;
        }
    } else {
#if IO(_WEIGHTS_LINKED)
        m->weights = CODE(__weights);
#else
        tf__set_error("this library was exported with its weights in a file (weights=\"file\"): pass the path "
                      "of its .weights file to open");
        free(m);
        return NULL;
#endif
    }
    m->workspace = tf__alloc(IO(_WORKSPACE_BYTES));
    if (!m->workspace) {
        tf__set_error("cannot allocate the model's workspace of %zu bytes", (size_t)IO(_WORKSPACE_BYTES));
        free(m->owned_weights);
        free(m);
        return NULL;
    }
#if IO(_THREADS) > 1
    pthread_mutex_lock(&pool_lock);
    open_models++;
    pthread_mutex_unlock(&pool_lock);
    start_pool(m);
#endif
    return m;
}

TF_API int API(_run)(tf_model *m, const void *const *inputs, void *const *outputs) {
    if (!m) return TF_ERROR_NULL_MODEL;
    if (!inputs || !outputs) return TF_ERROR_NULL_BUFFER;
    for (int i = 0; i < IO(_N_INPUTS); i++)
        if (!inputs[i]) return TF_ERROR_NULL_BUFFER;
    for (int i = 0; i < IO(_N_OUTPUTS); i++)
        if (!outputs[i]) return TF_ERROR_NULL_BUFFER;
    int code = tf__check_ids(id_checks, IO(_N_ID_CHECKS), inputs, input_infos);
    if (code != TF_OK) return code;
    if (__atomic_exchange_n(&m->running, 1, __ATOMIC_ACQUIRE)) return TF_ERROR_BUSY;
    int32_t status = CODE(__run)((void **)inputs, (void **)outputs, m->weights, m->workspace);
    __atomic_store_n(&m->running, 0, __ATOMIC_RELEASE);
    return status == 0 ? TF_OK : TF_ERROR_NATIVE;
}

TF_API void API(_close)(tf_model *m) {
    if (!m) return;
#if IO(_THREADS) > 1
    pthread_mutex_lock(&pool_lock);
    if (--open_models == 0) CODE(__pool_shutdown)(); /* no run is in progress: no tf_model is open */
    pthread_mutex_unlock(&pool_lock);
#endif
    free(m->workspace);
    free(m->owned_weights);
    free(m);
}
