/* Renders the full inferd metric set (with samples in every labelled family, tricky label
 * values included) to stdout, for `promtool check metrics`.
 * Usage: metrics_dump [prefix] [accept] */
#include <stdio.h>
#include <stdlib.h>

#include "inferd_metrics.h"
#include "metrics.h"

int main(int argc, char **argv)
{
    const char *prefix = argc > 1 ? argv[1] : "inferd_";
    const char *accept = argc > 2 ? argv[2] : NULL;
    metrics_registry_t *r;
    char why[200];
    if (metrics_registry_new(&r, prefix, why, sizeof why)) {
        fprintf(stderr, "%s\n", why);
        return 2;
    }
    inferd_metrics_t m;
    if (inferd_metrics_init(&m, r) != 0) {
        fprintf(stderr, "inferd_metrics_init failed\n");
        return 1;
    }
    const char *const g[] = {"inferd.v1.Inference", "Generate", INFERD_GRPC_SERVER_STREAM, NULL};
    const char *const gh[] = {"grpc.health.v1.Health", "Check", INFERD_GRPC_UNARY, NULL};
    const char *const codes[] = {"OK", "DEADLINE_EXCEEDED", "UNAVAILABLE"};
    for (int i = 0; i < 3; i++) {
        const char *const h[] = {g[0], g[1], g[2], codes[i]};
        metrics_add(metrics_series(m.grpc_handled, h), 10 + i);
    }
    const char *const hh[] = {gh[0], gh[1], gh[2], "OK"};
    metrics_inc(metrics_series(m.grpc_handled, hh));
    metrics_add(metrics_series(m.grpc_started, g), 13);
    metrics_inc(metrics_series(m.grpc_started, gh));
    metrics_add(metrics_series(m.grpc_msg_received, g), 13);
    metrics_add(metrics_series(m.grpc_msg_sent, g), 1300);
    metrics_observe(metrics_series(m.grpc_handling, g), 1.25);
    metrics_observe(metrics_series(m.grpc_handling, gh), 0.00004);

    const char *const mb[] = {"tiny \"quoted\" \\ model\nname", "cpu"};
    metrics_set(metrics_series(m.inflight, mb), 2);
    metrics_set(metrics_series(m.queued, mb), 1);
    static const char *const apis[] = {"grpc", "openai"};
    for (int a = 0; a < 2; a++) {
        const char *const mba[] = {mb[0], mb[1], apis[a]};
        const char *const ma[] = {mb[0], apis[a]};
        const char *const ok[] = {mb[0], mb[1], apis[a], INFERD_STATUS_SUCCESS, ""};
        const char *const err[] = {mb[0], mb[1], apis[a], INFERD_STATUS_ERROR, "deadline_exceeded"};
        metrics_add(metrics_series(m.requests, ok), 12);
        metrics_inc(metrics_series(m.requests, err));
        metrics_observe(metrics_series(m.request_duration, mba), 3.5);
        metrics_observe(metrics_series(m.ttft, mba), 0.12);
        metrics_observe(metrics_series(m.itl, mba), 0.015);
        metrics_observe(metrics_series(m.input_tokens, mba), 37);
        metrics_observe(metrics_series(m.output_tokens, mba), 256);
        metrics_add(metrics_series(m.output_tokens_total, mba), 3072);
        metrics_add(metrics_series(m.request_bytes, ma), 4096);
        metrics_add(metrics_series(m.response_bytes, ma), 65536);
    }

    const char *const ep[] = {"generate"};
    const char *const ep_ok[] = {"generate", "success"};
    const char *const ep_fail[] = {"generate", "timeout"};
    metrics_set(metrics_series(m.health_status, ep), 1);
    metrics_add(metrics_series(m.health_canary, ep_ok), 5);
    metrics_inc(metrics_series(m.health_canary, ep_fail));
    metrics_observe(metrics_series(m.health_canary_duration, ep), 0.02);

    metrics_set(m.connections_active_s, 3);
    metrics_add(m.connections_total_s, 41);
    metrics_set(m.http2_streams_active_s, 5);
    metrics_inc(m.log_lines_dropped_s);

    char *out;
    size_t len;
    if (metrics_render(r, accept, &out, &len, NULL) != 0) return 1;
    fwrite(out, 1, len, stdout);
    free(out);
    metrics_registry_free(r);
    return 0;
}
