#!/usr/bin/python3
"""TLS on the same port: gRPC over h2 (ALPN), HTTP/1.1 over TLS, mTLS with --tls-client-ca.
Certificates are made with openssl at test time in a temporary folder."""

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import unittest

import grpc

import inferd_harness as H


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_pki(d):
    """ca.pem; server.pem/server.key (localhost, 127.0.0.1); client.pem/client.key; other-ca client."""
    H.need("openssl")
    ext = os.path.join(d, "san.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    for ca in ("ca", "otherca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=inferd test %s" % ca,
                "-keyout", ca + ".key", "-out", ca + ".pem", cwd=d)
    for name, ca in (("server", "ca"), ("client", "ca"), ("stranger", "otherca")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                "-keyout", name + ".key", "-out", name + ".csr", cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
                "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", name + ".pem", cwd=d)
    # a self-signed leaf, as an operator would make with one openssl req
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", "self.key", "-out", "self.pem", cwd=d)


def read(d, name):
    with open(os.path.join(d, name), "rb") as f:
        return f.read()


class TlsBase(unittest.TestCase):
    pki = None

    @classmethod
    def setUpClass(cls):
        cls.pki = tempfile.mkdtemp(prefix="inferd-pki-")
        make_pki(cls.pki)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki, ignore_errors=True)

    def p(self, name):
        return os.path.join(self.pki, name)

    def check(self, target, creds, service="liveness"):
        ch = H.grpc_channel(target, credentials=creds)
        try:
            return H.health_status(H.unary(ch, H.CHECK)(H.health_request(service), timeout=5))
        finally:
            ch.close()


class TlsTest(TlsBase):
    def test_self_signed_grpc_and_http1(self):
        s0 = H.Inferd("--tls-cert", self.p("self.pem"), "--tls-key", self.p("self.key"))
        self.addCleanup(s0.check_clean_exit)
        creds = grpc.ssl_channel_credentials(root_certificates=read(self.pki, "self.pem"))
        self.assertEqual(self.check(s0.target, creds), H.SERVING)
        # system port too
        self.assertEqual(self.check(s0.system_target, creds), H.SERVING)
        # curl over TLS with HTTP/1.1 (ALPN http/1.1)
        rc, out, err = H.curl("--http1.1", "--cacert", self.p("self.pem"), "-o", "/dev/null",
                              "-w", "%{http_code} %{http_version}", "https://127.0.0.1:%d/live" % s0.grpc_port)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.decode(), "200 1.1")
        # curl over TLS with HTTP/2 (ALPN h2)
        rc, out, err = H.curl("--http2", "--cacert", self.p("self.pem"), "-o", "/dev/null",
                              "-w", "%{http_code} %{http_version}", "https://127.0.0.1:%d/live" % s0.grpc_port)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.decode(), "200 2")

    def test_ca_signed_and_no_alpn(self):
        s0 = H.Inferd("--tls-cert", self.p("server.pem"), "--tls-key", self.p("server.key"))
        self.addCleanup(s0.check_clean_exit)
        creds = grpc.ssl_channel_credentials(root_certificates=read(self.pki, "ca.pem"))
        self.assertEqual(self.check(s0.target, creds), H.SERVING)
        # a TLS client without ALPN gets HTTP/1.1 (or is refused; never h2 garbage)
        ctx = ssl.create_default_context(cafile=self.p("ca.pem"))
        with socket.create_connection(("127.0.0.1", s0.grpc_port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as t:
                self.assertIsNone(t.selected_alpn_protocol())
                t.sendall(b"GET /live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    d = t.recv(65536)
                    if not d:
                        break
                    data += d
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:200])
        # ALPN h2 over TLS with the raw h2 client
        ctx = ssl.create_default_context(cafile=self.p("ca.pem"))
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", s0.grpc_port), timeout=5)
        t = ctx.wrap_socket(raw, server_hostname="localhost")
        self.assertEqual(t.selected_alpn_protocol(), "h2")
        c = H.H2Conn(s0.grpc_port, sock=t)
        self.addCleanup(c.close)
        sid = c.request(H.CHECK, H.grpc_frame(H.health_request("liveness")),
                        headers=[])
        st = c.wait_done(sid, 5)
        self.assertEqual(H.grpc_status_of(st), 0, st)

    def test_bad_cert_path_is_startup_error(self):
        p = subprocess.run([H.inferd_bin(), "--listen", "127.0.0.1:%d" % H.free_port(), "--system-port", "-1",
                            "--tls-cert", self.p("missing.pem"), "--tls-key", self.p("server.key")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("missing.pem", p.stderr.decode(errors="replace"))


class MtlsTest(TlsBase):
    def setUp(self):
        self.s0 = H.Inferd("--tls-cert", self.p("server.pem"), "--tls-key", self.p("server.key"),
                           "--tls-client-ca", self.p("ca.pem"))
        self.addCleanup(self.s0.check_clean_exit)
        self.ca = read(self.pki, "ca.pem")

    def test_without_client_cert_refused(self):
        creds = grpc.ssl_channel_credentials(root_certificates=self.ca)
        with self.assertRaises(grpc.RpcError) as cm:
            self.check(self.s0.target, creds)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        rc, out, err = H.curl("--http1.1", "--cacert", self.p("ca.pem"), "-o", "/dev/null", "-w", "%{http_code}",
                              "https://127.0.0.1:%d/live" % self.s0.grpc_port)
        self.assertTrue(rc != 0 or out.decode() == "000", (rc, out, err))

    def test_wrong_ca_client_cert_refused(self):
        creds = grpc.ssl_channel_credentials(root_certificates=self.ca,
                                             private_key=read(self.pki, "stranger.key"),
                                             certificate_chain=read(self.pki, "stranger.pem"))
        with self.assertRaises(grpc.RpcError) as cm:
            self.check(self.s0.target, creds)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)

    # ---- issue 13, item 0: plaintext beside mTLS is the bypass; each client must be refused

    def test_plaintext_grpcio_refused(self):
        ch = H.grpc_channel(self.s0.target)  # insecure: h2c prior knowledge
        self.addCleanup(ch.close)
        calls = {
            "Check": lambda: H.unary(ch, H.CHECK)(H.health_request("liveness"), timeout=5),
            "Generate": lambda: list(H.server_stream(ch, H.GENERATE)(
                H.generate_request(prompt="Once", max_tokens=4), timeout=5)),
            "reflection": lambda: list(ch.stream_stream(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", request_serializer=None,
                response_deserializer=None)(iter([H.pb_string(7, "")]), timeout=5)),
        }
        for name, call in calls.items():
            with self.subTest(call=name):
                with self.assertRaises(grpc.RpcError) as cm:
                    call()
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE, cm.exception.details())

    def test_plaintext_h2_gets_goaway_tls_required(self):
        c = H.H2Conn(self.s0.grpc_port)
        self.addCleanup(c.close)
        sid = c.request(H.GENERATE, H.grpc_frame(H.generate_request(prompt="Once", max_tokens=4)))
        c.wait_for(lambda: c.goaways(), 5, "GOAWAY")
        g = c.goaways()[0]
        self.assertEqual(g.error_code, 0xc)  # INADEQUATE_SECURITY
        self.assertIn(b"TLS is required", g.additional_data or b"")
        c.wait_for(lambda: c.closed, 5, "close after the GOAWAY")
        self.assertIsNone(c.streams[sid]["headers"])
        self.assertEqual(c.streams[sid]["data"], b"")

    def test_plaintext_http1_gets_400_tls_required(self):
        s = H.http1_socket(self.s0.grpc_port)
        self.addCleanup(s.close)
        s.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        status, hdrs, body = H.http1_read_response(s)
        self.assertEqual(status, 400)
        self.assertEqual(hdrs.get("connection"), "close")
        self.assertIn(b"TLS is required", body)
        closed, _, rest = H.recv_until_closed(s, 5)
        self.assertTrue(closed)
        self.assertEqual(rest, b"")

    def test_plaintext_grpc_go_probe_refused(self):
        from test_clients import probe_bin
        probe = probe_bin()
        p = subprocess.run([probe, "-addr", self.s0.target, "-service", "liveness", "-timeout", "3s"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertNotIn(b"status: SERVING", p.stdout)
        # kubelet's plaintext probe still works where it should: the system port
        p = subprocess.run([probe, "-addr", self.s0.system_target, "-service", "liveness", "-timeout", "3s"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
        self.assertEqual(p.returncode, 0, p.stdout)

    def test_system_port_serves_no_inference(self):
        ch = H.grpc_channel(self.s0.system_target)
        self.addCleanup(ch.close)
        with self.assertRaises(grpc.RpcError) as cm:
            list(H.server_stream(ch, H.GENERATE)(H.generate_request(prompt="Once", max_tokens=4), timeout=5))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_with_client_cert_accepted(self):
        creds = grpc.ssl_channel_credentials(root_certificates=self.ca,
                                             private_key=read(self.pki, "client.key"),
                                             certificate_chain=read(self.pki, "client.pem"))
        self.assertEqual(self.check(self.s0.target, creds), H.SERVING)
        rc, out, err = H.curl("--http1.1", "--cacert", self.p("ca.pem"), "--cert", self.p("client.pem"),
                              "--key", self.p("client.key"), "-o", "/dev/null", "-w", "%{http_code}",
                              "https://127.0.0.1:%d/live" % self.s0.grpc_port)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.decode(), "200")


class PlaintextOptInTest(TlsBase):
    """--tls-allow-plaintext: the explicit, named risk of serving plaintext beside TLS."""

    def test_opt_in_serves_plaintext_and_warns(self):
        s0 = H.Inferd("--tls-cert", self.p("server.pem"), "--tls-key", self.p("server.key"),
                      "--tls-client-ca", self.p("ca.pem"), env={"INFERD_TLS_ALLOW_PLAINTEXT": "true"})
        self.addCleanup(s0.check_clean_exit)
        self.assertEqual(self.check(s0.target, None), H.SERVING)
        self.assertIn("--tls-allow-plaintext", s0.stderr())
        # TLS clients still need their certificate
        with self.assertRaises(grpc.RpcError):
            self.check(s0.target, grpc.ssl_channel_credentials(root_certificates=read(self.pki, "ca.pem")))

    def test_help_names_the_risk(self):
        p = subprocess.run([H.inferd_bin(), "--help"], stdout=subprocess.PIPE, timeout=20)
        help_text = p.stdout.decode()
        i = help_text.index("--tls-allow-plaintext")
        entry = help_text[i:i + 600]
        self.assertIn("RISK", entry)
        self.assertIn("INFERD_TLS_ALLOW_PLAINTEXT", entry)
        self.assertIn("default: false", entry)

    def test_opt_in_without_tls_is_startup_error(self):
        p = subprocess.run([H.inferd_bin(), "--listen", "127.0.0.1:%d" % H.free_port(), "--system-port", "-1",
                            "--tls-allow-plaintext"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--tls-allow-plaintext", p.stderr.decode())


if __name__ == "__main__":
    H.run_main()
