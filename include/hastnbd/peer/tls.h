// Mutual TLS 1.3 on the peer link (docs/protocol.md, "TLS"), with OpenSSL
// through Asio's SSL stream. Both nodes present a certificate; each checks
// the other's against the configured CA and the name the peer's certificate
// must carry (its tls.name, default its node name: subjectAltName DNS, or
// the CN when there is no SAN). Session tickets and resumption are off: a
// link is opened rarely and each must prove itself in full. The AUTH
// exchange (peer/auth.h) then runs inside the tunnel, with the key when one
// is set.
#pragma once

#include <boost/asio/ssl.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/status.h"
#include "hastnbd/config/config.h"

namespace hastnbd {

using PlainSocket = asio::generic::stream_protocol::socket;
using TlsStream = asio::ssl::stream<PlainSocket>;

// An SSL context from the PEM text the daemon loaded: TLS 1.3 only, peer
// verification required, this node's chain and key (which must match).
// Errors name the file and OpenSSL's reason.
Result<std::shared_ptr<asio::ssl::context>> make_tls_context(const ResourceConfig& config);

// The TLS handshake on a fresh connection, as client (the primary) or
// server (the listener), within `timeout`. On failure the status says why
// in a sysadmin's words: the verification error and the expected name, or
// a hint when the other side does not speak TLS.
awaitable<Result<std::shared_ptr<TlsStream>>> tls_handshake(PlainSocket socket, asio::ssl::context& ctx, bool server,
                                                            const std::string& peer_name,
                                                            std::chrono::seconds timeout);

// How the link of this configuration is secured: "none", "psk", "tls" or
// "tls+psk" (status peer.auth).
const char* link_security(const ResourceConfig& config);

// "TLSv1.3 TLS_AES_256_GCM_SHA384" of an established stream.
std::string tls_description(TlsStream& s);

// What a connection's first bytes say, read without consuming them (up to
// `timeout`): a hastnbd record header, a TLS ClientHello, something else, or
// nothing (closed or silent).
enum class FirstBytes { kPeerRecord, kTls, kOther, kNothing };
awaitable<FirstBytes> peek_first_bytes(PlainSocket& socket, std::chrono::seconds timeout);

}  // namespace hastnbd
