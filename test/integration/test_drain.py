#!/usr/bin/python3
"""Graceful shutdown: SIGTERM/SIGINT -> NOT_SERVING at once (Watchers hear it),
after --shutdown-delay GOAWAY(2^31-1)+PING, then the final GOAWAY, in-flight
streams finish (up to --drain-timeout), exit 0.

The harness waits for readiness (engine warmed up) before the signal, so the
SERVING -> NOT_SERVING transition is observable. liveness may stay SERVING
through the drain (it flips only at the very end, DESIGN.md) but its Watchers
must hear NOT_SERVING before their stream ends.

In-flight streams are pluggable: each entry of INFLIGHT opens one stream before
the signal (start), may act once the final GOAWAY is out (after_final_goaway),
and checks its outcome after the process exited (verify). A Generate is kept in
flight across the signal by a stalled reader (a 64-byte stream window, no
WINDOW_UPDATE) and released during the drain: it must complete with OK and
every token.
"""

import signal
import threading
import time
import unittest

import grpc
import h2.events

import inferd_harness as H

MAX_STREAM_ID = 2 ** 31 - 1


class GrpcioWatch:
    """A Watch on one service from grpcio in a thread, recording (t, status) and the end."""

    def __init__(self, target, service):
        self.ch = H.grpc_channel(target)
        self.call = H.server_stream(self.ch, H.WATCH)(H.health_request(service), timeout=60)
        self.msgs = []          # [(monotonic time, status)]
        self.end = None         # (monotonic time, grpc.StatusCode, details)
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        try:
            for m in self.call:
                self.msgs.append((time.monotonic(), H.health_status(m)))
            self.end = (time.monotonic(), grpc.StatusCode.OK, "")
        except grpc.RpcError as e:
            self.end = (time.monotonic(), e.code(), e.details())

    def wait_first(self, timeout=5):
        deadline = time.monotonic() + timeout
        while not self.msgs and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.msgs[0][1] if self.msgs else None

    def close(self):
        self.call.cancel()
        self.th.join(5)
        self.ch.close()


class InflightWatch:
    """In-flight stream: a Health/Watch of one service (grpcio) that is SERVING before the signal.
    at_once: the NOT_SERVING must arrive before the shutdown delay ends."""

    SERVICE = "readiness"
    AT_ONCE = True

    def __init__(self, server):
        self.w = GrpcioWatch(server.target, self.SERVICE)
        first = self.w.wait_first()
        assert first == H.SERVING, "Watch(%s) first status %r" % (self.SERVICE, first)

    def verify(self, tc, t_signal, delay, drain):
        w = self.w
        w.th.join(delay + drain + 10)
        statuses = [s for _, s in w.msgs]
        tc.assertIn(H.NOT_SERVING, statuses, "Watch(%s) never heard NOT_SERVING: %r" % (self.SERVICE, w.msgs))
        t_ns = next(t for t, s in w.msgs if s == H.NOT_SERVING)
        if self.AT_ONCE:
            tc.assertLess(t_ns - t_signal, min(1.0, delay * 0.8),
                          "Watch(%s): NOT_SERVING came late (after the shutdown delay?)" % self.SERVICE)
        tc.assertIsNotNone(w.end, "Watch(%s) did not end" % self.SERVICE)
        tc.assertGreater(w.end[0] - t_signal, delay * 0.9, "Watch(%s) ended before the shutdown delay: %r"
                         % (self.SERVICE, w.end,))
        return w.end

    def close(self):
        self.w.close()


class InflightWatchOverall(InflightWatch):
    SERVICE = ""


class InflightWatchLiveness(InflightWatch):
    SERVICE = "liveness"
    AT_ONCE = False


class InflightGenerate:
    """A Generate whose reader stalls (tiny stream window) until the final GOAWAY, then drains it."""

    # Enough to stall on the 64-byte window, few enough to finish within DRAIN even on a loaded
    # sanitizer build (200 tokens did not, when the suite ran this beside the inference tests).
    MAX_TOKENS = 48

    def __init__(self, server):
        import h2.settings
        self.c = H.H2Conn(server.grpc_port, auto_ack=False,
                          settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 64})
        self.c.wait_for(lambda: any(isinstance(e, h2.events.SettingsAcknowledged) for e in self.c.events), 5,
                        "SETTINGS ack")
        self.sid = self.c.request(H.GENERATE, H.grpc_frame(H.generate_request(
            prompt="hello", max_tokens=self.MAX_TOKENS, ignore_eos=True, request_id="drain-gen")))
        self.c.wait_for(lambda: len(self.c.streams[self.sid]["data"]) > 5, 10, "first Generate bytes")
        st = self.c.streams[self.sid]
        assert not st["ended"] and st["reset"] is None, "Generate ended before the signal: %r" % st

    def after_final_goaway(self):
        st = self.c.streams[self.sid]
        assert not st["ended"] and st["reset"] is None, "Generate ended before the drain: %r" % st
        self.c.release()
        self.c.wait_for(lambda: st["ended"] or st["reset"] is not None, 10, "Generate completed in the drain")

    def verify(self, tc, t_signal, delay, drain):
        st = self.c.streams[self.sid]
        tc.assertTrue(st["ended"], "Generate did not complete: %r" % {k: st[k] for k in ("headers", "trailers", "reset")})
        tc.assertEqual(H.grpc_status_of(st), 0, "Generate status: %r" % st["trailers"])
        msgs = [H.generate_response(m) for _, m in H.grpc_unframe(st["data"])]
        tokens = sum(len(m["token_ids"]) for m in msgs)
        tc.assertEqual(tokens, self.MAX_TOKENS)
        tc.assertEqual(msgs[-1]["finish_reason"], H.FINISH_LENGTH, msgs[-1])
        tc.assertEqual(msgs[-1]["usage"][1], self.MAX_TOKENS, msgs[-1])
        return (time.monotonic(), grpc.StatusCode.OK, "")

    def close(self):
        self.c.close()


INFLIGHT = [InflightWatch, InflightWatchOverall, InflightWatchLiveness, InflightGenerate]


class DrainTest(unittest.TestCase):
    DELAY = 1.0
    DRAIN = 2.0

    def start(self, *args):
        s0 = H.Inferd("--shutdown-delay", "%gs" % self.DELAY, "--drain-timeout", "%gs" % self.DRAIN, *args)
        self.addCleanup(s0.kill)
        return s0

    def test_sigterm_drain(self):
        s0 = self.start()
        inflight = [cls(s0) for cls in INFLIGHT]
        for f in inflight:
            self.addCleanup(f.close)
        # the same kind of stream on a raw connection, to see frames and how it ends
        c = H.H2Conn(s0.grpc_port)
        self.addCleanup(c.close)
        sid = c.request(H.WATCH, H.grpc_frame(H.health_request("inferd.v1.Inference")))
        c.wait_for(lambda: len(c.streams[sid]["data"]) >= 5, 5, "raw Watch first message")
        (_, m0), = H.grpc_unframe(c.streams[sid]["data"])
        self.assertEqual(H.health_status(m0), H.SERVING)

        t_sig = time.monotonic()
        s0.signal(signal.SIGTERM)

        # during the delay: still serving requests, health says NOT_SERVING for everything
        time.sleep(min(0.3, self.DELAY / 3))
        c2 = H.H2Conn(s0.grpc_port)
        self.addCleanup(c2.close)
        for svc in ("", "readiness", "inferd.v1.Inference"):
            sid2 = c2.request(H.CHECK, H.grpc_frame(H.health_request(svc)))
            st2 = c2.wait_done(sid2, 3)
            self.assertEqual(H.grpc_status_of(st2), 0, "Check(%r) during the shutdown delay: %r" % (svc, st2))
            (_, m), = H.grpc_unframe(st2["data"])
            self.assertEqual(H.STATUS_NAMES[H.health_status(m)], "NOT_SERVING", "Check(%r)" % svc)
        # the raw Watch heard it too
        c.wait_for(lambda: len(H.grpc_unframe(c.streams[sid]["data"])) >= 2, 1, "raw Watch NOT_SERVING")
        self.assertEqual(H.health_status(H.grpc_unframe(c.streams[sid]["data"])[1][1]), H.NOT_SERVING)
        self.assertEqual(c.goaways(), [], "GOAWAY before --shutdown-delay")

        # GOAWAY(2^31-1) + PING, then the final GOAWAY naming our stream
        c.wait_for(lambda: len(c.goaways()) >= 1, self.DELAY + 3, "first GOAWAY")
        t_goaway = time.monotonic()
        self.assertGreater(t_goaway - t_sig, self.DELAY * 0.8, "first GOAWAY before the delay")
        g1 = c.goaways()[0]
        self.assertEqual(g1.last_stream_id, MAX_STREAM_ID, "first GOAWAY: %r" % g1)
        self.assertEqual(g1.error_code, 0)
        c.wait_for(lambda: any(isinstance(e, h2.events.PingReceived) for e in c.events), 3, "PING after GOAWAY")
        c.wait_for(lambda: len(c.goaways()) >= 2, 3, "final GOAWAY")
        g2 = c.goaways()[1]
        self.assertEqual(g2.error_code, 0)
        self.assertGreaterEqual(g2.last_stream_id, sid)
        self.assertLess(g2.last_stream_id, MAX_STREAM_ID)

        for f in inflight:
            if hasattr(f, "after_final_goaway"):
                f.after_final_goaway()

        # a new stream after the final GOAWAY is refused (ignored or RST REFUSED_STREAM)
        late = c.request(H.CHECK, H.grpc_frame(H.health_request("liveness")))
        self.assertGreater(late, g2.last_stream_id)

        # the raw Watch is ended by the server with trailers, not a reset or a dropped connection
        c.wait_for(lambda: c.streams[sid]["ended"] or c.streams[sid]["reset"] is not None, self.DRAIN + 3,
                   "raw Watch ended at the end of the drain")
        st = c.streams[sid]
        self.assertIsNotNone(H.grpc_status_of(st), "Watch ended without grpc-status (reset or dropped): %r" % st)
        self.assertIn(H.grpc_status_of(st), (0, 1, 14), "unexpected status %r" % st)
        lst = c.streams[late]
        self.assertFalse(lst["headers"] and H.grpc_status_of(lst) == 0,
                         "stream opened after the final GOAWAY was served: %r" % lst)

        # exit 0 within delay + drain (+ slack for the sanitizer build)
        rc = s0.wait(self.DELAY + self.DRAIN + 10)
        self.assertIsNotNone(rc, "inferd still running %gs after SIGTERM" % (time.monotonic() - t_sig))
        took = time.monotonic() - t_sig
        self.assertEqual(rc, 0, s0.stderr()[-4000:])
        self.assertLess(took, self.DELAY + self.DRAIN + 5)
        for f in inflight:
            with self.subTest(inflight=type(f).__name__):
                end = f.verify(self, t_sig, self.DELAY, self.DRAIN)
                self.assertIn(end[1], (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED,
                                       grpc.StatusCode.UNAVAILABLE), end)
        err = s0.stderr()
        self.assertFalse([m for m in H.SANITIZER_MARKERS if m in err], err[-4000:])

    def test_sigint_without_streams_exits_promptly(self):
        # nothing in flight: after the delay the server need not wait for the drain timeout
        s0 = H.Inferd("--shutdown-delay", "200ms", "--drain-timeout", "20s")
        self.addCleanup(s0.kill)
        c = H.H2Conn(s0.grpc_port)        # an idle connection must not hold the drain
        self.addCleanup(c.close)
        c.wait_settings()
        t0 = time.monotonic()
        s0.signal(signal.SIGINT)
        rc = s0.wait(15)
        self.assertEqual(rc, 0, s0.stderr()[-4000:])
        self.assertLess(time.monotonic() - t0, 5.0, "idle server waited for the drain timeout")
        c.wait_for(lambda: c.goaways() or c.closed, 3, "GOAWAY or close on the idle connection")

    def test_unary_during_drain_completes(self):
        # a unary call that starts during the shutdown delay on an existing connection completes
        s0 = self.start()
        ch = H.grpc_channel(s0.target)
        self.addCleanup(ch.close)
        chk = H.unary(ch, H.CHECK)
        self.assertEqual(H.health_status(chk(H.health_request("readiness"), timeout=5)), H.SERVING)
        s0.signal(signal.SIGTERM)
        time.sleep(0.1)
        self.assertEqual(H.health_status(chk(H.health_request("readiness"), timeout=5)), H.NOT_SERVING)
        self.assertEqual(s0.wait(self.DELAY + self.DRAIN + 10), 0, s0.stderr()[-4000:])

    def test_http_during_delay(self):
        s0 = self.start()
        s0.signal(signal.SIGTERM)
        time.sleep(0.2)
        rc, out, err = H.curl("-o", "-", "-w", "\n%{http_code}", "http://%s/health" % s0.target)
        body, _, code = out.rpartition(b"\n")
        self.assertEqual(code, b"503")
        self.assertIn(b"shutting_down", body)
        self.assertEqual(s0.wait(self.DELAY + self.DRAIN + 10), 0, s0.stderr()[-4000:])


if __name__ == "__main__":
    H.run_main()
