/* generator.c: greedy generation over the exported prefill and decode graphs (generator.h), as
 * tensorforge's Generator.generate(prompt, n, temperature=0) does it in numpy.
 *
 * Each cache is [outer..., MAX_LEN, row...] with the positions on axis 2; a graph returns rows of the
 * same layout with PROMPT_LEN (prefill) or 1 (decode) positions, copied in at position 0 / pos.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "generator.h"
#include "decode_io.h"
#include "prefill_io.h"
#include "tf_internal.h"

#define N_CACHES TF_GENERATOR_N_CACHES

static const size_t cache_outer[N_CACHES] = TF_GENERATOR_CACHE_OUTER;
static const size_t cache_row_bytes[N_CACHES] = TF_GENERATOR_CACHE_ROW_BYTES;

struct tf_generator {
    tf_model *prefill, *decode;
    void *caches[N_CACHES];
    void *prefill_outputs[1 + N_CACHES];
    void *decode_outputs[1 + N_CACHES];
    const void *decode_inputs[2 + N_CACHES];
    int64_t tokens[TF_GENERATOR_PROMPT_LEN], last, token, position;
    int running;
};

/* Copy `count` positions of rows (layout [outer, count, row]) into cache j at `position`. */
static void write_rows(tf_generator *g, int j, const void *rows, size_t count, size_t position) {
    size_t row = cache_row_bytes[j];
    for (size_t o = 0; o < cache_outer[j]; o++)
        memcpy((char *)g->caches[j] + (o * TF_GENERATOR_MAX_LEN + position) * row,
               (const char *)rows + o * count * row, count * row);
}

/* numpy's argmax: the first maximum, or the first NaN if there is one. */
static int64_t argmax(const float *logits, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(logits[i])) return i;
        if (logits[i] > logits[best]) best = i;
    }
    return best;
}

TF_API void tf_generator_close(tf_generator *g) {
    if (!g) return;
    tf_prefill_close(g->prefill);
    tf_decode_close(g->decode);
    for (int j = 0; j < N_CACHES; j++) free(g->caches[j]);
    for (int j = 0; j < 1 + N_CACHES; j++) {
        free(g->prefill_outputs[j]);
        free(g->decode_outputs[j]);
    }
    free(g);
}

TF_API tf_generator *tf_generator_open(const char *prefill_weights, const char *decode_weights) {
    tf_generator *g = calloc(1, sizeof *g);
    if (!g) {
        tf__set_error("cannot allocate a tf_generator");
        return NULL;
    }
    g->prefill = tf_prefill_open(prefill_weights);
    g->decode = g->prefill ? tf_decode_open(decode_weights) : NULL;
    if (!g->decode) {
        tf_generator_close(g);
        return NULL;
    }
    const tf_model_io *prefill = tf_prefill_describe(), *decode = tf_decode_describe();
    int ok = 1;
    for (int j = 0; j < N_CACHES; j++) ok = ok && (g->caches[j] = tf__alloc(decode->inputs[2 + j].bytes));
    for (int j = 0; j < 1 + N_CACHES; j++) {
        ok = ok && (g->prefill_outputs[j] = tf__alloc(prefill->outputs[j].bytes));
        ok = ok && (g->decode_outputs[j] = tf__alloc(decode->outputs[j].bytes));
    }
    if (!ok) {
        tf__set_error("cannot allocate the generator's caches");
        tf_generator_close(g);
        return NULL;
    }
    g->decode_inputs[0] = &g->token;
    g->decode_inputs[1] = &g->position;
    for (int j = 0; j < N_CACHES; j++) g->decode_inputs[2 + j] = g->caches[j];
    return g;
}

/* Feed `token` at the current position: the decode graph's logits, its rows written into the caches. */
static int step(tf_generator *g, int64_t token) {
    g->token = token;
    int code = tf_decode_run(g->decode, g->decode_inputs, g->decode_outputs);
    if (code != TF_OK) return code;
    for (int j = 0; j < N_CACHES; j++) write_rows(g, j, g->decode_outputs[1 + j], 1, (size_t)g->position);
    g->position++;
    return TF_OK;
}

static int generate(tf_generator *g, const int64_t *prompt, int n_prompt, int n_new, int64_t *ids) {
    int head = n_prompt < TF_GENERATOR_PROMPT_LEN ? n_prompt : TF_GENERATOR_PROMPT_LEN;
    for (int i = 0; i < TF_GENERATOR_PROMPT_LEN; i++) g->tokens[i] = i < head ? prompt[i] : TF_GENERATOR_PAD_ID;
    g->last = head - 1;
    const void *inputs[2] = {g->tokens, &g->last};
    int code = tf_prefill_run(g->prefill, inputs, g->prefill_outputs);
    if (code != TF_OK) return code;
    for (int j = 0; j < N_CACHES; j++) write_rows(g, j, g->prefill_outputs[1 + j], TF_GENERATOR_PROMPT_LEN, 0);
    g->position = head;
    const float *logits = (const float *)g->prefill_outputs[0] +
                          (TF_GENERATOR_FIRST_TOKEN ? 0 : (size_t)(head - 1) * TF_GENERATOR_VOCAB);
    for (int i = head; i < n_prompt; i++) {
        if ((code = step(g, prompt[i])) != TF_OK) return code;
        logits = g->decode_outputs[0];
    }
    for (int i = 0; i < n_new; i++) {
        ids[i] = argmax(logits, TF_GENERATOR_VOCAB);
        if (i + 1 < n_new) {
            if ((code = step(g, ids[i])) != TF_OK) return code;
            logits = g->decode_outputs[0];
        }
    }
    return TF_OK;
}

TF_API int tf_generator_generate(tf_generator *g, const int64_t *prompt, int n_prompt, int n_new, int64_t *ids) {
    if (!g) return TF_ERROR_NULL_MODEL;
    if (!prompt || (n_new > 0 && !ids)) return TF_ERROR_NULL_BUFFER;
    if (n_prompt < 1 || n_new < 0 || n_prompt > TF_GENERATOR_MAX_LEN - n_new) {
        tf__set_error("a prompt of %d ids and %d new ones do not fit in max_len=%d cache positions (the prompt needs "
                      "at least one id)", n_prompt, n_new, TF_GENERATOR_MAX_LEN);
        return TF_ERROR_PROMPT;
    }
    if (__atomic_exchange_n(&g->running, 1, __ATOMIC_ACQUIRE)) return TF_ERROR_BUSY;
    int code = generate(g, prompt, n_prompt, n_new, ids);
    __atomic_store_n(&g->running, 0, __ATOMIC_RELEASE);
    return code;
}
