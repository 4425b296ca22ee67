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


if __name__ == "__main__":
    H.run_main()
