/* The engine's text features through its public API on the tiny model: stop strings across
 * token boundaries and the hold-back bound in the stream, chat messages with a template
 * override (and the error without one), the input checks, tokenization deferred to the engine
 * (errors come back as ERROR events that say why), and what engine_tokenize_request returns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "engine.h"
#include "internal.h"
#include "tools/mkmodel/gguf_write.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    engine_req_t *req;
    int ntok, done; /* done: 1 finished, 2 error */
    engine_finish_t fin;
    engine_invalid_t invalid;
    uint32_t completion_tokens;
    char text[8192];
    size_t tlen;
    size_t seen[256];  /* text length after each TOKEN event */
    uint32_t first_id; /* the first TOKEN event's id */
    char err[512];
} res_t;

static engine_t *mk(const char *tmpl, int defer)
{
    engine_config_t cfg;
    engine_config_init(&cfg);
    cfg.model_path = TINY_MODEL;
    cfg.tokenizer_path = TINY_TOKENIZER;
    cfg.threads = 2;
    cfg.chat_template = tmpl;
    cfg.tokenize_in_engine = defer;
    char err[512];
    engine_t *e = NULL;
    if (engine_new(&e, &cfg, err, sizeof(err)) < 0) fail_msg("engine_new: %s", err);
    return e;
}

static void run(engine_t *e, const engine_request_t *r, res_t *res)
{
    memset(res, 0, sizeof(*res));
    engine_request_t q = *r;
    q.user = res;
    int rc = engine_submit(e, &q, &res->req, NULL, res->err, sizeof res->err);
    if (rc < 0) fail_msg("submit: %d %s", rc, res->err);
    for (int spins = 0; !res->done && spins < 20000; spins++) {
        engine_event_t ev[16];
        int k = engine_poll(e, ev, 16);
        for (int i = 0; i < k; i++) {
            memcpy(res->text + res->tlen, ev[i].text, ev[i].len);
            res->tlen += ev[i].len;
            if (ev[i].type == ENGINE_EV_TOKEN) {
                if (res->ntok == 0) res->first_id = ev[i].token;
                res->seen[res->ntok++] = res->tlen;
            } else {
                res->done = ev[i].type == ENGINE_EV_FINISHED ? 1 : 2;
                res->fin = ev[i].finish;
                res->invalid = ev[i].invalid;
                res->completion_tokens = ev[i].completion_tokens;
                if (res->done == 2) snprintf(res->err, sizeof res->err, "%.500s", ev[i].text);
                engine_req_free(e, res->req);
            }
        }
        if (!k) usleep(1000);
    }
    assert_true(res->done);
}

static void greedy(engine_request_t *r, const char *prompt, uint32_t max_tokens)
{
    engine_request_init(r);
    r->prompt = prompt;
    r->max_tokens = max_tokens;
    r->ignore_eos = true;
}

static void test_stop_strings(void **state)
{
    (void)state;
    engine_t *e = mk(NULL, 0);
    engine_request_t r;
    greedy(&r, "Once upon a time", 40);
    res_t base;
    run(e, &r, &base);
    assert_int_equal(base.fin, ENGINE_FINISH_LENGTH);
    assert_true(base.ntok >= 10);
    /* a stop string that starts inside token 3's text and ends inside a later token's */
    size_t a = base.seen[2] + 1 < base.seen[3] ? base.seen[2] + 1 : base.seen[2];
    size_t b = base.seen[5];
    if (b - a > 20) b = a + 20;
    /* whole characters: the random model's text need not be ASCII */
    while (a < b && ((unsigned char)base.text[a] & 0xC0) == 0x80)
        a++;
    while (b < base.tlen && ((unsigned char)base.text[b] & 0xC0) == 0x80)
        b++;
    assert_true(b > a + 1);
    char stop[64];
    memcpy(stop, base.text + a, b - a);
    stop[b - a] = 0;
    /* the first place the string completes decides where the output ends */
    const char *first = strstr(base.text, stop);
    assert_non_null(first);
    size_t cut = (size_t)(first - base.text);
    const char *stops[] = {"never appears \x01", stop};
    r.stop_strs = stops;
    r.n_stop_strs = 2;
    res_t s;
    run(e, &r, &s);
    assert_int_equal(s.done, 1);
    assert_int_equal(s.fin, ENGINE_FINISH_STOP);
    assert_int_equal(s.tlen, cut);
    assert_memory_equal(s.text, base.text, cut);
    /* streaming: at each event at most longest - 1 bytes were held back */
    size_t longest = strlen(stops[0]) > strlen(stop) ? strlen(stops[0]) : strlen(stop);
    for (int i = 0; i < s.ntok; i++)
        assert_true(s.seen[i] + longest - 1 >= base.seen[i]);
    assert_true(s.completion_tokens < base.completion_tokens);
    /* stop strings that never match change nothing */
    const char *none[] = {"\x01\x02"};
    r.stop_strs = none;
    r.n_stop_strs = 1;
    res_t n;
    run(e, &r, &n);
    assert_int_equal(n.fin, ENGINE_FINISH_LENGTH);
    assert_int_equal(n.tlen, base.tlen);
    assert_memory_equal(n.text, base.text, base.tlen);
    /* bad stop strings are rejected up front */
    const char *empty[] = {""};
    r.stop_strs = empty;
    engine_invalid_t why;
    char msg[256];
    assert_int_equal(engine_validate(e, &r, &why, msg, sizeof msg), -EINVAL);
    assert_int_equal(why, ENGINE_INVALID_STOP_STRINGS);
    assert_string_equal(engine_invalid_name(why), "bad_stop_strings");
    engine_free(e);
}

static const engine_chat_msg_t chat[] = {{"system", "Be brief."}, {"user", "Tell a story."}};

static void test_messages(void **state)
{
    (void)state;
    /* llama2.c's tokenizer.bin carries no template: chat fails with a reason, prompts work */
    engine_t *e = mk(NULL, 0);
    engine_model_info_t mi;
    engine_model_info(e, &mi);
    assert_null(mi.chat_template);
    assert_non_null(strstr(mi.chat_template_note, "--chat-template"));
    assert_string_equal(mi.tokenizer, "llama");
    assert_int_equal(mi.n_eog, 1);
    assert_int_equal(mi.eog_ids[0], mi.eos_id);
    engine_request_t r;
    engine_request_init(&r);
    r.messages = chat;
    r.n_messages = 2;
    engine_invalid_t why;
    char msg[512];
    assert_int_equal(engine_validate(e, &r, &why, msg, sizeof msg), -EINVAL);
    assert_int_equal(why, ENGINE_INVALID_NO_TEMPLATE);
    assert_non_null(strstr(msg, "no chat template"));
    engine_free(e);

    /* an unknown override is a start-up error naming it */
    engine_config_t cfg;
    engine_config_init(&cfg);
    cfg.model_path = TINY_MODEL;
    cfg.tokenizer_path = TINY_TOKENIZER;
    cfg.chat_template = "nonsense";
    assert_int_equal(engine_new(&e, &cfg, msg, sizeof msg), -EINVAL);
    assert_non_null(strstr(msg, "'nonsense'"));

    /* with --chat-template the messages render, and tokenize as the rendered prompt would */
    e = mk("zephyr", 0);
    engine_model_info(e, &mi);
    assert_string_equal(mi.chat_template, "zephyr");
    uint32_t *ids;
    size_t n;
    assert_int_equal(engine_tokenize_request(e, &r, &ids, &n, &why, msg, sizeof msg), 0);
    char *text;
    assert_int_equal(engine_render_chat(e, chat, 2, &text, &why, msg, sizeof msg), 0);
    assert_string_equal(text, "<|system|>\nBe brief.<|endoftext|>\n<|user|>\nTell a story."
                              "<|endoftext|>\n<|assistant|>\n");
    engine_request_t p;
    engine_request_init(&p);
    p.prompt = text;
    p.parse_special = true;
    uint32_t *pids;
    size_t pn;
    assert_int_equal(engine_tokenize_request(e, &p, &pids, &pn, &why, msg, sizeof msg), 0);
    assert_int_equal(n, pn);
    assert_memory_equal(ids, pids, n * sizeof(*ids));
    free(text);
    free(ids);
    free(pids);
    r.max_tokens = 4;
    res_t res;
    run(e, &r, &res);
    assert_int_equal(res.done, 1);
    /* input checks */
    engine_chat_msg_t bad[] = {{"user", NULL}};
    r.messages = bad;
    r.n_messages = 1;
    assert_int_equal(engine_validate(e, &r, &why, msg, sizeof msg), -EINVAL);
    assert_int_equal(why, ENGINE_INVALID_INPUT);
    assert_non_null(strstr(msg, "messages[0] has no content"));
    r.messages = chat;
    r.n_messages = 2;
    r.prompt = "and a prompt";
    assert_int_equal(engine_validate(e, &r, &why, msg, sizeof msg), -EINVAL);
    assert_int_equal(why, ENGINE_INVALID_INPUT);
    engine_free(e);
}

static void test_deferred(void **state)
{
    (void)state;
    engine_t *e = mk("llama2", 1);
    engine_request_t r;
    /* the same prompt gives the same tokens whether the engine or the caller tokenizes */
    greedy(&r, "The bird said", 12);
    res_t d;
    run(e, &r, &d);
    engine_t *s = mk("llama2", 0);
    res_t c;
    run(s, &r, &c);
    assert_int_equal(d.tlen, c.tlen);
    assert_memory_equal(d.text, c.text, c.tlen);
    engine_free(s);
    /* a prompt within the early bound but over the context in tokens: an ERROR event that
     * says why (synchronous mode would have returned -EINVAL from engine_submit) */
    engine_model_info_t mi;
    engine_model_info(e, &mi);
    size_t len = (size_t)mi.max_seq_len * 3;
    char *big = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        big[i] = (char)('a' + (i * 7) % 26);
    big[len] = 0;
    greedy(&r, big, 0);
    res_t x;
    run(e, &r, &x);
    assert_int_equal(x.done, 2);
    assert_int_equal(x.invalid, ENGINE_INVALID_PROMPT_LONG);
    assert_non_null(strstr(x.err, "tokens but the context is"));
    /* the cheap bound still answers at once */
    big[0] = 0;
    char *huge = malloc((size_t)mi.max_seq_len * mi.max_token_bytes + 2);
    memset(huge, 'x', (size_t)mi.max_seq_len * mi.max_token_bytes + 1);
    huge[(size_t)mi.max_seq_len * mi.max_token_bytes + 1] = 0;
    greedy(&r, huge, 0);
    engine_req_t *q;
    engine_invalid_t why;
    char msg[256];
    assert_int_equal(engine_submit(e, &r, &q, &why, msg, sizeof msg), -EINVAL);
    assert_int_equal(why, ENGINE_INVALID_PROMPT_LONG);
    /* messages are rendered by the engine too */
    engine_request_init(&r);
    r.messages = chat;
    r.n_messages = 2;
    r.max_tokens = 3;
    res_t m;
    run(e, &r, &m);
    assert_int_equal(m.done, 1);
    free(big);
    free(huge);
    engine_free(e);
}

/* ENGINE_REQ_TOKENIZE: the ids engine_tokenize_request gives, from the driver, without a batch
 * slot (the only slot is busy), and the errors a Generate of the same input would get. */
static void tokenize_only(engine_t *e, const engine_request_t *r, res_t *res, uint32_t *ids,
                          size_t *n)
{
    memset(res, 0, sizeof(*res));
    engine_request_t q = *r;
    q.user = res;
    q.flags |= ENGINE_REQ_TOKENIZE;
    int rc = engine_submit(e, &q, &res->req, NULL, res->err, sizeof res->err);
    if (rc < 0) fail_msg("submit: %d %s", rc, res->err);
    *n = 0;
    for (int spins = 0; !res->done && spins < 20000; spins++) {
        engine_event_t ev[16];
        int k = engine_poll(e, ev, 16);
        for (int i = 0; i < k; i++) {
            if (ev[i].user != res) continue; /* the request holding the slot */
            assert_int_not_equal(ev[i].type, ENGINE_EV_TOKEN);
            res->done = ev[i].type == ENGINE_EV_FINISHED ? 1 : 2;
            res->invalid = ev[i].invalid;
            if (res->done == 1) {
                size_t m;
                const uint32_t *p = engine_req_prompt(res->req, &m);
                assert_int_equal(m, ev[i].prompt_tokens);
                memcpy(ids, p, m * sizeof *ids);
                *n = m;
            } else {
                snprintf(res->err, sizeof res->err, "%.500s", ev[i].text);
            }
            engine_req_free(e, res->req);
        }
        if (!k) usleep(1000);
    }
    assert_true(res->done);
}

static void test_tokenize_only(void **state)
{
    (void)state;
    for (int defer = 0; defer <= 1; defer++) {
        engine_config_t cfg;
        engine_config_init(&cfg);
        cfg.model_path = TINY_MODEL;
        cfg.tokenizer_path = TINY_TOKENIZER;
        cfg.threads = 2;
        cfg.max_batch = 1;
        cfg.chat_template = "llama2";
        cfg.tokenize_in_engine = defer;
        cfg.manual_ack = 1; /* the busy request pauses at its backlog, keeping its slot */
        char err[512];
        engine_t *e = NULL;
        if (engine_new(&e, &cfg, err, sizeof(err)) < 0) fail_msg("engine_new: %s", err);
        engine_request_t busy;
        greedy(&busy, "Hold the slot", 0);
        engine_req_t *bq;
        assert_int_equal(engine_submit(e, &busy, &bq, NULL, err, sizeof err), 0);
        engine_request_t r;
        greedy(&r, "The bird said hello", 0);
        uint32_t ids[512], *want;
        size_t n, nwant;
        res_t t;
        tokenize_only(e, &r, &t, ids, &n);
        assert_int_equal(t.done, 1);
        assert_int_equal(engine_tokenize_request(e, &r, &want, &nwant, NULL, err, sizeof err), 0);
        assert_int_equal(n, nwant);
        assert_memory_equal(ids, want, n * sizeof *ids);
        free(want);
        engine_request_init(&r);
        r.messages = chat;
        r.n_messages = 2;
        tokenize_only(e, &r, &t, ids, &n);
        assert_int_equal(t.done, 1);
        assert_int_equal(engine_tokenize_request(e, &r, &want, &nwant, NULL, err, sizeof err), 0);
        assert_int_equal(n, nwant);
        assert_memory_equal(ids, want, n * sizeof *ids);
        free(want);
        /* a prompt over the context in tokens fails as a Generate would */
        engine_model_info_t mi;
        engine_model_info(e, &mi);
        size_t len = (size_t)mi.max_seq_len * 3;
        char *big = malloc(len + 1);
        for (size_t i = 0; i < len; i++)
            big[i] = (char)('a' + (i * 7) % 26);
        big[len] = 0;
        greedy(&r, big, 0);
        if (defer) {
            tokenize_only(e, &r, &t, ids, &n);
            assert_int_equal(t.done, 2);
            assert_int_equal(t.invalid, ENGINE_INVALID_PROMPT_LONG);
        } else {
            engine_req_t *q;
            engine_invalid_t why;
            r.flags = ENGINE_REQ_TOKENIZE;
            assert_int_equal(engine_submit(e, &r, &q, &why, err, sizeof err), -EINVAL);
            assert_int_equal(why, ENGINE_INVALID_PROMPT_LONG);
        }
        free(big);
        engine_req_free(e, bq);
        engine_free(e);
    }
}

/* The tiny model's tokenizer.bin rewritten as GGUF metadata (spaces as U+2581, as a GGUF
 * SentencePiece vocabulary has them), with a chat template and add_space_prefix. */
static void write_vocab_gguf(const char *path, const char *tmpl, int n_drop, int rename,
                             const char *as)
{
    tokenizer_t t;
    char err[256];
    assert_int_equal(tokenizer_load(&t, TINY_TOKENIZER, 512, err, sizeof err), 0);
    int n = t.n_vocab - n_drop;
    const char **toks = calloc((size_t)n, sizeof(*toks));
    size_t *lens = calloc((size_t)n, sizeof(*lens));
    int32_t *types = calloc((size_t)n, sizeof(*types));
    char **own = calloc((size_t)n, sizeof(*own));
    for (int i = 0; i < n; i++) {
        size_t len = t.len[i], k = 0;
        own[i] = malloc(3 * len + 1);
        for (size_t j = 0; j < len; j++) {
            char c = t.text[t.off[i] + j];
            if (c == ' ' && t.type[i] == TOK_TYPE_NORMAL) {
                memcpy(own[i] + k, "\xe2\x96\x81", 3);
                k += 3;
            } else {
                own[i][k++] = c;
            }
        }
        if (i == rename) {
            free(own[i]);
            own[i] = strdup(as);
            k = strlen(as);
        }
        toks[i] = own[i];
        lens[i] = k;
        types[i] = t.type[i];
    }
    gguf_writer_t *w;
    assert_int_equal(gguf_writer_new(&w, 3, 32), 0);
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_set_arr_strn(w, "tokenizer.ggml.tokens", toks, lens, (size_t)n);
    gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", t.score, (size_t)n);
    gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, (size_t)n);
    if (tmpl) gguf_writer_set_str(w, "tokenizer.chat_template", tmpl);
    assert_int_equal(gguf_writer_write(w, path, err, sizeof err), 0);
    gguf_writer_free(w);
    for (int i = 0; i < n; i++)
        free(own[i]);
    free(own);
    free(toks);
    free(lens);
    free(types);
    tokenizer_dispose(&t);
}

static void test_gguf_vocabulary(void **state)
{
    (void)state;
    char path[] = "/tmp/inferd-test-vocab-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    /* a Llama 3 style template in the file: detected, chat works without an override */
    write_vocab_gguf(path, "{{ '<|start_header_id|>' + role + '<|end_header_id|>' }}", 0, -1, NULL);
    engine_config_t cfg;
    engine_config_init(&cfg);
    cfg.model_path = TINY_MODEL;
    cfg.tokenizer_path = path;
    cfg.threads = 2;
    char err[512];
    engine_t *g = NULL;
    assert_int_equal(engine_new(&g, &cfg, err, sizeof err), 0);
    engine_model_info_t mi;
    engine_model_info(g, &mi);
    assert_string_equal(mi.chat_template, "llama3");
    /* the same vocabulary tokenizes prompts exactly as its tokenizer.bin form */
    engine_t *b = mk(NULL, 0);
    const char *texts[] = {"Once upon a time, there was a little girl.", "  two  spaces\tand tab",
                           "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"};
    for (size_t i = 0; i < 3; i++) {
        uint32_t x[256], y[256];
        int nx = engine_tokenize(g, texts[i], true, x, 256);
        int ny = engine_tokenize(b, texts[i], true, y, 256);
        assert_int_equal(nx, ny);
        assert_memory_equal(x, y, (size_t)nx * sizeof(*x));
    }
    /* and decodes the same text */
    engine_request_t r;
    greedy(&r, "The bird said", 16);
    res_t rg, rb;
    run(g, &r, &rg);
    run(b, &r, &rb);
    assert_int_equal(rg.tlen, rb.tlen);
    assert_memory_equal(rg.text, rb.text, rb.tlen);
    engine_request_init(&r);
    static const engine_chat_msg_t hi[] = {{"user", "Hi"}}; /* the markers are byte tokens here */
    r.messages = hi;
    r.n_messages = 1;
    r.max_tokens = 2;
    run(g, &r, &rg);
    assert_int_equal(rg.done, 1);
    engine_free(g);
    engine_free(b);
    /* a vocabulary of another size than the model's is a start-up error naming both */
    write_vocab_gguf(path, NULL, 1, -1, NULL);
    assert_int_equal(engine_new(&g, &cfg, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "511 tokens but the model's vocabulary is 512"));
    unlink(path);
}

/* A token named <|im_end|> ends generation even though it is not the EOS id: the token the
 * tiny model produces first is renamed so in a GGUF copy of its vocabulary. */
static void test_eog_by_name(void **state)
{
    (void)state;
    engine_t *b = mk(NULL, 0);
    engine_request_t r;
    greedy(&r, "Lily", 4);
    res_t base;
    run(b, &r, &base);
    assert_true(base.ntok >= 1);
    uint32_t ids[64], first = base.first_id;
    /* a prompt that already holds that token would change too: nothing to test then */
    int np = engine_tokenize(b, "Lily", true, ids, 64);
    assert_true(np > 0);
    for (int i = 0; i < np; i++)
        if (ids[i] == first) skip();
    engine_free(b);
    char path[] = "/tmp/inferd-test-eog-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_vocab_gguf(path, NULL, 0, (int)first, "<|im_end|>");
    engine_config_t cfg;
    engine_config_init(&cfg);
    cfg.model_path = TINY_MODEL;
    cfg.tokenizer_path = path;
    cfg.threads = 2;
    char err[512];
    engine_t *g = NULL;
    assert_int_equal(engine_new(&g, &cfg, err, sizeof err), 0);
    engine_model_info_t mi;
    engine_model_info(g, &mi);
    bool listed = false;
    for (uint32_t i = 0; i < mi.n_eog; i++)
        listed |= mi.eog_ids[i] == first;
    assert_true(listed);
    assert_int_equal(mi.eot_id, (int32_t)first);
    r.ignore_eos = false;
    res_t e;
    run(g, &r, &e);
    assert_int_equal(e.done, 1);
    assert_int_equal(e.fin, ENGINE_FINISH_EOS);
    assert_int_equal(e.ntok, 0);
    /* ignore_eos lets it through */
    r.ignore_eos = true;
    run(g, &r, &e);
    assert_int_equal(e.fin, ENGINE_FINISH_LENGTH);
    engine_free(g);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stop_strings), cmocka_unit_test(test_messages),
        cmocka_unit_test(test_deferred),     cmocka_unit_test(test_gguf_vocabulary),
        cmocka_unit_test(test_eog_by_name),  cmocka_unit_test(test_tokenize_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
