#include "hastnbd/peer/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>

#include "hastnbd/peer/protocol.h"
#include "names.h"

namespace hastnbd::peer {

namespace {

constexpr char kLabel[] = "hastnbd peer authentication v2";
std::string num(uint64_t v) { return std::to_string(v); }
std::string named(const std::string& s) { return "'" + s + "'"; }

AuthMode read_mode(Reader& r) {
  uint8_t m = r.u8("mode");
  if (r.ok() && m > uint8_t(AuthMode::kPsk)) r.fail("mode " + num(m) + " is not a known authentication mode");
  return AuthMode(m);
}

template <class T>
Result<T> finish(Reader& r, const char* what, T value) {
  if (r.ok() && r.remaining() != 0) r.fail(num(r.remaining()) + " trailing bytes after offset " + num(r.pos()));
  if (!r.ok()) {
    std::string msg = what;  // built with += : GCC 12 warns falsely on a + chain here
    msg += ": ";
    msg += r.error();
    return Status::Error(EINVAL, msg);
  }
  return value;
}

void send_record(PeerConnection& conn, Type type, std::vector<uint8_t> payload) {
  Header h;
  h.type = type;
  h.flags = kFlagChecksummed;
  h.payload_length = uint32_t(payload.size());
  h.payload_checksum = payload_checksum(payload);
  conn.send(h, std::move(payload));
}

// The next record, which must be `want`. An ERROR from the peer is its
// refusal (reported as such); anything else is a protocol error.
awaitable<Result<Frame>> expect(PeerConnection& conn, Type want, bool* refused) {
  auto f = co_await conn.read_frame();
  if (!f.ok()) {
    *refused = true;  // nothing to answer on a broken link
    co_return Status::Error(f.status().code(), "handshake: " + f.status().message());
  }
  if (f->header.type == kError) {
    auto e = decode_error(f->payload.span());
    *refused = true;
    co_return Status::Error(
        EPROTO, "peer refused the connection: " + (e.ok() ? e->second : std::string("(unreadable error record)")));
  }
  if (f->header.type == kHello && want == kAuthHello)
    co_return Status::Error(EPROTO, "peer speaks protocol version 1 (no authentication); this node speaks " +
                                        num(kProtocolMin) + ".." + num(kProtocolMax) + ": upgrade the peer");
  if (f->header.type != want)
    co_return Status::Error(EPROTO, std::string("expected ") + type_name(want) + ", got " + type_name(f->header.type));
  co_return std::move(*f);
}

AuthMode mode_of(const AuthParams& p) { return p.key.empty() ? AuthMode::kNone : AuthMode::kPsk; }

// Both sides hold a key, or neither does.
Status check_modes(AuthMode ours, AuthMode theirs, const std::string& peer_node) {
  if (ours == theirs) return Status::Ok();
  if (ours == AuthMode::kPsk)
    return Status::Error(EACCES, "peer " + named(peer_node) +
                                     " does not authenticate (it has no psk); this node requires the resource's key");
  return Status::Error(EACCES, "peer " + named(peer_node) +
                                   " requires a pre-shared key; this node has none (set psk_file for the resource)");
}

std::span<const uint8_t> key_bytes(const AuthParams& p) {
  return {reinterpret_cast<const uint8_t*>(p.key.data()), p.key.size()};
}

}  // namespace

AuthParams auth_params(const ResourceConfig& config) {
  AuthParams p;
  p.resource = config.name;
  p.node = config.node;
  p.peer_node = config.peer_node;
  p.key = config.peer_key;
  return p;
}

const char* to_string(AuthMode m) { return m == AuthMode::kPsk ? "psk" : "none"; }

std::vector<uint8_t> encode(const AuthHello& m) {
  std::vector<uint8_t> out;
  Writer w(out);
  w.u32(m.version_min);
  w.u32(m.version_max);
  w.u64(m.features);
  write_name(w, m.resource);
  write_name(w, m.node);
  w.u8(uint8_t(m.mode));
  w.bytes(m.nonce.data(), m.nonce.size());
  return out;
}

std::vector<uint8_t> encode(const AuthChallenge& m) {
  std::vector<uint8_t> out;
  Writer w(out);
  w.u32(m.version);
  w.u64(m.features);
  write_name(w, m.node);
  w.u8(uint8_t(m.mode));
  w.bytes(m.nonce.data(), m.nonce.size());
  w.bytes(m.mac.data(), m.mac.size());
  return out;
}

std::vector<uint8_t> encode(const AuthProof& m) { return std::vector<uint8_t>(m.mac.begin(), m.mac.end()); }

Result<AuthHello> decode_auth_hello(std::span<const uint8_t> payload) {
  Reader r(payload);
  AuthHello m;
  m.version_min = r.u32("version_min");
  m.version_max = r.u32("version_max");
  if (r.ok() && (m.version_min == 0 || m.version_min > m.version_max))
    r.fail("version range " + num(m.version_min) + ".." + num(m.version_max) + " is empty");
  m.features = r.u64("features");
  m.resource = read_name(r, "resource");
  m.node = read_name(r, "node");
  m.mode = read_mode(r);
  r.bytes(m.nonce.data(), m.nonce.size(), "nonce");
  return finish(r, "AUTH_HELLO", m);
}

Result<AuthChallenge> decode_auth_challenge(std::span<const uint8_t> payload) {
  Reader r(payload);
  AuthChallenge m;
  m.version = r.u32("version");
  m.features = r.u64("features");
  m.node = read_name(r, "node");
  m.mode = read_mode(r);
  r.bytes(m.nonce.data(), m.nonce.size(), "nonce");
  r.bytes(m.mac.data(), m.mac.size(), "mac");
  return finish(r, "AUTH_CHALLENGE", m);
}

Result<AuthProof> decode_auth_proof(std::span<const uint8_t> payload) {
  Reader r(payload);
  AuthProof m;
  r.bytes(m.mac.data(), m.mac.size(), "mac");
  return finish(r, "AUTH_PROOF", m);
}

Result<uint32_t> choose_version(uint32_t our_min, uint32_t our_max, uint32_t their_min, uint32_t their_max,
                                const std::string& peer_node) {
  const uint32_t lo = std::max(our_min, their_min), hi = std::min(our_max, their_max);
  if (lo > hi)
    return Status::Error(EPROTO, "no common protocol version: this node speaks " + num(our_min) + ".." + num(our_max) +
                                     ", peer " + named(peer_node) + " speaks " + num(their_min) + ".." +
                                     num(their_max));
  return hi;
}

Mac auth_mac(std::span<const uint8_t> key, Side side, const Transcript& t) {
  std::vector<uint8_t> msg;
  Writer w(msg);
  w.bytes(kLabel, sizeof kLabel - 1);
  w.u8(uint8_t(side));
  w.u32(t.version);
  w.u64(t.features);
  write_name(w, t.resource);
  write_name(w, t.initiator);
  write_name(w, t.responder);
  w.bytes(t.initiator_nonce.data(), t.initiator_nonce.size());
  w.bytes(t.responder_nonce.data(), t.responder_nonce.size());
  if (!t.channel_binding.empty()) w.bytes(t.channel_binding.data(), t.channel_binding.size());
  Mac mac{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), int(key.size()), msg.data(), msg.size(), mac.data(), &len);
  return mac;
}

bool mac_equal(const Mac& a, const Mac& b) { return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0; }

Nonce random_nonce() {
  Nonce n{};
  // RAND_bytes draws from the OS generator; it fails only if that cannot be
  // seeded, and then no nonce is safe to use.
  if (RAND_bytes(n.data(), int(n.size())) != 1) std::abort();
  return n;
}

awaitable<Result<AuthResult>> authenticate_initiator(PeerConnection& conn, const AuthParams& p) {
  AuthHello hello;
  hello.version_min = p.version_min;
  hello.version_max = p.version_max;
  hello.features = p.features;
  hello.resource = p.resource;
  hello.node = p.node;
  hello.mode = mode_of(p);
  hello.nonce = random_nonce();
  send_record(conn, kAuthHello, encode(hello));

  bool refused = false;
  auto f = co_await expect(conn, kAuthChallenge, &refused);
  Status s = f.ok() ? Status::Ok() : f.status();
  Result<AuthChallenge> c = Status::Error(EPROTO, "no AUTH_CHALLENGE");
  if (s.ok()) {
    c = decode_auth_challenge(f->payload.span());
    if (!c.ok()) s = c.status();
  }
  if (s.ok() && !p.peer_node.empty() && c->node != p.peer_node)
    s = Status::Error(EINVAL, "peer identifies as node " + named(c->node) + ", expected " + named(p.peer_node));
  if (s.ok() && (c->version < p.version_min || c->version > p.version_max))
    s = Status::Error(EPROTO, "peer " + named(c->node) + " chose protocol version " + num(c->version) +
                                  ", outside this node's " + num(p.version_min) + ".." + num(p.version_max));
  if (s.ok()) s = check_modes(hello.mode, c->mode, c->node);
  Transcript t;
  if (s.ok()) {
    t = Transcript{c->version,  c->features & p.features, p.resource,
                   p.node,      c->node,                  hello.nonce,
                   c->nonce,    conn.channel_binding()};
    if (hello.mode == AuthMode::kPsk && !mac_equal(c->mac, auth_mac(key_bytes(p), Side::kResponder, t)))
      s = Status::Error(EACCES, "authentication failed: peer " + named(c->node) +
                                    " does not hold this resource's key (or not the same one)");
  }
  if (!s.ok()) {
    if (!refused) {
      conn.send_error(0, s);
      co_await conn.drain_sends();
    }
    co_return s;
  }
  AuthProof proof;
  if (hello.mode == AuthMode::kPsk) proof.mac = auth_mac(key_bytes(p), Side::kInitiator, t);
  send_record(conn, kAuthProof, encode(proof));
  conn.set_max_payload(kMaxPayload);
  co_return AuthResult{t.version, t.features};
}

awaitable<Result<AuthResult>> authenticate_responder(PeerConnection& conn, const AuthParams& p) {
  bool refused = false;
  auto f = co_await expect(conn, kAuthHello, &refused);
  if (!f.ok()) {
    // A version-1 peer gets the reason; it cannot read it, but a capture can.
    if (!refused) {
      conn.send_error(0, f.status());
      co_await conn.drain_sends();
    }
    co_return f.status();
  }
  auto h = decode_auth_hello(f->payload.span());
  Status s = h.ok() ? Status::Ok() : h.status();
  if (s.ok() && h->resource != p.resource)
    s = Status::Error(
        EINVAL, "peer " + named(h->node) + " is for resource " + named(h->resource) + ", this is " + named(p.resource));
  if (s.ok() && !p.peer_node.empty() && h->node != p.peer_node)
    s = Status::Error(EINVAL, "peer identifies as node " + named(h->node) + ", expected " + named(p.peer_node));
  Result<uint32_t> version = Status::Error(EPROTO, "no version");
  if (s.ok()) {
    version = choose_version(p.version_min, p.version_max, h->version_min, h->version_max, h->node);
    if (!version.ok()) s = version.status();
  }
  if (s.ok()) s = check_modes(mode_of(p), h->mode, h->node);
  if (!s.ok()) {
    conn.send_error(0, s);
    co_await conn.drain_sends();
    co_return s;
  }
  AuthChallenge c;
  c.version = *version;
  c.features = h->features & p.features;
  c.node = p.node;
  c.mode = mode_of(p);
  c.nonce = random_nonce();
  const Transcript t{c.version, c.features, p.resource, h->node, p.node, h->nonce, c.nonce, conn.channel_binding()};
  if (c.mode == AuthMode::kPsk) c.mac = auth_mac(key_bytes(p), Side::kResponder, t);
  send_record(conn, kAuthChallenge, encode(c));

  auto pf = co_await expect(conn, kAuthProof, &refused);
  if (!pf.ok()) {
    if (!refused) {
      conn.send_error(0, Status::Error(EACCES, "authentication failed"));
      co_await conn.drain_sends();
    }
    co_return pf.status();
  }
  auto proof = decode_auth_proof(pf->payload.span());
  if (!proof.ok()) s = proof.status();
  if (s.ok() && c.mode == AuthMode::kPsk && !mac_equal(proof->mac, auth_mac(key_bytes(p), Side::kInitiator, t)))
    s = Status::Error(EACCES, "authentication failed: the connecting side does not hold this resource's key");
  if (!s.ok()) {
    // No detail: a guesser learns only that it failed.
    conn.send_error(0, Status::Error(EACCES, "authentication failed"));
    co_await conn.drain_sends();
    co_return s;
  }
  conn.set_max_payload(kMaxPayload);
  co_return AuthResult{t.version, t.features};
}

}  // namespace hastnbd::peer
