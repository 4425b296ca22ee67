/* The TLS context of the listeners: certificate chain and key, client verification with
 * --tls-client-ca, ALPN (h2, then http/1.1). */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>

#include "server/core/conn.h"

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char ours[] = "\x02h2\x08http/1.1";
    if (SSL_select_next_proto((unsigned char **)out, outlen, ours, sizeof ours - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* the client offers neither h2 nor http/1.1 */
    return SSL_TLSEXT_ERR_OK;
}

int tls_context_new(SSL_CTX **out, const config_t *cfg, char *err, size_t errlen)
{
    char ebuf[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
        ERR_error_string_n(ERR_get_error(), ebuf, sizeof ebuf);
        snprintf(err, errlen, "invalid value '%s' for --tls-cert: %s", cfg->tls_cert, ebuf);
        goto fail_ctx;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ERR_error_string_n(ERR_get_error(), ebuf, sizeof ebuf);
        snprintf(err, errlen, "invalid value '%s' for --tls-key: %s", cfg->tls_key, ebuf);
        goto fail_ctx;
    }
    if (cfg->tls_client_ca) {
        if (SSL_CTX_load_verify_locations(ctx, cfg->tls_client_ca, NULL) != 1) {
            ERR_error_string_n(ERR_get_error(), ebuf, sizeof ebuf);
            snprintf(err, errlen, "invalid value '%s' for --tls-client-ca: %s", cfg->tls_client_ca,
                     ebuf);
            goto fail_ctx;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    *out = ctx;
    return 0;
fail_ctx:
    SSL_CTX_free(ctx);
    return -EINVAL;
fail:
    snprintf(err, errlen, "cannot create the TLS context");
    return -ENOMEM;
}
