/* generator.h: a GPT exported by tensorforge's Generator.export: greedy generation over token ids,
 * and the two compiled graphs it runs, each with model.h's API under its own prefix.
 *
 *     tf_generator *g = tf_generator_open(NULL, NULL);        // NULL: the weights linked in
 *     if (!g) { fprintf(stderr, "%s\n", tf_model_last_error()); return 1; }
 *     int64_t prompt[] = {5, 1, 7}, ids[20];
 *     int code = tf_generator_generate(g, prompt, 3, 20, ids); // 0: ids holds 20 new token ids
 *     tf_generator_close(g);
 *
 * tf_generator_generate is Generator.generate(prompt, n, temperature=0) without the prompt: a prefill
 * of the first TF_GENERATOR_PROMPT_LEN prompt ids (padded with id 0), one decode step per further
 * prompt id, then per new id the argmax of the logits (the first maximum; the first NaN if any) and
 * a decode step on it. The KV caches belong to the tf_generator: one generation at a time on it
 * (TF_ERROR_BUSY otherwise); separate tf_generators may run in separate threads.
 *
 * The graphs: tf_prefill (tokens[1, PROMPT_LEN] and, when TF_GENERATOR_FIRST_TOKEN, last[1]: the
 * logits of that position only -> logits, each cache's first PROMPT_LEN rows) and tf_decode (token[1,1],
 * pos[1], the caches -> logits[1,1,V], each cache's row at pos). Their inputs and outputs are in
 * prefill_io.h and decode_io.h (TF_PREFILL_..., TF_DECODE_...).
 */
#ifndef TENSORFORGE_GENERATOR_H
#define TENSORFORGE_GENERATOR_H

#include "model.h"
#include "generator_io.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tf_generator tf_generator;

/* The weights of the prefill and the decode graph: NULL for the linked ones, or their .weights files.
 * NULL on failure: tf_model_last_error() says why. */
TF_API tf_generator *tf_generator_open(const char *prefill_weights, const char *decode_weights);
/* `n_new` new token ids after the `n_prompt` ids of `prompt`, into `ids`. 0 = ok, else tf_model_error(code). */
TF_API int tf_generator_generate(tf_generator *g, const int64_t *prompt, int n_prompt, int n_new, int64_t *ids);
TF_API void tf_generator_close(tf_generator *g);

TF_API tf_model *tf_prefill_open(const char *weights_path);
TF_API int tf_prefill_run(tf_model *m, const void *const *inputs, void *const *outputs);
TF_API const tf_model_io *tf_prefill_describe(void);
TF_API void tf_prefill_close(tf_model *m);

TF_API tf_model *tf_decode_open(const char *weights_path);
TF_API int tf_decode_run(tf_model *m, const void *const *inputs, void *const *outputs);
TF_API const tf_model_io *tf_decode_describe(void);
TF_API void tf_decode_close(tf_model *m);

#ifdef __cplusplus
}
#endif

#endif
