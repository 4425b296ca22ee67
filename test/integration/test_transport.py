#!/usr/bin/python3
"""Transport: HTTP/2 settings, keepalive enforcement, handshake/idle timeouts,
listeners and start-up errors. Raw sockets and python3-h2."""

import socket
import subprocess
import time
import unittest

import inferd_harness as H

ENHANCE_YOUR_CALM = 0xB
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6
REFUSED_STREAM = 0x7


class SettingsTest(H.ServerTestCase):
    ARGS = ("--max-concurrent-streams", "7", "--max-header-list-size", "8192")

    def test_settings_advertised(self):
        c = H.H2Conn(self.server.grpc_port)
        self.addCleanup(c.close)
        s = c.wait_settings()
        self.assertEqual(s.get(SETTINGS_MAX_CONCURRENT_STREAMS), 7, "server SETTINGS: %r" % s)
        self.assertEqual(s.get(SETTINGS_MAX_HEADER_LIST_SIZE), 8192, "server SETTINGS: %r" % s)

    def test_concurrent_streams_enforced(self):
        c = H.H2Conn(self.server.grpc_port)
        self.addCleanup(c.close)
        c.wait_settings()
        # h2 itself refuses to open more than the peer allows; lift its guard to test the server
        c.conn.remote_settings._settings[SETTINGS_MAX_CONCURRENT_STREAMS] = [1000]
        sids = [c.request(H.WATCH, H.grpc_frame(H.health_request("liveness"))) for _ in range(8)]
        last = sids[-1]
        c.wait_for(lambda: c.streams[last]["reset"] is not None or c.goaways(), 5, "8th stream refused")
        if c.goaways():
            # nghttp2's own check: exceeding an acknowledged limit is a connection
            # error (RFC 9113 5.1.2 allows PROTOCOL_ERROR); the 7 streams before stand
            g = c.goaways()[0]
            self.assertEqual(g.error_code, 1, g)
            self.assertEqual(g.last_stream_id, sids[6], g)
        else:
            self.assertEqual(c.streams[last]["reset"], REFUSED_STREAM)
            for sid in sids[:7]:
                c.wait_for(lambda sid=sid: len(c.streams[sid]["data"]) >= 5, 5, "Watch %d answered" % sid)

    def test_header_list_too_large(self):
        c = H.H2Conn(self.server.grpc_port)
        self.addCleanup(c.close)
        c.wait_settings()
        sid = c.request(H.CHECK, H.grpc_frame(H.health_request("liveness")),
                        headers=[("x-big-%d" % i, "v" * 1000) for i in range(12)])
        c.wait_for(lambda: c.streams[sid]["ended"] or c.streams[sid]["reset"] is not None
                   or c.goaways() or c.closed, 5, "oversized header list refused")
        st = c.streams[sid]
        self.assertFalse(st["headers"] and st["headers"].get(":status") == "200"
                         and H.grpc_status_of(st) == 0, "oversized headers accepted: %r" % st)
        # and the server stays up
        c2, st2 = H.h2_unary(self.server.grpc_port, H.CHECK, H.health_request("liveness"))
        self.assertEqual(H.grpc_status_of(st2), 0)

    def test_garbage_preface_closed(self):
        s = socket.create_connection(("127.0.0.1", self.server.grpc_port), timeout=5)
        self.addCleanup(s.close)
        s.sendall(b"XYZZY garbage that is no protocol\r\n\r\n")
        closed, took, got = H.recv_until_closed(s, 5)
        self.assertTrue(closed, "server kept a garbage connection open")


class KeepaliveTest(H.ServerTestCase):
    # gRPC core defaults: 5 min minimum between pings without data, 2 strikes
    ARGS = ()

    def test_too_many_pings_goaway(self):
        c = H.H2Conn(self.server.grpc_port)
        self.addCleanup(c.close)
        c.wait_settings()
        for i in range(6):
            if c.goaways() or c.closed:
                break
            c.ping(b"ping%04d" % i)
            c.pump(0.05)
        c.wait_for(lambda: c.goaways(), 5, "GOAWAY after too many pings")
        g = c.goaways()[0]
        self.assertEqual(g.error_code, ENHANCE_YOUR_CALM, "GOAWAY: %r" % g)
        self.assertEqual(g.additional_data, b"too_many_pings")
        closed, _, _ = H.recv_until_closed(c.sock, 5)
        self.assertTrue(closed, "connection not closed after GOAWAY")

    def test_ping_with_active_stream_ok(self):
        # pings while a stream is open and data flows are not abuse
        c = H.H2Conn(self.server.grpc_port)
        self.addCleanup(c.close)
        c.wait_settings()
        sid = c.request(H.CHECK, H.grpc_frame(H.health_request("liveness")))
        c.wait_done(sid, 5)
        c.ping(b"once0001")
        c.pump(0.3)
        self.assertEqual(c.goaways(), [])


class KeepalivePermitTest(H.ServerTestCase):
    ARGS = ("--keepalive-permit-without-calls", "--keepalive-min-time", "100ms")

    def test_pings_at_allowed_rate_acked(self):
        import h2.events
        c = H.H2Conn(self.server.grpc_port)
        self.addCleanup(c.close)
        c.wait_settings()
        for i in range(5):
            c.ping(b"okping%02d" % i)
            t_next = time.monotonic() + 0.3      # 3x the allowed minimum interval
            while time.monotonic() < t_next:
                c.pump(t_next - time.monotonic())
        c.pump(0.3)
        acks = [e for e in c.events if isinstance(e, h2.events.PingAckReceived)]
        self.assertEqual(len(acks), 5, "events: %r" % c.events)
        self.assertEqual(c.goaways(), [])


class TimeoutsTest(unittest.TestCase):
    def test_handshake_timeout_silent_client(self):
        s0 = H.Inferd("--handshake-timeout", "1s")
        self.addCleanup(s0.check_clean_exit)
        s = socket.create_connection(("127.0.0.1", s0.grpc_port), timeout=5)
        self.addCleanup(s.close)
        closed, took, got = H.recv_until_closed(s, 6)
        self.assertTrue(closed, "silent connection still open after 6s")
        self.assertGreater(took, 0.7)
        self.assertLess(took, 4.0)

    def test_handshake_timeout_partial_preface(self):
        s0 = H.Inferd("--handshake-timeout", "1s")
        self.addCleanup(s0.check_clean_exit)
        s = socket.create_connection(("127.0.0.1", s0.grpc_port), timeout=5)
        self.addCleanup(s.close)
        s.sendall(b"PRI * HTTP/2.0\r\n")   # a slowloris that never finishes the preface
        closed, took, _ = H.recv_until_closed(s, 6)
        self.assertTrue(closed, "half-preface connection still open after 6s")
        self.assertLess(took, 4.0)

    def test_handshake_timeout_system_port(self):
        # also on the system port
        s0 = H.Inferd("--handshake-timeout", "1s")
        self.addCleanup(s0.check_clean_exit)
        s = socket.create_connection(("127.0.0.1", s0.system_port), timeout=5)
        self.addCleanup(s.close)
        closed, took, _ = H.recv_until_closed(s, 6)
        self.assertTrue(closed)
        self.assertLess(took, 4.0)

    def test_idle_timeout_h2(self):
        s0 = H.Inferd("--idle-timeout", "1s", "--handshake-timeout", "10s")
        self.addCleanup(s0.check_clean_exit)
        c = H.H2Conn(s0.grpc_port)
        self.addCleanup(c.close)
        c.wait_settings()
        t0 = time.monotonic()
        c.wait_for(lambda: c.closed or c.goaways(), 6, "idle connection closed")
        self.assertLess(time.monotonic() - t0, 4.0)
        if c.goaways():
            self.assertEqual(c.goaways()[0].error_code, 0)

    def test_idle_timeout_not_while_streaming(self):
        # a connection with an open Watch is not idle
        s0 = H.Inferd("--idle-timeout", "1s")
        self.addCleanup(s0.check_clean_exit)
        c = H.H2Conn(s0.grpc_port)
        self.addCleanup(c.close)
        sid = c.request(H.WATCH, H.grpc_frame(H.health_request("liveness")))
        c.wait_for(lambda: len(c.streams[sid]["data"]) >= 5, 5, "Watch answered")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5:
            c.pump(0.2)
        self.assertFalse(c.closed, "connection with an active stream closed as idle")
        self.assertEqual([g for g in c.goaways() if g.error_code != 0 or g.last_stream_id < sid], [])

    def test_idle_timeout_http1(self):
        s0 = H.Inferd("--idle-timeout", "1s", "--handshake-timeout", "10s")
        self.addCleanup(s0.check_clean_exit)
        s = H.http1_socket(s0.grpc_port)
        self.addCleanup(s.close)
        s.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = H.http1_read_response(s)
        self.assertEqual(status, 200)
        closed, took, _ = H.recv_until_closed(s, 6)
        self.assertTrue(closed, "idle keep-alive connection not closed")
        self.assertLess(took, 4.0)


class ListenersTest(unittest.TestCase):
    def test_port_zero_logged(self):
        s0 = H.Inferd("--listen", "127.0.0.1:0", "--system-port", "0", grpc_port=0, system_port=0, wait=False)
        self.addCleanup(s0.check_clean_exit)
        s0.wait_listening()
        ls = s0.listening()
        self.assertEqual(ls["grpc"][0], "127.0.0.1")
        self.assertNotEqual(ls["grpc"][1], 0)
        self.assertNotEqual(ls["system"][1], 0)
        self.assertNotEqual(ls["grpc"][1], ls["system"][1])
        for role in ("grpc", "system"):
            c, st = H.h2_unary(ls[role][1], H.CHECK, H.health_request("liveness"))
            self.assertEqual(H.grpc_status_of(st), 0)

    def test_system_port_off(self):
        s0 = H.Inferd("--system-port", "-1", system_port=-1)
        self.addCleanup(s0.check_clean_exit)
        self.assertNotIn("system", s0.listening())

    def test_system_port_env(self):
        # no --system-port flag: the port comes from the environment
        port, main_port = H.free_ports(2)
        argv = [H.inferd_bin(), "--listen", "127.0.0.1:%d" % main_port, "--system-host", "127.0.0.1",
                "--shutdown-delay", "0"]
        import os
        env = dict(os.environ, DYN_SYSTEM_PORT=str(port))
        p = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if p.poll() is not None:
                        break
                    time.sleep(0.1)
            else:
                self.fail("DYN_SYSTEM_PORT=%d not listened on" % port)
            self.assertIsNone(p.poll(), "inferd exited")
        finally:
            p.terminate()
            try:
                _, err = p.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                err = b""
        self.assertEqual(p.returncode, 0, err.decode(errors="replace")[-3000:])

    def test_address_in_use(self):
        with socket.socket() as busy:
            busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            p = subprocess.run([H.inferd_bin(), "--listen", "127.0.0.1:%d" % port, "--system-port", "-1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        err = p.stderr.decode(errors="replace")
        self.assertNotEqual(p.returncode, 0, err)
        low = err.lower()
        self.assertTrue("in use" in low or "eaddrinuse" in low, "no clear message: %r" % err[-2000:])
        self.assertIn(str(port), err)
        self.assertNotIn("AddressSanitizer", err)

    def test_system_port_in_use(self):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            p = subprocess.run([H.inferd_bin(), "--listen", "127.0.0.1:%d" % H.free_port(),
                                "--system-host", "127.0.0.1", "--system-port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        err = p.stderr.decode(errors="replace")
        self.assertNotEqual(p.returncode, 0, err)
        self.assertIn(str(port), err)


class CliTest(unittest.TestCase):
    def run_inferd(self, *args, env=None):
        import os
        e = dict(os.environ)
        e.update(env or {})
        return subprocess.run([H.inferd_bin()] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=20, env=e)

    def test_help(self):
        p = self.run_inferd("--help")
        self.assertEqual(p.returncode, 0)
        out = (p.stdout + p.stderr).decode()
        for opt in ("--listen", "--system-port", "--tls-cert", "--max-concurrent-streams",
                    "--shutdown-delay", "--drain-timeout", "--keepalive-min-time", "--idle-timeout",
                    "--handshake-timeout", "INFERD_LISTEN", "DYN_SYSTEM_PORT"):
            self.assertIn(opt, out)

    def test_print_config_precedence(self):
        p = self.run_inferd("--print-config", "--max-concurrent-streams", "17",
                            env={"INFERD_LISTEN": "127.0.0.1:1234", "DYN_SYSTEM_PORT": "4321"})
        self.assertEqual(p.returncode, 0, p.stderr)
        out = (p.stdout + p.stderr).decode()
        self.assertIn("17", out)
        self.assertIn("127.0.0.1:1234", out)
        self.assertIn("4321", out)
        p = self.run_inferd("--print-config", "--listen", "127.0.0.1:999",
                            env={"INFERD_LISTEN": "127.0.0.1:1234"})
        out = (p.stdout + p.stderr).decode()
        self.assertIn("127.0.0.1:999", out)
        self.assertNotIn("127.0.0.1:1234", out)

    def test_bad_values_named(self):
        for args, env, name in ((("--drain-timeout", "soon"), None, "drain-timeout"),
                                (("--max-concurrent-streams", "-3"), None, "max-concurrent-streams"),
                                (("--listen", "nohostport"), None, "listen"),
                                ((), {"DYN_SYSTEM_PORT": "eighty"}, "DYN_SYSTEM_PORT"),
                                (("--no-such-flag",), None, "no-such-flag")):
            with self.subTest(args=args, env=env):
                p = self.run_inferd(*args, "--print-config", env=env)
                err = (p.stdout + p.stderr).decode()
                self.assertNotEqual(p.returncode, 0, err)
                self.assertIn(name, err)


if __name__ == "__main__":
    H.run_main()
