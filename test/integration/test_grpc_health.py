#!/usr/bin/python3
"""grpc.health.v1 and the gRPC layer, seen from grpcio (python3-grpcio) and a raw h2 client."""

import gzip
import time

import grpc

import inferd_harness as H


class HealthTest(H.ServerTestCase):
    ARGS = ("--max-recv-message-size", "1024")

    def setUp(self):
        self.ch = H.grpc_channel(self.server.target)
        self.addCleanup(self.ch.close)
        self.check = H.unary(self.ch, H.CHECK)
        self.watch = H.server_stream(self.ch, H.WATCH)

    # ---- Check
    def test_check_services(self):
        for svc, want in H.SERVICES_READY.items():
            with self.subTest(service=svc):
                resp = self.check(H.health_request(svc), timeout=5)
                self.assertEqual(H.STATUS_NAMES[H.health_status(resp)], H.STATUS_NAMES[want])

    def test_check_unknown_service_not_found(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.check(H.health_request("no.such.Service"), timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_check_on_system_port(self):
        ch = H.grpc_channel(self.server.system_target)
        self.addCleanup(ch.close)
        resp = H.unary(ch, H.CHECK)(H.health_request("liveness"), timeout=5)
        self.assertEqual(H.health_status(resp), H.SERVING)

    def test_check_many_on_one_channel(self):
        # serial and concurrent unary calls on one HTTP/2 connection
        for _ in range(50):
            self.assertEqual(H.health_status(self.check(H.health_request("liveness"), timeout=5)), H.SERVING)
        futs = [self.check.future(H.health_request("liveness"), timeout=5) for _ in range(64)]
        for f in futs:
            self.assertEqual(H.health_status(f.result(timeout=10)), H.SERVING)

    # ---- List
    def test_list(self):
        resp = H.unary(self.ch, H.LIST)(b"", timeout=5)
        got = H.health_list(resp)
        self.assertEqual({k: H.STATUS_NAMES[v] for k, v in got.items()},
                         {k: H.STATUS_NAMES[v] for k, v in H.SERVICES_READY.items()})

    # ---- Watch
    def test_watch_initial_status(self):
        for svc, want in H.SERVICES_READY.items():
            with self.subTest(service=svc):
                call = self.watch(H.health_request(svc), timeout=5)
                first = next(call)
                self.assertEqual(H.STATUS_NAMES[H.health_status(first)], H.STATUS_NAMES[want])
                call.cancel()

    def test_watch_unknown_service_stays_open(self):
        t0 = time.monotonic()
        call = self.watch(H.health_request("no.such.Service"), timeout=1.5)
        first = next(call)
        self.assertEqual(H.STATUS_NAMES[H.health_status(first)], "SERVICE_UNKNOWN")
        # nothing more until our deadline: the stream stays open
        with self.assertRaises(grpc.RpcError) as cm:
            extra = next(call)
            self.fail("unexpected second message %r" % extra)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertGreater(time.monotonic() - t0, 1.2)

    def test_watch_deadline(self):
        t0 = time.monotonic()
        call = self.watch(H.health_request("liveness"), timeout=0.2)
        self.assertEqual(H.health_status(next(call)), H.SERVING)
        with self.assertRaises(grpc.RpcError) as cm:
            for _ in call:
                pass
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertLess(time.monotonic() - t0, 3.0)
        # the server is fine afterwards
        self.assertEqual(H.health_status(self.check(H.health_request("liveness"), timeout=5)), H.SERVING)

    def test_watch_deadline_server_side(self):
        # grpcio enforces deadlines itself; check that the *server* ends the call
        # (DEADLINE_EXCEEDED in its trailers) when only grpc-timeout tells it.
        c = H.H2Conn(self.server.grpc_port)
        self.addCleanup(c.close)
        t0 = time.monotonic()
        sid = c.request(H.WATCH, H.grpc_frame(H.health_request("liveness")), headers=[("grpc-timeout", "200m")])
        st = c.wait_done(sid, 5)
        took = time.monotonic() - t0
        self.assertEqual(H.grpc_status_of(st), 4, "stream: %r" % st)
        self.assertGreater(took, 0.15)
        self.assertLess(took, 2.0)

    def test_watch_client_cancel(self):
        call = self.watch(H.health_request("liveness"), timeout=10)
        self.assertEqual(H.health_status(next(call)), H.SERVING)
        call.cancel()
        with self.assertRaises(grpc.RpcError) as cm:
            next(call)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.CANCELLED)
        # raw: RST_STREAM(CANCEL) on a Watch, then the connection keeps working
        c = H.H2Conn(self.server.grpc_port)
        self.addCleanup(c.close)
        sid = c.request(H.WATCH, H.grpc_frame(H.health_request("liveness")))
        c.wait_for(lambda: len(c.streams[sid]["data"]) >= 5, 5, "first Watch message")
        c.reset(sid, 8)
        sid2 = c.request(H.CHECK, H.grpc_frame(H.health_request("liveness")))
        st = c.wait_done(sid2, 5)
        self.assertEqual(H.grpc_status_of(st), 0)
        c.pump(0.2)
        self.assertEqual(c.goaways(), [])

    def test_many_watchers(self):
        calls = [self.watch(H.health_request("liveness"), timeout=10) for _ in range(50)]
        for c in calls:
            self.assertEqual(H.health_status(next(c)), H.SERVING)
        for c in calls:
            c.cancel()

    # ---- errors of the gRPC layer
    def test_unknown_method_unimplemented(self):
        m = H.unary(self.ch, "/grpc.health.v1.Health/NoSuchMethod")
        with self.assertRaises(grpc.RpcError) as cm:
            m(b"", timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        m = H.unary(self.ch, "/no.such.Service/Method")
        with self.assertRaises(grpc.RpcError) as cm:
            m(b"", timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_unknown_method_trailers_only(self):
        c, st = H.h2_unary(self.server.grpc_port, "/no.such.Service/Method")
        self.assertEqual(st["headers"].get(":status"), "200")
        self.assertEqual(st["headers"].get("grpc-status"), "12", "Trailers-Only expected: %r" % st)
        self.assertIsNone(st["trailers"])
        self.assertEqual(st["data"], b"")

    def test_oversized_message_resource_exhausted(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.check(H.health_request("x" * 2000), timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        # just under the limit is a normal (unknown service) answer
        with self.assertRaises(grpc.RpcError) as cm:
            self.check(H.health_request("x" * 1000), timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_oversized_message_split_across_frames(self):
        # the limit holds when the length prefix arrives alone and the body in pieces
        c = H.H2Conn(self.server.grpc_port)
        self.addCleanup(c.close)
        sid = c.request(H.CHECK, end=False)
        frame = H.grpc_frame(H.health_request("y" * 5000))
        for i in range(0, len(frame), 700):
            c.send_data(sid, frame[i:i + 700])
            c.pump(0.01)
            if c.streams[sid]["ended"] or c.streams[sid]["reset"] is not None:
                break
        if not (c.streams[sid]["ended"] or c.streams[sid]["reset"] is not None):
            try:
                c.end_stream(sid)
            except Exception:
                pass
        st = c.wait_done(sid, 5)
        self.assertEqual(H.grpc_status_of(st), 8, "stream: %r" % st)

    def test_framing_across_data_frames(self):
        # one message split byte by byte over DATA frames
        c = H.H2Conn(self.server.grpc_port)
        self.addCleanup(c.close)
        sid = c.request(H.CHECK, end=False)
        frame = H.grpc_frame(H.health_request("liveness"))
        for i in range(len(frame)):
            c.send_data(sid, frame[i:i + 1])
        c.end_stream(sid)
        st = c.wait_done(sid, 5)
        self.assertEqual(H.grpc_status_of(st), 0, "stream: %r" % st)
        msgs = H.grpc_unframe(st["data"])
        self.assertEqual(len(msgs), 1)
        self.assertEqual(H.health_status(msgs[0][1]), H.SERVING)

    def test_unparseable_request_internal(self):
        # field 1, wire type 2, length 100 but only 1 byte follows
        c, st = H.h2_unary(self.server.grpc_port, H.CHECK, b"\x0a\x64x")
        self.assertEqual(H.grpc_status_of(st), 13, "stream: %r" % st)

    def test_two_messages_on_unary_unimplemented(self):
        body = H.grpc_frame(H.health_request("liveness")) * 2
        c, st = H.h2_unary(self.server.grpc_port, H.CHECK, body, frame=False)
        self.assertEqual(H.grpc_status_of(st), 12, "stream: %r" % st)

    def test_zero_messages_on_unary_unimplemented(self):
        c = H.H2Conn(self.server.grpc_port)
        self.addCleanup(c.close)
        sid = c.request(H.CHECK, b"", end=True)
        st = c.wait_done(sid, 5)
        self.assertEqual(H.grpc_status_of(st), 12, "stream: %r" % st)

    def test_trailers_on_ok(self):
        c, st = H.h2_unary(self.server.grpc_port, H.CHECK, H.health_request("liveness"))
        self.assertEqual(st["headers"].get(":status"), "200")
        self.assertTrue(st["headers"].get("content-type", "").startswith("application/grpc"))
        self.assertIsNotNone(st["trailers"], "OK must end with trailers: %r" % st)
        self.assertEqual(st["trailers"].get("grpc-status"), "0")

    def test_grpc_message_percent_encoded(self):
        # NOT_FOUND carries a message; whatever it says, it must be printable ASCII
        c, st = H.h2_unary(self.server.grpc_port, H.CHECK, H.health_request("caf\u00e9\n"))
        self.assertEqual(H.grpc_status_of(st), 5)
        hs = st["trailers"] or st["headers"]
        msg = hs.get("grpc-message", "")
        self.assertTrue(all(0x20 <= ord(ch) <= 0x7E for ch in msg), repr(msg))

    # ---- compression
    def test_gzip_channel_and_call(self):
        ch = H.grpc_channel(self.server.target, compression=grpc.Compression.Gzip)
        self.addCleanup(ch.close)
        chk = H.unary(ch, H.CHECK)
        resp = chk(H.health_request("liveness"), timeout=5, compression=grpc.Compression.Gzip)
        self.assertEqual(H.health_status(resp), H.SERVING)
        call = H.server_stream(ch, H.WATCH)(H.health_request("liveness"), timeout=5,
                                             compression=grpc.Compression.Gzip)
        self.assertEqual(H.health_status(next(call)), H.SERVING)
        call.cancel()
        # a compressed request that is over the limit only once decompressed
        with self.assertRaises(grpc.RpcError) as cm:
            chk(H.health_request("z" * 4000), timeout=5, compression=grpc.Compression.Gzip)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)

    def test_gzip_raw_both_directions(self):
        msg = gzip.compress(H.health_request("liveness"))
        c = H.H2Conn(self.server.grpc_port)
        self.addCleanup(c.close)
        sid = c.request(H.CHECK, H.grpc_frame(msg, compressed=True),
                        headers=[("grpc-encoding", "gzip"), ("grpc-accept-encoding", "identity,gzip")])
        st = c.wait_done(sid, 5)
        self.assertEqual(H.grpc_status_of(st), 0, "stream: %r" % st)
        (flag, body), = H.grpc_unframe(st["data"])
        enc = st["headers"].get("grpc-encoding", "identity")
        self.assertIn(enc, ("identity", "gzip"))
        if flag:
            self.assertEqual(enc, "gzip")
            body = gzip.decompress(body)
        self.assertEqual(H.health_status(body), H.SERVING)
        self.assertEqual(enc, "gzip", "server answered a gzip request (accepting gzip) uncompressed")

    def test_no_gzip_response_when_not_accepted(self):
        c = H.H2Conn(self.server.grpc_port)
        self.addCleanup(c.close)
        sid = c.request(H.CHECK, H.grpc_frame(gzip.compress(H.health_request("liveness")), compressed=True),
                        headers=[("grpc-encoding", "gzip"), ("grpc-accept-encoding", "identity")])
        st = c.wait_done(sid, 5)
        self.assertEqual(H.grpc_status_of(st), 0, "stream: %r" % st)
        (flag, body), = H.grpc_unframe(st["data"])
        self.assertEqual(flag, 0)
        self.assertEqual(H.health_status(body), H.SERVING)

    def test_unsupported_encoding_unimplemented(self):
        c = H.H2Conn(self.server.grpc_port)
        self.addCleanup(c.close)
        sid = c.request(H.CHECK, H.grpc_frame(b"\x0a\x01x", compressed=True), headers=[("grpc-encoding", "snappy")])
        st = c.wait_done(sid, 5)
        self.assertEqual(H.grpc_status_of(st), 12, "stream: %r" % st)
        hs = dict(st["headers"] or {})
        hs.update(st["trailers"] or {})
        self.assertIn("gzip", hs.get("grpc-accept-encoding", ""), "stream: %r" % st)

    def test_compressed_flag_without_encoding_internal(self):
        c, st = H.h2_unary(self.server.grpc_port, H.CHECK,
                           H.grpc_frame(H.health_request("liveness"), compressed=True), frame=False)
        self.assertEqual(H.grpc_status_of(st), 13, "stream: %r" % st)

    # ---- request validation
    def test_content_type_not_grpc_415(self):
        c = H.H2Conn(self.server.grpc_port)
        self.addCleanup(c.close)
        sid = c.request(H.CHECK, b"hello", content_type="text/plain")
        st = c.wait_done(sid, 5)
        self.assertEqual(st["headers"].get(":status"), "415", "stream: %r" % st)

    def test_grpc_get_rejected(self):
        # GET on a gRPC path is not a gRPC call
        c = H.H2Conn(self.server.grpc_port)
        self.addCleanup(c.close)
        sid = c.request(H.CHECK, method="GET")
        st = c.wait_done(sid, 5)
        ok = st["headers"] and (st["headers"].get(":status") != "200" or
                                (H.grpc_status_of(st) not in (None, 0)))
        self.assertTrue(ok, "GET /grpc... should not succeed: %r" % st)


if __name__ == "__main__":
    H.run_main()
