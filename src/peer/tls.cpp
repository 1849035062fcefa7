#include "hastnbd/peer/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <cstring>

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
  Deadline(const asio::any_io_executor& ex, std::chrono::seconds t, std::shared_ptr<TlsSession> s) : timer(ex) {
    timer.expires_after(t);
    timer.async_wait([armed = armed, s = std::move(s)](error_code ec) {
      if (ec || !*armed) return;
      error_code ignored;
      s->socket().close(ignored);
    });
  }
  ~Deadline() {
    *armed = false;
    timer.cancel();
  }
};

constexpr size_t kSmall = 16 << 10;         // pieces gathered before encryption
// Ciphertext read from the socket at once. OpenSSL's own read-ahead is not
// used: it moves what is left in its buffer to the front for every record
// (OpenSSL 3.0 ssl3_read_n, aligning the payload), quadratic in the buffer
// size; ours hands each record over with one copy.
constexpr size_t kReadBuffer = 1 << 20;

}  // namespace

// The BIO between OpenSSL and the socket: reads come from in_, refilled by
// one non-blocking recv of up to 1 MiB ("retry" when the socket is empty), writes append to out_, which
// flush() sends. A write never asks to be retried, so SSL_write never
// returns WANT_WRITE.
struct TlsSession::Bio {
  static TlsSession* self(BIO* b) { return static_cast<TlsSession*>(BIO_get_data(b)); }
  static int write(BIO* b, const char* data, size_t len, size_t* written) {
    TlsSession* t = self(b);
    BIO_clear_retry_flags(b);
    if (!t->socket_.is_open()) {
      t->sys_errno_ = EPIPE;
      return 0;
    }
    t->out_.insert(t->out_.end(), reinterpret_cast<const uint8_t*>(data), reinterpret_cast<const uint8_t*>(data) + len);
    *written = len;
    return 1;
  }
  static int read(BIO* b, char* data, size_t len, size_t* got) {
    TlsSession* t = self(b);
    BIO_clear_retry_flags(b);
    *got = 0;
    if (t->in_pos_ == t->in_end_) {
      if (!t->socket_.is_open()) {
        t->sys_errno_ = EBADF;
        return 0;
      }
      if (t->in_.empty()) t->in_.resize(kReadBuffer);
      const ssize_t n = ::recv(t->socket_.native_handle(), t->in_.data(), t->in_.size(), MSG_DONTWAIT);
      if (n <= 0) {
        if (n == 0)
          t->eof_ = true;
        else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
          BIO_set_retry_read(b);
        else
          t->sys_errno_ = errno;
        return 0;
      }
      t->in_pos_ = 0;
      t->in_end_ = size_t(n);
    }
    const size_t k = std::min(len, t->in_end_ - t->in_pos_);
    std::memcpy(data, t->in_.data() + t->in_pos_, k);
    t->in_pos_ += k;
    *got = k;
    return 1;
  }
  static long ctrl(BIO* b, int cmd, long, void*) {
    switch (cmd) {
      case BIO_CTRL_FLUSH:
        return 1;  // flush() sends; OpenSSL only needs to know nothing is lost
      case BIO_CTRL_EOF:
        return self(b)->eof_ ? 1 : 0;
      default:
        return 0;
    }
  }
  static int create(BIO* b) {
    BIO_set_init(b, 1);
    return 1;
  }
  static BIO_METHOD* method() {
    static BIO_METHOD* const kMethod = [] {
      BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "hastnbd peer socket");
      BIO_meth_set_write_ex(m, &Bio::write);
      BIO_meth_set_read_ex(m, &Bio::read);
      BIO_meth_set_ctrl(m, &Bio::ctrl);
      BIO_meth_set_create(m, &Bio::create);
      return m;
    }();
    return kMethod;
  }
};

TlsSession::TlsSession(PlainSocket socket, SSL_CTX* ssl_ctx)
    : socket_(std::move(socket)), flushed_(socket_.get_executor()) {
  ssl_ = SSL_new(ssl_ctx);
  if (!ssl_) throw std::bad_alloc();
  BIO* bio = BIO_new(Bio::method());
  if (!bio) {
    SSL_free(ssl_);
    throw std::bad_alloc();
  }
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);
}

TlsSession::~TlsSession() { SSL_free(ssl_); }

std::string TlsSession::description() const {
  return std::string(SSL_get_version(ssl_)) + " " + SSL_get_cipher_name(ssl_);
}

std::vector<uint8_t> TlsSession::exporter(const std::string& label, size_t n) const {
  std::vector<uint8_t> out(n);
  // Fails only before the handshake is done; then the MACs of the two
  // sides cannot agree and authentication fails.
  if (SSL_export_keying_material(ssl_, out.data(), n, label.data(), label.size(), nullptr, 0, 0) != 1) {
    ERR_clear_error();
    out.assign(n, 0);
  }
  return out;
}

error_code TlsSession::ssl_failure(int ret) {
  const int e = SSL_get_error(ssl_, ret);
  ssl_error_ = ERR_peek_last_error();
  error_code ec;
  // Closed without close_notify (we close that way too): OpenSSL 3 says
  // SSL_ERROR_SSL "unexpected eof" or SSL_ERROR_SYSCALL; either is an end.
  const bool eof = eof_ && sys_errno_ == 0 &&
                   (e == SSL_ERROR_SYSCALL || ERR_GET_REASON(ssl_error_) == SSL_R_UNEXPECTED_EOF_WHILE_READING);
  if (e == SSL_ERROR_ZERO_RETURN || eof) {
    detail_ = "the peer closed the connection";
    ec = asio::error::eof;
  } else if (e == SSL_ERROR_SYSCALL && sys_errno_ != 0) {
    ec = error_code(sys_errno_, asio::error::get_system_category());
    detail_ = ec.message();
  } else {
    detail_ = "TLS: " + openssl_reason();
    ec = error_code(EPROTO, asio::error::get_system_category());
  }
  ERR_clear_error();
  return ec;
}

error_code TlsSession::encrypt(const uint8_t* p, size_t n) {
  size_t written = 0;
  const int ret = SSL_write_ex(ssl_, p, n, &written);
  return ret == 1 ? error_code() : ssl_failure(ret);
}

awaitable<error_code> TlsSession::flush() {
  auto self = shared_from_this();
  while (!out_.empty()) {
    if (flushing_) {
      co_await flushed_.wait();
      continue;
    }
    flushing_ = true;
    sending_.swap(out_);
    auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(sending_), large_transfers, use_nothrow);
    sending_.clear();
    flushing_ = false;
    flushed_.notify_all();
    if (ec) co_return ec;
  }
  co_return error_code();
}

awaitable<Status> TlsSession::handshake(bool server) {
  if (server)
    SSL_set_accept_state(ssl_);
  else
    SSL_set_connect_state(ssl_);
  ERR_clear_error();
  for (;;) {
    const int ret = SSL_do_handshake(ssl_);
    error_code fec = co_await flush();  // our flight first, then wait for theirs
    if (ret == 1) {
      if (fec) co_return Status::Error(fec.value(), fec.message());
      co_return Status::Ok();
    }
    if (SSL_get_error(ssl_, ret) == SSL_ERROR_WANT_READ && !fec) {
      auto [ec] = co_await socket_.async_wait(asio::socket_base::wait_read, use_nothrow);
      if (!ec) continue;
      co_return Status::Error(ec.value(), ec.message());
    }
    error_code ec = ssl_failure(ret);
    if (fec && ec != asio::error::eof && ssl_error_ == 0) ec = fec, detail_ = fec.message();
    co_return Status::Error(ec == asio::error::eof ? ECONNRESET : ec.value(), detail_);
  }
}

awaitable<std::tuple<error_code, size_t>> TlsSession::read(asio::mutable_buffer b) {
  auto* p = static_cast<uint8_t*>(b.data());
  size_t got = 0;
  while (got < b.size()) {
    size_t n = 0;
    const int ret = SSL_read_ex(ssl_, p + got, b.size() - got, &n);
    if (ret == 1) {
      got += n;
      continue;
    }
    if (SSL_get_error(ssl_, ret) == SSL_ERROR_WANT_READ) {
      auto [ec] = co_await socket_.async_wait(asio::socket_base::wait_read, use_nothrow);
      if (ec) co_return std::tuple(ec, got);
      continue;
    }
    co_return std::tuple(ssl_failure(ret), got);
  }
  // A post-handshake message may have needed an answer (TLS 1.3 KeyUpdate):
  // send it without making the reader wait on the socket.
  if (!out_.empty() && !flushing_)
    asio::co_spawn(socket_.get_executor(), [self = shared_from_this()]() -> awaitable<void> { co_await self->flush(); },
                   asio::detached);
  co_return std::tuple(error_code(), got);
}

awaitable<error_code> TlsSession::write(const std::vector<asio::const_buffer>& bufs) {
  stage_.clear();
  // The small pieces gathered so far, as one record.
  const auto encrypt_stage = [this] {
    error_code ec = stage_.empty() ? error_code() : encrypt(stage_.data(), stage_.size());
    stage_.clear();
    return ec;
  };
  for (const asio::const_buffer& b : bufs) {
    const auto* p = static_cast<const uint8_t*>(b.data());
    if (b.size() < kSmall) {
      stage_.insert(stage_.end(), p, p + b.size());
      if (stage_.size() < kSmall) continue;
      if (error_code ec = encrypt_stage()) co_return ec;
    } else {
      if (error_code ec = encrypt_stage()) co_return ec;
      for (size_t off = 0; off < b.size(); off += kFlushBytes) {
        if (error_code ec = encrypt(p + off, std::min(kFlushBytes, b.size() - off))) co_return ec;
        if (out_.size() >= kFlushBytes)
          if (error_code ec = co_await flush()) co_return ec;
      }
    }
    if (out_.size() >= kFlushBytes)
      if (error_code ec = co_await flush()) co_return ec;
  }
  if (error_code ec = encrypt_stage()) co_return ec;
  co_return co_await flush();
}

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

awaitable<Result<std::shared_ptr<TlsSession>>> tls_handshake(PlainSocket socket, asio::ssl::context& ctx, bool server,
                                                             const std::string& peer_name,
                                                             std::chrono::seconds timeout) {
  auto ex = socket.get_executor();
  auto session = std::make_shared<TlsSession>(std::move(socket), ctx.native_handle());
  SSL* ssl = session->native_handle();
  // The peer's certificate must be for its name, in either direction.
  SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (SSL_set1_host(ssl, peer_name.c_str()) != 1) co_return tls_error("TLS: expected peer name " + peer_name);
  Deadline deadline(ex, timeout, session);
  Status st = co_await session->handshake(server);
  if (!*deadline.armed || !session->socket().is_open())
    co_return Status::Error(ETIMEDOUT, "TLS handshake: no answer within " + std::to_string(timeout.count()) + " s");
  if (!st.ok()) {
    const long v = SSL_get_verify_result(ssl);
    std::string why;
    if (v != X509_V_OK) {
      why = std::string("the peer's certificate: ") + X509_verify_cert_error_string(v);
      if (v == X509_V_ERR_HOSTNAME_MISMATCH) why += " (it must be for '" + peer_name + "')";
      if (v == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY || v == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
          v == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT)
        why += " (not signed by this node's tls.ca)";
    } else if (st.code() == ECONNRESET || st.code() == EPIPE) {
      why = "the peer closed the connection (it refused our certificate, or it does not run the link over TLS)";
    } else {
      why = st.message();
      if (const unsigned long e = session->ssl_error(); e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL) {
        const int reason = ERR_GET_REASON(e);
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
  co_return session;
}

const char* link_security(const ResourceConfig& config) {
  const bool tls = config.tls.enabled(), psk = !config.peer_key.empty();
  return tls && psk ? "tls+psk" : tls ? "tls" : psk ? "psk" : "none";
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
