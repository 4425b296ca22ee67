/* Chat templates: detection as llama.cpp's llm_chat_detect_template, rendering of the formats
 * llama.cpp's own test file has no case for (zephyr, llama2-sys), and the errors. The other
 * formats are checked against llama.cpp's expected outputs by engine_tok_reference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const chat_msg_t conv[] = {
    {"system", "S"}, {"user", "U"}, {"assistant", "A"}, {"user", "U2"}};

static void render_is(const char *name, size_t n, const char *want)
{
    char *out, err[256];
    assert_int_equal(chat_render(name, conv, n, true, &out, err, sizeof err), 0);
    assert_string_equal(out, want);
    free(out);
}

static void test_detect(void **state)
{
    (void)state;
    assert_null(chat_detect(NULL));
    assert_null(chat_detect(""));
    assert_null(chat_detect("{{ messages }} plain"));
    assert_string_equal(chat_detect("llama3"), "llama3"); /* a name is its own template */
    assert_string_equal(chat_detect("zephyr"), "zephyr");
    assert_string_equal(chat_detect("{{'<|im_start|>' + role}}"), "chatml");
    assert_string_equal(chat_detect("<|im_start|>x<|im_sep|>"), "phi4");
    assert_string_equal(chat_detect("<|start_header_id|>{{r}}<|end_header_id|>"), "llama3");
    assert_string_equal(chat_detect("[INST] {{ x }} [/INST]"), "llama2");
    assert_string_equal(chat_detect("[INST] <<SYS>> [/INST]"), "llama2-sys");
    assert_string_equal(chat_detect("bos_token + '[INST] <<SYS>>"), "llama2-sys-bos");
    assert_string_equal(chat_detect("[INST] content.strip()"), "llama2-sys-strip");
    assert_string_equal(chat_detect("[INST][SYSTEM_PROMPT]"), "mistral-v7");
    assert_string_equal(chat_detect("<|user|>\n<|end|><|assistant|>"), "phi3");
    assert_string_equal(chat_detect("<|user|>{{x}}<|endoftext|>"), "zephyr");
    assert_string_equal(chat_detect("<start_of_turn>user"), "gemma");
    /* recognized, but not a format inferd renders */
    assert_string_equal(chat_detect("### Instruction: <|EOT|>"), "deepseek");
    assert_false(chat_supported("deepseek"));
    assert_true(chat_supported("gemma"));
    assert_false(chat_supported(NULL));
}

static void test_render(void **state)
{
    (void)state;
    render_is(
        "zephyr", 4,
        "<|system|>\nS<|endoftext|>\n<|user|>\nU<|endoftext|>\n<|assistant|>\nA<|endoftext|>\n"
        "<|user|>\nU2<|endoftext|>\n<|assistant|>\n");
    render_is("llama2-sys", 4, "[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]A</s>[INST] U2 [/INST]");
    render_is("mistral-v7-tekken", 4,
              "[SYSTEM_PROMPT]S[/SYSTEM_PROMPT][INST]U[/INST]A</s>[INST]U2[/INST]");
    render_is("llama3", 0, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    render_is("gemma", 2, "<start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\n");
    char *out, err[256];
    chat_msg_t bad[] = {{"user", NULL}};
    assert_int_equal(chat_render("chatml", bad, 1, true, &out, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "message 0"));
    assert_null(out);
    assert_int_equal(chat_render("deepseek", conv, 1, true, &out, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "'deepseek' is not one inferd renders"));
    assert_non_null(strstr(err, "llama3"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
