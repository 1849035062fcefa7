#include "hastnbd/peer/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include "hastnbd/peer/protocol.h"

namespace hastnbd {

namespace {

std::string openssl_reason() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? std::string("unknown OpenSSL error") : out;
}

Status tls_error(const std::string& what) { return Status::Error(EPROTO, what + ": " + openssl_reason()); }

// Closes the socket when a deadline passes, unless disarmed first.
struct Deadline {
  std::shared_ptr<bool> armed = std::make_shared<bool>(true);
  asio::steady_timer timer;
  Deadline(const asio::any_io_executor& ex, std::chrono::seconds t, std::shared_ptr<TlsStream> s) : timer(ex) {
    timer.expires_after(t);
    timer.async_wait([armed = armed, s = std::move(s)](error_code ec) {
      if (ec || !*armed) return;
      error_code ignored;
      s->lowest_layer().close(ignored);
    });
  }
  ~Deadline() {
    *armed = false;
    timer.cancel();
  }
};

}  // namespace

Result<std::shared_ptr<asio::ssl::context>> make_tls_context(const ResourceConfig& config) {
  const TlsMaterial& m = config.tls_material;
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls);
  SSL_CTX* c = ctx->native_handle();
  ERR_clear_error();
  if (SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) != 1 || SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION) != 1)
    return tls_error("TLS 1.3");
  SSL_CTX_set_options(c, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_num_tickets(c, 0);
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  error_code ec;
  ctx->add_certificate_authority(asio::buffer(m.ca_pem), ec);
  if (ec) return tls_error("tls.ca " + config.tls.ca);
  ctx->use_certificate_chain(asio::buffer(m.cert_pem), ec);
  if (ec) return tls_error("tls.cert " + config.tls.cert);
  ctx->use_private_key(asio::buffer(m.key_pem), asio::ssl::context::pem, ec);
  if (ec) return tls_error("tls.key " + config.tls.key);
  if (SSL_CTX_check_private_key(c) != 1)
    return Status::Error(EINVAL, "tls.key " + config.tls.key + " does not belong to the certificate in tls.cert " +
                                     config.tls.cert);
  ctx->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
  return ctx;
}

awaitable<Result<std::shared_ptr<TlsStream>>> tls_handshake(PlainSocket socket, asio::ssl::context& ctx, bool server,
                                                            const std::string& peer_name,
                                                            std::chrono::seconds timeout) {
  auto ex = socket.get_executor();
  auto stream = std::make_shared<TlsStream>(std::move(socket), ctx);
  SSL* ssl = stream->native_handle();
  // The peer's certificate must be for its name, in either direction.
  SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (SSL_set1_host(ssl, peer_name.c_str()) != 1) co_return tls_error("TLS: expected peer name " + peer_name);
  Deadline deadline(ex, timeout, stream);
  auto [ec] = co_await stream->async_handshake(server ? asio::ssl::stream_base::server : asio::ssl::stream_base::client,
                                               use_nothrow);
  if (!*deadline.armed || !stream->lowest_layer().is_open())
    co_return Status::Error(ETIMEDOUT, "TLS handshake: no answer within " + std::to_string(timeout.count()) + " s");
  if (ec) {
    const long v = SSL_get_verify_result(ssl);
    std::string why;
    if (v != X509_V_OK) {
      why = std::string("the peer's certificate: ") + X509_verify_cert_error_string(v);
      if (v == X509_V_ERR_HOSTNAME_MISMATCH) why += " (it must be for '" + peer_name + "')";
      if (v == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY || v == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
          v == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT)
        why += " (not signed by this node's tls.ca)";
    } else if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
      why = "the peer closed the connection (it refused our certificate, or it does not run the link over TLS)";
    } else {
      why = ec.message();
      if (ec.category() == asio::error::get_ssl_category()) {
        const int reason = ERR_GET_REASON(ec.value());
        if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG ||
            reason == SSL_R_HTTP_REQUEST)
          why += " (the peer does not speak TLS: is tls set on both nodes?)";
        else if (reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA || reason == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE ||
                 reason == SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED || reason == SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN ||
                 reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED)
          why += " (the peer refused this node's certificate: see its log)";
      }
    }
    co_return Status::Error(EACCES, "TLS handshake: " + why);
  }
  co_return stream;
}

const char* link_security(const ResourceConfig& config) {
  const bool tls = config.tls.enabled(), psk = !config.peer_key.empty();
  return tls && psk ? "tls+psk" : tls ? "tls" : psk ? "psk" : "none";
}

std::string tls_description(TlsStream& s) {
  SSL* ssl = s.native_handle();
  return std::string(SSL_get_version(ssl)) + " " + SSL_get_cipher_name(ssl);
}

awaitable<FirstBytes> peek_first_bytes(PlainSocket& socket, std::chrono::seconds timeout) {
  asio::steady_timer timer(socket.get_executor());
  timer.expires_after(timeout);
  using namespace asio::experimental::awaitable_operators;
  auto r = co_await (socket.async_wait(asio::socket_base::wait_read, use_nothrow) ||
                     timer.async_wait(use_nothrow));
  if (r.index() != 0 || std::get<0>(std::get<0>(r))) co_return FirstBytes::kNothing;
  uint8_t b[4] = {};
  ssize_t n = ::recv(socket.native_handle(), b, sizeof b, MSG_PEEK | MSG_DONTWAIT);
  if (n <= 0) co_return FirstBytes::kNothing;
  // A TLS record: handshake (22), version 3.x.
  if (b[0] == 0x16 && (n < 2 || b[1] == 0x03)) co_return FirstBytes::kTls;
  const uint8_t magic[4] = {uint8_t(peer::kMagic >> 24), uint8_t(peer::kMagic >> 16), uint8_t(peer::kMagic >> 8),
                            uint8_t(peer::kMagic)};
  if (std::equal(b, b + n, magic)) co_return FirstBytes::kPeerRecord;
  co_return FirstBytes::kOther;
}

}  // namespace hastnbd
