// Mutual TLS 1.3 on the peer link (docs/protocol.md, "TLS"), with OpenSSL:
// the context through Asio's SSL context, the session through TlsSession
// below (docs/design.md, "Peer link over TLS", says why not
// asio::ssl::stream). Both nodes present a certificate; each checks the
// other's against the configured CA and the name the peer's certificate
// must carry (its tls.name, default its node name: subjectAltName DNS, or
// the CN when there is no SAN). Session tickets and resumption are off: a
// link is opened rarely and each must prove itself in full. The AUTH
// exchange (peer/auth.h) then runs inside the tunnel, with the key when one
// is set.
#pragma once

#include <boost/asio/ssl.hpp>
#include <openssl/ssl.h>
#include <chrono>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/status.h"
#include "hastnbd/config/config.h"

namespace hastnbd {

using PlainSocket = asio::generic::stream_protocol::socket;

// A TLS session over a stream socket it owns, for one reader and one writer
// coroutine at a time on the loop thread. Ciphertext is received into a
// 1 MiB buffer OpenSSL reads records from (one recv brings many records),
// and written into a buffer this class sends in large pieces (one send per
// up to kFlushBytes of records), instead of
// asio::ssl::stream's one 17 KiB memory-BIO round trip, copy and syscall per
// record.
class TlsSession : public std::enable_shared_from_this<TlsSession> {
 public:
  static constexpr size_t kFlushBytes = 1 << 20;
  // ssl_ctx: the context of make_tls_context (kept alive by the caller
  // until the session exists; OpenSSL counts its own reference).
  TlsSession(PlainSocket socket, SSL_CTX* ssl_ctx);
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  PlainSocket& socket() { return socket_; }
  SSL* native_handle() { return ssl_; }
  // The handshake as client or server; on failure, the status in a
  // sysadmin's words (see tls_handshake).
  awaitable<Status> handshake(bool server);
  // Fills `b` completely, or fails: eof when the peer closed (cleanly or
  // not), another error with error_detail() saying what TLS found.
  awaitable<std::tuple<error_code, size_t>> read(asio::mutable_buffer b);
  // Encrypts and sends every buffer, in order.
  awaitable<error_code> write(const std::vector<asio::const_buffer>& bufs);
  const std::string& error_detail() const { return detail_; }
  // The OpenSSL error code (ERR_get_error) of the last failure, 0 if none.
  unsigned long ssl_error() const { return ssl_error_; }
  // "TLSv1.3 TLS_AES_256_GCM_SHA384".
  std::string description() const;
  // RFC 8446 §7.5 exporter output of `n` bytes for `label` (no context);
  // both ends of the session get the same bytes.
  std::vector<uint8_t> exporter(const std::string& label, size_t n) const;

 private:
  struct Bio;
  awaitable<error_code> flush();
  error_code ssl_failure(int ret);
  error_code encrypt(const uint8_t* p, size_t n);

  PlainSocket socket_;
  SSL* ssl_ = nullptr;
  std::vector<uint8_t> in_;       // ciphertext received, [in_pos_, in_end_) not yet given to OpenSSL
  size_t in_pos_ = 0, in_end_ = 0;
  std::vector<uint8_t> out_;      // ciphertext waiting to be sent
  std::vector<uint8_t> sending_;  // ciphertext being sent
  std::vector<uint8_t> stage_;    // small plaintext pieces gathered into one record
  bool flushing_ = false;
  bool eof_ = false;      // the socket returned end of file
  int sys_errno_ = 0;     // the socket's last error
  std::string detail_;
  unsigned long ssl_error_ = 0;
  AsyncCondition flushed_;
};

// An SSL context from the PEM text the daemon loaded: TLS 1.3 only, peer
// verification required, this node's chain and key (which must match).
// Errors name the file and OpenSSL's reason.
Result<std::shared_ptr<asio::ssl::context>> make_tls_context(const ResourceConfig& config);

// The TLS handshake on a fresh connection, as client (the primary) or
// server (the listener), within `timeout`. On failure the status says why
// in a sysadmin's words: the verification error and the expected name, or
// a hint when the other side does not speak TLS.
awaitable<Result<std::shared_ptr<TlsSession>>> tls_handshake(PlainSocket socket, asio::ssl::context& ctx, bool server,
                                                             const std::string& peer_name,
                                                             std::chrono::seconds timeout);

// How the link of this configuration is secured: "none", "psk", "tls" or
// "tls+psk" (status peer.auth).
const char* link_security(const ResourceConfig& config);

// What a connection's first bytes say, read without consuming them (up to
// `timeout`): a hastnbd record header, a TLS ClientHello, something else, or
// nothing (closed or silent).
enum class FirstBytes { kPeerRecord, kTls, kOther, kNothing };
awaitable<FirstBytes> peek_first_bytes(PlainSocket& socket, std::chrono::seconds timeout);

}  // namespace hastnbd
