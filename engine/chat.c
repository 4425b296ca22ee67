/*
 * chat.c - chat templates: recognize a model's tokenizer.chat_template the way llama.cpp's
 * llm_chat_detect_template does (it looks for marker strings; it is not a Jinja engine), and
 * render messages with the same hand-written formats as llm_chat_apply_template, so a chat
 * request becomes the same text, and then the same ids, as in llama.cpp.
 */
#include "tokenizer.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Every name llama.cpp knows (so a name given as the template text is recognized), and
 * whether inferd renders it. */
static const struct {
    const char *name;
    bool rendered;
} names[] = {
    {"chatml", true},
    {"llama2", true},
    {"llama2-sys", true},
    {"llama2-sys-bos", true},
    {"llama2-sys-strip", true},
    {"mistral-v1", true},
    {"mistral-v3", true},
    {"mistral-v3-tekken", true},
    {"mistral-v7", true},
    {"mistral-v7-tekken", true},
    {"phi3", true},
    {"phi4", false},
    {"falcon3", false},
    {"zephyr", true},
    {"monarch", false},
    {"gemma", true},
    {"orion", false},
    {"openchat", false},
    {"vicuna", false},
    {"vicuna-orca", false},
    {"deepseek", false},
    {"deepseek2", false},
    {"deepseek3", false},
    {"command-r", false},
    {"llama3", true},
    {"chatglm3", false},
    {"chatglm4", false},
    {"glmedge", false},
    {"minicpm", false},
    {"exaone3", false},
    {"exaone4", false},
    {"rwkv-world", false},
    {"granite", false},
    {"gigachat", false},
    {"megrez", false},
    {"yandex", false},
    {"bailing", false},
    {"llama4", false},
    {"smolvlm", false},
    {"gpt-oss", false},
    {"kimi-k2", false},
    {"seed_oss", false},
};

bool chat_supported(const char *name)
{
    for (size_t i = 0; name && i < sizeof(names) / sizeof(*names); i++)
        if (!strcmp(name, names[i].name)) return names[i].rendered;
    return false;
}

const char *chat_supported_list(void)
{
    return "chatml, llama2, llama2-sys, llama2-sys-bos, llama2-sys-strip, mistral-v1, "
           "mistral-v3, mistral-v3-tekken, mistral-v7, mistral-v7-tekken, phi3, zephyr, gemma, "
           "llama3";
}

const char *chat_detect(const char *tmpl)
{
    if (!tmpl || !*tmpl) return NULL;
    for (size_t i = 0; i < sizeof(names) / sizeof(*names); i++)
        if (!strcmp(tmpl, names[i].name)) return names[i].name;
#define HAS(s) (strstr(tmpl, (s)) != NULL)
    /* the same tests in the same order as llm_chat_detect_template */
    if (HAS("<|im_start|>"))
        return HAS("<|im_sep|>") ? "phi4" : HAS("<end_of_utterance>") ? "smolvlm" : "chatml";
    if (!strncmp(tmpl, "mistral", 7) || HAS("[INST]")) {
        if (HAS("[SYSTEM_PROMPT]")) return "mistral-v7";
        if (HAS("' [INST] ' + system_message") || HAS("[AVAILABLE_TOOLS]")) {
            if (HAS(" [INST]")) return "mistral-v1";
            if (HAS("\"[INST]\"")) return "mistral-v3-tekken";
            return "mistral-v3";
        }
        if (HAS("content.strip()")) return "llama2-sys-strip";
        if (HAS("bos_token + '[INST]")) return "llama2-sys-bos";
        if (HAS("<<SYS>>")) return "llama2-sys";
        return "llama2";
    }
    if (HAS("<|assistant|>") && HAS("<|end|>")) return "phi3";
    if (HAS("[gMASK]<sop>")) return "chatglm4";
    if (HAS("<|assistant|>") && HAS("<|user|>")) return HAS("</s>") ? "falcon3" : "glmedge";
    if (HAS("<|{{ item['role'] }}|>") && HAS("<|begin_of_image|>")) return "glmedge";
    if (HAS("<|user|>") && HAS("<|endoftext|>")) return "zephyr";
    if (HAS("bos_token + message['role']")) return "monarch";
    if (HAS("<start_of_turn>")) return "gemma";
    if (HAS("'\\n\\nAssistant: ' + eos_token")) return "orion";
    if (HAS("GPT4 Correct ")) return "openchat";
    if (HAS("USER: ") && HAS("ASSISTANT: ")) return HAS("SYSTEM: ") ? "vicuna-orca" : "vicuna";
    if (HAS("### Instruction:") && HAS("<|EOT|>")) return "deepseek";
    if (HAS("<|START_OF_TURN_TOKEN|>") && HAS("<|USER_TOKEN|>")) return "command-r";
    if (HAS("<|start_header_id|>") && HAS("<|end_header_id|>")) return "llama3";
    return NULL;
#undef HAS
}

/* A growable string. */
typedef struct {
    char *s;
    size_t n, cap;
    int rc;
} sb_t;

static void sb_put(sb_t *b, const char *s, size_t n)
{
    if (b->rc) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1)
            nc *= 2;
        char *p = realloc(b->s, nc);
        if (!p) {
            b->rc = -ENOMEM;
            return;
        }
        b->s = p;
        b->cap = nc;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void sb_cat(sb_t *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* llama.cpp's trim(): ASCII isspace at both ends */
static void sb_trimmed(sb_t *b, const char *s)
{
    size_t a = 0, e = strlen(s);
    while (a < e && isspace((unsigned char)s[a]))
        a++;
    while (e > a && isspace((unsigned char)s[e - 1]))
        e--;
    sb_put(b, s + a, e - a);
}

int chat_render(const char *name, const chat_msg_t *msgs, size_t n, bool add_assistant, char **out,
                char *err, size_t errlen)
{
    *out = NULL;
    if (!chat_supported(name))
        return errorf(err, errlen, -EINVAL,
                      "chat template '%s' is not one inferd renders (supported: %s)",
                      name ? name : "(none)", chat_supported_list());
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return errorf(err, errlen, -EINVAL, "message %zu has no role or no content", i);
    sb_t b = {0};
    sb_put(&b, "", 0); /* an empty conversation renders as "" */
    if (!strcmp(name, "chatml")) {
        for (size_t i = 0; i < n; i++) {
            sb_cat(&b, "<|im_start|>");
            sb_cat(&b, msgs[i].role);
            sb_cat(&b, "\n");
            sb_cat(&b, msgs[i].content);
            sb_cat(&b, "<|im_end|>\n");
        }
        if (add_assistant) sb_cat(&b, "<|im_start|>assistant\n");
    } else if (!strncmp(name, "mistral-v7", 10)) {
        const char *sp = !strcmp(name, "mistral-v7") ? " " : "";
        for (size_t i = 0; i < n; i++) {
            const char *role = msgs[i].role;
            if (!strcmp(role, "system")) {
                sb_cat(&b, "[SYSTEM_PROMPT]");
                sb_cat(&b, sp);
                sb_cat(&b, msgs[i].content);
                sb_cat(&b, "[/SYSTEM_PROMPT]");
            } else if (!strcmp(role, "user")) {
                sb_cat(&b, "[INST]");
                sb_cat(&b, sp);
                sb_cat(&b, msgs[i].content);
                sb_cat(&b, "[/INST]");
            } else {
                sb_cat(&b, sp);
                sb_cat(&b, msgs[i].content);
                sb_cat(&b, "</s>");
            }
        }
    } else if (!strncmp(name, "mistral-v", 9)) { /* v1, v3, v3-tekken */
        const char *lead = !strcmp(name, "mistral-v1") ? " " : "";
        const char *trail = !strcmp(name, "mistral-v3-tekken") ? "" : " ";
        bool trim_assistant = !strcmp(name, "mistral-v3");
        bool inside = false;
        for (size_t i = 0; i < n; i++) {
            if (!inside) {
                sb_cat(&b, lead);
                sb_cat(&b, "[INST]");
                sb_cat(&b, trail);
                inside = true;
            }
            const char *role = msgs[i].role;
            if (!strcmp(role, "system")) {
                sb_cat(&b, msgs[i].content);
                sb_cat(&b, "\n\n");
            } else if (!strcmp(role, "user")) {
                sb_cat(&b, msgs[i].content);
                sb_cat(&b, lead);
                sb_cat(&b, "[/INST]");
            } else {
                sb_cat(&b, trail);
                if (trim_assistant)
                    sb_trimmed(&b, msgs[i].content);
                else
                    sb_cat(&b, msgs[i].content);
                sb_cat(&b, "</s>");
                inside = false;
            }
        }
    } else if (!strncmp(name, "llama2", 6)) {
        bool sys = strcmp(name, "llama2") != 0;
        bool bos_inside = !strcmp(name, "llama2-sys-bos");
        bool strip = !strcmp(name, "llama2-sys-strip");
        bool inside = true; /* the first [INST] comes without BOS: the tokenizer adds it */
        sb_cat(&b, "[INST] ");
        for (size_t i = 0; i < n; i++) {
            const char *role = msgs[i].role;
            if (!inside) {
                inside = true;
                sb_cat(&b, bos_inside ? "<s>[INST] " : "[INST] ");
            }
            sb_t c = {0};
            if (strip)
                sb_trimmed(&c, msgs[i].content);
            else
                sb_cat(&c, msgs[i].content);
            sb_put(&c, "", 0);
            if (c.rc) {
                b.rc = c.rc;
                break;
            }
            if (!strcmp(role, "system")) {
                if (sys) {
                    sb_cat(&b, "<<SYS>>\n");
                    sb_cat(&b, c.s);
                    sb_cat(&b, "\n<</SYS>>\n\n");
                } else {
                    sb_cat(&b, c.s);
                    sb_cat(&b, "\n");
                }
            } else if (!strcmp(role, "user")) {
                sb_cat(&b, c.s);
                sb_cat(&b, " [/INST]");
            } else {
                sb_cat(&b, c.s);
                sb_cat(&b, "</s>");
                inside = false;
            }
            free(c.s);
        }
    } else if (!strcmp(name, "phi3")) {
        for (size_t i = 0; i < n; i++) {
            sb_cat(&b, "<|");
            sb_cat(&b, msgs[i].role);
            sb_cat(&b, "|>\n");
            sb_cat(&b, msgs[i].content);
            sb_cat(&b, "<|end|>\n");
        }
        if (add_assistant) sb_cat(&b, "<|assistant|>\n");
    } else if (!strcmp(name, "zephyr")) {
        for (size_t i = 0; i < n; i++) {
            sb_cat(&b, "<|");
            sb_cat(&b, msgs[i].role);
            sb_cat(&b, "|>\n");
            sb_cat(&b, msgs[i].content);
            sb_cat(&b, "<|endoftext|>\n");
        }
        if (add_assistant) sb_cat(&b, "<|assistant|>\n");
    } else if (!strcmp(name, "gemma")) {
        /* no system role: its text joins the next user turn */
        sb_t sys = {0};
        for (size_t i = 0; i < n; i++) {
            const char *role = msgs[i].role;
            if (!strcmp(role, "system")) {
                sb_trimmed(&sys, msgs[i].content);
                continue;
            }
            bool model = !strcmp(role, "assistant");
            sb_cat(&b, "<start_of_turn>");
            sb_cat(&b, model ? "model" : role);
            sb_cat(&b, "\n");
            if (sys.n && !model) {
                sb_put(&b, sys.s, sys.n);
                sb_cat(&b, "\n\n");
                sys.n = 0;
            }
            sb_trimmed(&b, msgs[i].content);
            sb_cat(&b, "<end_of_turn>\n");
        }
        if (sys.rc) b.rc = sys.rc;
        free(sys.s);
        if (add_assistant) sb_cat(&b, "<start_of_turn>model\n");
    } else if (!strcmp(name, "llama3")) {
        for (size_t i = 0; i < n; i++) {
            sb_cat(&b, "<|start_header_id|>");
            sb_cat(&b, msgs[i].role);
            sb_cat(&b, "<|end_header_id|>\n\n");
            sb_trimmed(&b, msgs[i].content);
            sb_cat(&b, "<|eot_id|>");
        }
        if (add_assistant) sb_cat(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    }
    if (b.rc) {
        free(b.s);
        return errorf(err, errlen, -ENOMEM, "out of memory rendering the chat");
    }
    *out = b.s;
    return 0;
}
