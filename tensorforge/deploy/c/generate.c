/* generate.c: greedy generation from the command line (built by the package's Makefile).
 *
 *   ./generate [-w prefill.weights decode.weights] [-n N] ID...
 *
 * Prints the N (default 16) new token ids after the prompt ID... on one line of stdout, separated by
 * spaces, and the time it took on stderr. -w reads the weights from files (default: the weights
 * linked into the library, or ./prefill.weights and ./decode.weights when the package was exported
 * with weights="file"). Errors go to stderr, exit status 1.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "generator.h"

static double seconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + now.tv_nsec * 1e-9;
}

static int usage(void) {
    fprintf(stderr, "usage: generate [-w prefill.weights decode.weights] [-n N] ID...\n"
                    "  ids in [0, %d); prompt and new ids together at most %d\n",
            TF_GENERATOR_VOCAB, TF_GENERATOR_MAX_LEN);
    return 1;
}

int main(int argc, char **argv) {
    const char *prefill = NULL, *decode = NULL;
    if (!tf_prefill_describe()->weights_linked) prefill = "prefill.weights", decode = "decode.weights";
    long n_new = 16;
    int arg = 1;
    for (; arg < argc && argv[arg][0] == '-' && argv[arg][1] != '\0' && (argv[arg][1] < '0' || argv[arg][1] > '9');
         arg++) {
        if (strcmp(argv[arg], "-w") == 0 && arg + 2 < argc) {
            prefill = argv[++arg];
            decode = argv[++arg];
        } else if (strcmp(argv[arg], "-n") == 0 && arg + 1 < argc) {
            char *end;
            n_new = strtol(argv[++arg], &end, 10);
            if (*end || n_new < 0) return usage();
        } else {
            return usage();
        }
    }
    int n_prompt = argc - arg;
    if (n_prompt < 1) return usage();
    int64_t *prompt = malloc(sizeof *prompt * (size_t)n_prompt), *ids = malloc(sizeof *ids * (size_t)(n_new + 1));
    for (int i = 0; i < n_prompt; i++) {
        char *end;
        prompt[i] = strtoll(argv[arg + i], &end, 10);
        if (*end || end == argv[arg + i]) {
            fprintf(stderr, "generate: the prompt id '%s' is not an integer\n", argv[arg + i]);
            return 1;
        }
    }
    tf_generator *g = tf_generator_open(prefill, decode);
    if (!g) {
        fprintf(stderr, "generate: %s\n", tf_model_last_error());
        return 1;
    }
    double start = seconds();
    int code = tf_generator_generate(g, prompt, n_prompt, (int)n_new, ids);
    double took = seconds() - start;
    if (code != TF_OK) {
        fprintf(stderr, "generate: %s\n", code == TF_ERROR_BAD_ID || code == TF_ERROR_PROMPT ? tf_model_last_error()
                                                                                            : tf_model_error(code));
        return 1;
    }
    for (long i = 0; i < n_new; i++) printf(i ? " %" PRId64 : "%" PRId64, ids[i]);
    printf("\n");
    fprintf(stderr, "generate: %d prompt ids and %ld new ones in %.3f ms\n", n_prompt, n_new, took * 1e3);
    tf_generator_close(g);
    return 0;
}
