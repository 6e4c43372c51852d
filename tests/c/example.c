/* Minimal use of the engine's C API: load a model, stream a completion. Usage: example MODEL_DIR [PROMPT] */
#include <stdio.h>

#include "engine.h"

static bool print_piece(void *user_data, engine_token token, const char *piece, size_t piece_len) {
    (void)user_data;
    (void)token;
    fwrite(piece, 1, piece_len, stdout);
    fflush(stdout);
    return true; /* false stops generation */
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR [PROMPT]\n", argv[0]);
        return 2;
    }
    engine_model_options mo = engine_model_default_options(); /* backend auto: CUDA if usable, else CPU */
    engine_model *model = NULL;
    if (engine_model_load(argv[1], &mo, &model) != ENGINE_STATUS_OK) {
        fprintf(stderr, "load: %s\n", engine_last_error());
        return 1;
    }
    engine_session *session = NULL;
    if (engine_session_new(model, 0, &session) != ENGINE_STATUS_OK) {
        fprintf(stderr, "session: %s\n", engine_last_error());
        engine_model_free(model);
        return 1;
    }
    engine_generate_options go = engine_generate_default_options();
    go.max_new_tokens = 32;
    go.sampler.temperature = 0.7f;
    go.sampler.top_p = 0.9f;
    go.sampler.repetition_penalty = 1.1f;
    engine_generate_result res;
    engine_status st = engine_generate(session, argc > 2 ? argv[2] : "Once upon a time", &go, print_piece, NULL, &res);
    if (st == ENGINE_STATUS_OK) {
        printf("\n[%u tokens, %.1f tok/s]\n", res.n_generated_tokens, res.decode_tokens_per_second);
        engine_string_free(res.text);
    } else {
        fprintf(stderr, "generate: %s (%s)\n", engine_status_string(st), engine_last_error());
    }
    engine_session_free(session);
    engine_model_free(model);
    return st == ENGINE_STATUS_OK ? 0 : 1;
}
