/*
 * A C client of the engine: generates from a model directory on the CPU and walks every error path of the C API.
 * Usage: client MODEL_DIR        (exit status 0 when every check passed)
 *
 * Built and run by tests/capi/tests/c_client.rs (cargo test -p capi-tests --test c_client), which links it against
 * the cdylib and against the staticlib. Also a worked example of the API: see the "happy path" section.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

static int checks = 0;

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: \"%s\")\n", __FILE__, __LINE__, #cond,             \
                    engine_last_error());                                                                              \
            exit(1);                                                                                                   \
        }                                                                                                              \
        checks++;                                                                                                      \
    } while (0)

/* Run a call and require a status; on mismatch print both and the library's message. */
#define EXPECT(call, want)                                                                                             \
    do {                                                                                                               \
        engine_status got_ = (call);                                                                                   \
        if (got_ != (want)) {                                                                                          \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s); last error: \"%s\"\n", __FILE__, __LINE__, \
                    #call, (int)got_, engine_status_string((int32_t)got_), (int)(want),                               \
                    engine_status_string((int32_t)(want)), engine_last_error());                                     \
            exit(1);                                                                                                   \
        }                                                                                                              \
        checks++;                                                                                                      \
    } while (0)

#define OK(call) EXPECT(call, ENGINE_STATUS_OK)

/* The last error contains `needle`. */
static void expect_message(const char *needle, int line) {
    const char *msg = engine_last_error();
    if (strstr(msg, needle) == NULL) {
        fprintf(stderr, "client.c:%d: last error \"%s\" does not mention \"%s\"\n", line, msg, needle);
        exit(1);
    }
    checks++;
}
#define EXPECT_MESSAGE(needle) expect_message(needle, __LINE__)

/* ---- streaming callback: collects the text and tokens, optionally stops after `stop_after` tokens ---- */
typedef struct {
    char text[8192];
    size_t len;
    engine_token tokens[1024];
    size_t n_tokens;
    size_t stop_after;
    int echo;
    engine_session *reenter; /* if set, the callback tries to use this session (must be refused) */
    engine_status reenter_status;
    engine_model *busy_model; /* if set, the callback tries to make a session of this model */
    engine_status busy_status;
} stream_t;

static bool on_token(void *user_data, engine_token token, const char *piece, size_t piece_len) {
    stream_t *s = (stream_t *)user_data;
    if (piece[piece_len] != '\0' || strlen(piece) > piece_len) {
        fprintf(stderr, "piece is not NUL-terminated at piece_len\n");
        exit(1);
    }
    if (s->len + piece_len < sizeof s->text) {
        memcpy(s->text + s->len, piece, piece_len);
        s->len += piece_len;
        s->text[s->len] = '\0';
    }
    if (s->echo) {
        fwrite(piece, 1, piece_len, stdout);
        fflush(stdout);
    }
    if (s->reenter != NULL) s->reenter_status = engine_session_reset(s->reenter);
    if (s->busy_model != NULL) {
        engine_session *x = NULL;
        s->busy_status = engine_session_new(s->busy_model, 0, &x);
        engine_session_free(x);
    }
    if (token == ENGINE_NO_TOKEN) return true; /* the held-back tail; return value ignored */
    if (s->n_tokens < 1024) s->tokens[s->n_tokens++] = token;
    return s->n_tokens < s->stop_after;
}

static stream_t *new_stream(size_t stop_after) {
    stream_t *s = calloc(1, sizeof *s);
    if (s == NULL) exit(2);
    s->stop_after = stop_after;
    return s;
}

/* ---- threads: sessions of one model generate concurrently ---- */
typedef struct {
    engine_model *model;
    engine_token tokens[16];
    size_t n_tokens;
    engine_status status;
} thread_job;

static void *thread_main(void *arg) {
    thread_job *job = (thread_job *)arg;
    engine_session *s = NULL;
    job->status = engine_session_new(job->model, 0, &s);
    if (job->status != ENGINE_STATUS_OK) return NULL;
    engine_generate_options o = engine_generate_default_options();
    o.max_new_tokens = 8;
    o.ignore_eos = true;
    stream_t *st = new_stream(SIZE_MAX);
    job->status = engine_generate(s, "In parallel", &o, on_token, st, NULL);
    job->n_tokens = st->n_tokens;
    memcpy(job->tokens, st->tokens, st->n_tokens * sizeof(engine_token));
    free(st);
    engine_session_free(s);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    printf("engine %s\n", engine_version());
    CHECK(strlen(engine_version()) > 0);
    CHECK(strcmp(engine_status_string(ENGINE_STATUS_CONTEXT_OVERFLOW), "context overflow") == 0);
    CHECK(strcmp(engine_status_string(12345), "unknown status") == 0);

    /* ================= happy path ================= */
    engine_model_options mo = engine_model_default_options();
    mo.backend = ENGINE_BACKEND_CPU;
    engine_model *model = NULL;
    OK(engine_model_load(dir, &mo, &model));
    CHECK(model != NULL);
    CHECK(strcmp(engine_last_error(), "") == 0);

    engine_model_info info;
    OK(engine_model_get_info(model, &info));
    printf("model: backend=%s device=\"%s\" vocab=%u ctx=%u layers=%u bos=%u eos=%u\n", info.backend, info.device,
           info.vocab_size, info.max_context, info.num_layers, info.bos_token, info.eos_token);
    CHECK(strcmp(info.backend, "cpu") == 0);
    CHECK(info.vocab_size > 0 && info.tokenizer_vocab_size <= info.vocab_size);

    engine_memory_plan plan;
    OK(engine_model_memory_plan(model, 0, 0, &plan));
    CHECK(plan.total_bytes == plan.weights_bytes + plan.kv_cache_bytes + plan.activations_bytes + plan.workspace_bytes);
    printf("memory plan: weights %llu, kv %llu, activations %llu, workspace %llu, total %llu bytes\n",
           (unsigned long long)plan.weights_bytes, (unsigned long long)plan.kv_cache_bytes,
           (unsigned long long)plan.activations_bytes, (unsigned long long)plan.workspace_bytes,
           (unsigned long long)plan.total_bytes);

    /* tokenize: ask for the size, then fill */
    const char *text = "Hello, world! 你好";
    size_t n = 0;
    EXPECT(engine_tokenize(model, text, true, NULL, 0, &n), ENGINE_STATUS_BUFFER_TOO_SMALL);
    CHECK(n > 1);
    engine_token *ids = malloc(n * sizeof *ids);
    OK(engine_tokenize(model, text, true, ids, n, &n));
    CHECK(ids[0] == info.bos_token);
    char *back = NULL;
    size_t back_len = 0;
    OK(engine_detokenize(model, ids, n, &back, &back_len));
    CHECK(strcmp(back, text) == 0 && back_len == strlen(text));
    OK(engine_string_free(back));

    /* session: feed, logits, sample */
    engine_session *sess = NULL;
    OK(engine_session_new(model, 0, &sess));
    float *logits = malloc(info.vocab_size * sizeof *logits);
    OK(engine_session_feed(sess, ids, n, logits, info.vocab_size));
    engine_token best = 0;
    for (engine_token i = 1; i < info.vocab_size; i++)
        if (logits[i] > logits[best]) best = i;
    engine_token picked = 0;
    OK(engine_session_sample(sess, NULL, &picked));
    CHECK(picked == best);
    engine_sampler_options so = engine_sampler_default_options();
    so.temperature = 0.7f;
    so.top_k = 20;
    so.top_p = 0.9f;
    so.repetition_penalty = 1.1f;
    so.seed = 1234;
    OK(engine_session_sample(sess, &so, &picked));
    CHECK(picked < info.vocab_size);
    engine_token next = 0;
    OK(engine_session_feed_and_sample(sess, &picked, 1, &so, &next));
    size_t len = 0, cap = 0;
    OK(engine_session_length(sess, &len, &cap));
    CHECK(len == n + 1 && cap == info.max_context);
    OK(engine_session_truncate(sess, n));
    OK(engine_session_length(sess, &len, NULL));
    CHECK(len == n);
    OK(engine_session_reset(sess));
    OK(engine_session_length(sess, &len, NULL));
    CHECK(len == 0);

    /* one-call generate with streaming */
    engine_generate_options go = engine_generate_default_options();
    go.max_new_tokens = 16;
    go.ignore_eos = true; /* random weights: do not let an early EOS shorten the test */
    stream_t *st = new_stream(SIZE_MAX);
    st->echo = 1;
    engine_generate_result res;
    printf("generate: ");
    OK(engine_generate(sess, "Once upon a time", &go, on_token, st, &res));
    printf("\n");
    CHECK(res.stop_reason == ENGINE_STOP_REASON_MAX_TOKENS);
    CHECK(res.n_generated_tokens == 16 && st->n_tokens == 16);
    CHECK(res.last_token == st->tokens[15]);
    CHECK(res.text_len == st->len && memcmp(res.text, st->text, st->len) == 0);
    printf("generated %u tokens after a %u-token prompt, stop reason %d, first token %.1f ms, %.1f tok/s\n",
           res.n_generated_tokens, res.n_prompt_tokens, (int)res.stop_reason, res.time_to_first_token_ms,
           res.decode_tokens_per_second);
    /* the greedy continuation is the same through the low-level calls */
    {
        engine_session *s2 = NULL;
        OK(engine_session_new(model, 0, &s2));
        OK(engine_tokenize(model, "Once upon a time", true, ids, n, &len));
        engine_token t = 0;
        OK(engine_session_feed_and_sample(s2, ids, len, NULL, &t));
        CHECK(t == st->tokens[0]);
        for (size_t i = 1; i < 16; i++) {
            OK(engine_session_feed_and_sample(s2, &t, 1, NULL, &t));
            CHECK(t == st->tokens[i]);
        }
        OK(engine_session_free(s2));
    }
    char *full = malloc(res.text_len + 1);
    memcpy(full, res.text, res.text_len + 1);
    OK(engine_string_free(res.text));
    free(st);

    /* the callback stops generation */
    OK(engine_session_reset(sess));
    st = new_stream(3);
    OK(engine_generate(sess, "Once upon a time", &go, on_token, st, &res));
    CHECK(res.stop_reason == ENGINE_STOP_REASON_CALLBACK && st->n_tokens == 3);
    OK(engine_string_free(res.text));
    free(st);

    /* a stop string: the text ends before it */
    OK(engine_session_reset(sess));
    const char *stop = full + strlen(full) / 2;
    while ((*stop & 0xC0) == 0x80) stop++; /* start on a character boundary */
    const char *stops[] = {"never-generated-stop-string", stop};
    go.stop_strings = stops;
    go.n_stop_strings = 2;
    OK(engine_generate(sess, "Once upon a time", &go, NULL, NULL, &res));
    CHECK(res.stop_reason == ENGINE_STOP_REASON_STOP_STRING);
    CHECK(res.text_len == (size_t)(strstr(full, stop) - full) && strncmp(res.text, full, res.text_len) == 0);
    OK(engine_string_free(res.text));
    go.stop_strings = NULL;
    go.n_stop_strings = 0;
    free(full);

    /* threads: three sessions of one model generate at once, each as it would alone */
    {
        engine_session *s1 = NULL;
        OK(engine_session_new(model, 0, &s1));
        engine_generate_options o = engine_generate_default_options();
        o.max_new_tokens = 8;
        o.ignore_eos = true;
        stream_t *alone = new_stream(SIZE_MAX);
        OK(engine_generate(s1, "In parallel", &o, on_token, alone, NULL));
        OK(engine_session_free(s1));
        thread_job jobs[3];
        pthread_t th[3];
        for (int i = 0; i < 3; i++) {
            memset(&jobs[i], 0, sizeof jobs[i]);
            jobs[i].model = model;
            CHECK(pthread_create(&th[i], NULL, thread_main, &jobs[i]) == 0);
        }
        for (int i = 0; i < 3; i++) {
            CHECK(pthread_join(th[i], NULL) == 0);
            CHECK(jobs[i].status == ENGINE_STATUS_OK);
            CHECK(jobs[i].n_tokens == alone->n_tokens);
            CHECK(memcmp(jobs[i].tokens, alone->tokens, alone->n_tokens * sizeof(engine_token)) == 0);
        }
        free(alone);
    }

    /* ================= error paths ================= */
    engine_model *m2 = (engine_model *)&checks; /* must be reset to NULL by a failed load */

    /* null pointers */
    EXPECT(engine_model_load(NULL, &mo, &m2), ENGINE_STATUS_NULL_POINTER);
    EXPECT_MESSAGE("dir is NULL");
    CHECK(m2 == NULL);
    EXPECT(engine_model_load(dir, &mo, NULL), ENGINE_STATUS_NULL_POINTER);
    EXPECT(engine_model_get_info(NULL, &info), ENGINE_STATUS_NULL_POINTER);
    EXPECT(engine_model_get_info(model, NULL), ENGINE_STATUS_NULL_POINTER);
    {
        engine_session *s0 = sess;
        EXPECT(engine_session_new(NULL, 0, &s0), ENGINE_STATUS_NULL_POINTER);
        CHECK(s0 == NULL); /* out-parameters of handles are cleared on failure */
    }
    EXPECT(engine_tokenize(model, NULL, true, ids, n, &len), ENGINE_STATUS_NULL_POINTER);
    EXPECT(engine_tokenize(model, "x", true, ids, n, NULL), ENGINE_STATUS_NULL_POINTER);
    EXPECT(engine_detokenize(model, ids, 1, NULL, NULL), ENGINE_STATUS_NULL_POINTER);
    EXPECT(engine_session_feed(sess, NULL, 4, NULL, 0), ENGINE_STATUS_NULL_POINTER);
    EXPECT(engine_session_sample(NULL, NULL, &picked), ENGINE_STATUS_NULL_POINTER);
    EXPECT(engine_generate(sess, NULL, NULL, NULL, NULL, NULL), ENGINE_STATUS_NULL_POINTER);
    EXPECT_MESSAGE("prompt is NULL");
    EXPECT(engine_generate(NULL, "hi", NULL, NULL, NULL, NULL), ENGINE_STATUS_NULL_POINTER);
    OK(engine_model_free(NULL)); /* freeing NULL is a no-op */
    OK(engine_session_free(NULL));
    OK(engine_string_free(NULL));

    /* invalid UTF-8 */
    EXPECT(engine_tokenize(model, "abc\xff", true, ids, n, &len), ENGINE_STATUS_INVALID_UTF8);
    EXPECT_MESSAGE("offset 3");
    EXPECT(engine_generate(sess, "\xc3\x28", NULL, NULL, NULL, NULL), ENGINE_STATUS_INVALID_UTF8);
    EXPECT(engine_model_load("/tmp/\xfe\xff", &mo, &m2), ENGINE_STATUS_INVALID_UTF8);
    {
        const char *bad_stops[] = {"\x80"};
        engine_generate_options o = engine_generate_default_options();
        o.stop_strings = bad_stops;
        o.n_stop_strings = 1;
        EXPECT(engine_generate(sess, "hi", &o, NULL, NULL, NULL), ENGINE_STATUS_INVALID_UTF8);
        EXPECT_MESSAGE("stop_strings[0]");
    }

    /* bad options */
    {
        OK(engine_session_reset(sess));
        engine_model_options bad = mo;
        bad.backend = 7;
        EXPECT(engine_model_load(dir, &bad, &m2), ENGINE_STATUS_INVALID_ARGUMENT);
        EXPECT_MESSAGE("backend");
        bad = mo;
        bad.max_context = info.max_position_embeddings + 1;
        EXPECT(engine_model_load(dir, &bad, &m2), ENGINE_STATUS_INVALID_ARGUMENT);
        EXPECT_MESSAGE("max context");
        bad = mo;
        bad.prefill_chunk = ENGINE_MAX_PREFILL_CHUNK + 1;
        EXPECT(engine_model_load(dir, &bad, &m2), ENGINE_STATUS_INVALID_ARGUMENT);
        CHECK(m2 == NULL);
        engine_session *s2 = NULL;
        EXPECT(engine_session_new(model, info.max_context + 1, &s2), ENGINE_STATUS_INVALID_ARGUMENT);
        CHECK(s2 == NULL);
        engine_sampler_options b = engine_sampler_default_options();
        b.temperature = -1.0f;
        EXPECT(engine_session_feed_and_sample(sess, ids, 2, &b, &picked), ENGINE_STATUS_INVALID_ARGUMENT);
        EXPECT_MESSAGE("temperature");
        b = engine_sampler_default_options();
        b.top_p = 0.0f;
        EXPECT(engine_session_feed_and_sample(sess, ids, 2, &b, &picked), ENGINE_STATUS_INVALID_ARGUMENT);
        EXPECT_MESSAGE("top_p");
        b = engine_sampler_default_options();
        b.min_p = -0.5f;
        EXPECT(engine_session_feed_and_sample(sess, ids, 2, &b, &picked), ENGINE_STATUS_INVALID_ARGUMENT);
        EXPECT_MESSAGE("min_p");
        b = engine_sampler_default_options();
        b.repetition_penalty = NAN;
        engine_generate_options o = engine_generate_default_options();
        o.sampler = b;
        EXPECT(engine_generate(sess, "hi", &o, NULL, NULL, NULL), ENGINE_STATUS_INVALID_ARGUMENT);
        EXPECT_MESSAGE("repetition_penalty");
        engine_token oob = info.vocab_size;
        EXPECT(engine_session_feed(sess, &oob, 1, NULL, 0), ENGINE_STATUS_INVALID_ARGUMENT);
        EXPECT(engine_session_feed(sess, ids, 0, NULL, 0), ENGINE_STATUS_INVALID_ARGUMENT);
        EXPECT(engine_session_sample(sess, NULL, &picked), ENGINE_STATUS_INVALID_ARGUMENT); /* nothing fed */
        EXPECT(engine_model_memory_plan(model, info.max_position_embeddings + 1, 0, &plan),
               ENGINE_STATUS_INVALID_ARGUMENT);
        EXPECT(engine_session_feed(sess, ids, 2, logits, info.vocab_size - 1), ENGINE_STATUS_BUFFER_TOO_SMALL);
        OK(engine_session_length(sess, &len, NULL));
        CHECK(len == 0); /* refused calls feed nothing */
    }

    /* the CUDA backend loads, or says why it cannot (no GPU, no driver) */
    {
        engine_model_options co = mo;
        co.backend = ENGINE_BACKEND_CUDA;
        engine_status got = engine_model_load(dir, &co, &m2);
        printf("cuda backend: %s%s%s\n", engine_status_string((int32_t)got), got ? ": " : "", engine_last_error());
        CHECK(got == ENGINE_STATUS_OK || got == ENGINE_STATUS_BACKEND_UNAVAILABLE);
        CHECK((got == ENGINE_STATUS_OK) == (m2 != NULL));
        OK(engine_model_free(m2));
    }

    /* missing model directory */
    EXPECT(engine_model_load("/nonexistent/engine/model", &mo, &m2), ENGINE_STATUS_NOT_FOUND);
    EXPECT_MESSAGE("/nonexistent/engine/model");
    CHECK(m2 == NULL);

    /* context overflow: a session of 16 positions */
    {
        engine_session *small = NULL;
        OK(engine_session_new(model, 16, &small));
        engine_token many[20];
        for (int i = 0; i < 20; i++) many[i] = (engine_token)(10 + i);
        EXPECT(engine_session_feed(small, many, 20, NULL, 0), ENGINE_STATUS_CONTEXT_OVERFLOW);
        EXPECT_MESSAGE("context overflow");
        OK(engine_session_feed(small, many, 12, NULL, 0));
        EXPECT(engine_session_feed(small, many, 5, NULL, 0), ENGINE_STATUS_CONTEXT_OVERFLOW);
        EXPECT(engine_generate(small, "the cat sat on the mat, the dog sat on the log", &go, NULL, NULL, &res),
               ENGINE_STATUS_CONTEXT_OVERFLOW);
        CHECK(res.text == NULL && res.stop_reason == ENGINE_STOP_REASON_NONE);
        OK(engine_session_length(small, &len, NULL));
        CHECK(len == 12);
        /* generation that reaches the end of the context stops cleanly */
        OK(engine_session_reset(small));
        go.max_new_tokens = 100;
        OK(engine_generate(small, "Hi", &go, NULL, NULL, &res));
        CHECK(res.stop_reason == ENGINE_STOP_REASON_CONTEXT_FULL);
        OK(engine_string_free(res.text));
        OK(engine_session_free(small));
    }

    /* a session used re-entrantly from its own callback; its model run from the callback */
    {
        OK(engine_session_reset(sess));
        st = new_stream(2);
        st->reenter = sess;
        st->busy_model = model;
        OK(engine_generate(sess, "Hi", &go, on_token, st, NULL));
        CHECK(st->reenter_status == ENGINE_STATUS_SESSION_BUSY);
        CHECK(st->busy_status == ENGINE_STATUS_MODEL_BUSY); /* not a deadlock */
        free(st);
    }

    /* freed and foreign handles */
    {
        int not_a_handle[16] = {0};
        EXPECT(engine_model_get_info((engine_model *)not_a_handle, &info), ENGINE_STATUS_INVALID_HANDLE);
        EXPECT(engine_session_reset((engine_session *)not_a_handle), ENGINE_STATUS_INVALID_HANDLE);
        EXPECT(engine_session_reset((engine_session *)model), ENGINE_STATUS_INVALID_HANDLE); /* wrong type */
        EXPECT_MESSAGE("model handle");
        EXPECT(engine_string_free((char *)not_a_handle), ENGINE_STATUS_INVALID_HANDLE);

        engine_session *s3 = NULL;
        OK(engine_session_new(model, 0, &s3));
        OK(engine_session_free(s3));
        EXPECT(engine_session_feed(s3, ids, 1, NULL, 0), ENGINE_STATUS_INVALID_HANDLE);
        EXPECT_MESSAGE("freed");
        EXPECT(engine_session_free(s3), ENGINE_STATUS_INVALID_HANDLE); /* double free */

        /* a freed model: its handle is dead, its sessions live on */
        OK(engine_model_free(model));
        EXPECT(engine_model_get_info(model, &info), ENGINE_STATUS_INVALID_HANDLE);
        EXPECT(engine_session_new(model, 0, &s3), ENGINE_STATUS_INVALID_HANDLE);
        EXPECT(engine_model_free(model), ENGINE_STATUS_INVALID_HANDLE);
        OK(engine_session_reset(sess));
        OK(engine_generate(sess, "Still alive", &go, NULL, NULL, &res));
        CHECK(res.n_generated_tokens > 0);
        OK(engine_string_free(res.text));
        EXPECT(engine_string_free(res.text), ENGINE_STATUS_INVALID_HANDLE); /* double free of a string */
        OK(engine_session_free(sess));
    }

    free(ids);
    free(logits);
    printf("c client: all %d checks passed\n", checks);
    return 0;
}
