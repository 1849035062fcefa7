// peer/auth: the AUTH_* codec, version choice, the MAC's binding to side and
// transcript, and the whole exchange between two PeerConnections over a
// socketpair (right key, wrong key, a key on one side only, no common version).
#include <catch2/catch.hpp>

#include "hastnbd/peer/auth.h"
#include "hastnbd/peer/protocol.h"

using namespace hastnbd;
using namespace hastnbd::peer;

namespace {

const std::string kKey(64, 'k');

struct Outcome {
  Result<AuthResult> initiator = Status::Error(EINVAL, "not run");
  Result<AuthResult> responder = Status::Error(EINVAL, "not run");
};

Outcome exchange(AuthParams i, AuthParams r) {
  asio::io_context io;
  BufferPool pool;
  asio::local::stream_protocol::socket a(io), b(io);
  asio::local::connect_pair(a, b);
  auto ci = std::make_shared<PeerConnection>(PeerConnection::Socket(std::move(a)), pool, std::chrono::seconds(5), "r");
  auto cr = std::make_shared<PeerConnection>(PeerConnection::Socket(std::move(b)), pool, std::chrono::seconds(5), "i");
  ci->start();
  cr->start();
  Outcome o;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        o.initiator = co_await authenticate_initiator(*ci, i);
        if (!o.initiator.ok()) ci->close("done");
      },
      asio::detached);
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        o.responder = co_await authenticate_responder(*cr, r);
        cr->close("done");
        ci->close("done");
      },
      asio::detached);
  io.run_for(std::chrono::seconds(10));
  return o;
}

AuthParams params(std::string node, std::string peer, std::string key) {
  AuthParams p;
  p.resource = "data";
  p.node = std::move(node);
  p.peer_node = std::move(peer);
  p.key = std::move(key);
  return p;
}

}  // namespace

TEST_CASE("auth: the codec round-trips and refuses truncated, trailing and nonsense fields", "[auth]") {
  AuthHello h;
  h.resource = "data";
  h.node = "a";
  h.mode = AuthMode::kPsk;
  h.nonce = random_nonce();
  auto bytes = encode(h);
  REQUIRE(bytes.size() <= kMaxAuthPayload);
  auto back = decode_auth_hello(bytes);
  REQUIRE(back.ok());
  CHECK(*back == h);
  for (size_t n = 0; n < bytes.size(); ++n)
    CHECK_FALSE(decode_auth_hello(std::span<const uint8_t>(bytes.data(), n)).ok());
  bytes.push_back(0);
  CHECK_THAT(decode_auth_hello(bytes).status().message(), Catch::Contains("trailing"));
  h.version_min = 3;
  h.version_max = 2;
  CHECK_THAT(decode_auth_hello(encode(h)).status().message(), Catch::Contains("empty"));

  AuthChallenge c;
  c.version = 2;
  c.node = "b";
  c.mode = AuthMode::kPsk;
  c.nonce = random_nonce();
  c.mac[0] = 7;
  auto cb = encode(c);
  REQUIRE(decode_auth_challenge(cb).ok());
  CHECK(*decode_auth_challenge(cb) == c);
  cb[4 + 8 + 2 + 1] = 9;  // mode
  CHECK_THAT(decode_auth_challenge(cb).status().message(), Catch::Contains("mode 9"));
  AuthProof p;
  p.mac[31] = 1;
  CHECK(*decode_auth_proof(encode(p)) == p);
  CHECK_FALSE(decode_auth_proof(std::vector<uint8_t>(31)).ok());
}

TEST_CASE("auth: the highest shared version wins; none shared names both ranges", "[auth]") {
  CHECK(*choose_version(2, 2, 1, 3, "b") == 2);
  CHECK(*choose_version(2, 5, 3, 9, "b") == 5);
  auto none = choose_version(2, 2, 3, 4, "b");
  REQUIRE_FALSE(none.ok());
  CHECK_THAT(none.status().message(), Catch::Contains("2..2") && Catch::Contains("3..4") && Catch::Contains("'b'"));
}

TEST_CASE("auth: the MAC binds the key, the side and every transcript field", "[auth]") {
  const std::span<const uint8_t> key(reinterpret_cast<const uint8_t*>(kKey.data()), kKey.size());
  Transcript t{2, 0, "data", "a", "b", random_nonce(), random_nonce()};
  const Mac base = auth_mac(key, Side::kInitiator, t);
  CHECK(mac_equal(base, auth_mac(key, Side::kInitiator, t)));
  CHECK_FALSE(mac_equal(base, auth_mac(key, Side::kResponder, t)));  // no reflection
  std::string other = kKey;
  other[0] = 'x';
  CHECK_FALSE(
      mac_equal(base, auth_mac(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(other.data()), other.size()),
                               Side::kInitiator, t)));
  Transcript u = t;
  u.responder_nonce[0] ^= 1;  // a new challenge: a recorded proof no longer fits
  CHECK_FALSE(mac_equal(base, auth_mac(key, Side::kInitiator, u)));
  u = t;
  u.initiator = "c";
  CHECK_FALSE(mac_equal(base, auth_mac(key, Side::kInitiator, u)));
  u = t;
  u.version = 3;
  CHECK_FALSE(mac_equal(base, auth_mac(key, Side::kInitiator, u)));
  // Over TLS the session's exporter is in the MAC: a proof made in one TLS
  // session does not fit another.
  u = t;
  u.channel_binding.assign(32, 0x11);
  const Mac bound = auth_mac(key, Side::kInitiator, u);
  CHECK_FALSE(mac_equal(base, bound));
  u.channel_binding[31] ^= 1;
  CHECK_FALSE(mac_equal(bound, auth_mac(key, Side::kInitiator, u)));
  CHECK_FALSE(random_nonce() == random_nonce());
}

TEST_CASE("auth: the exchange over a real connection", "[auth]") {
  SECTION("the same key on both sides") {
    auto o = exchange(params("a", "b", kKey), params("b", "a", kKey));
    INFO(o.initiator.status().message() << " / " << o.responder.status().message());
    REQUIRE(o.initiator.ok());
    REQUIRE(o.responder.ok());
    CHECK(o.initiator->version == kProtocolMax);
    CHECK(o.responder->version == kProtocolMax);
  }
  SECTION("a wrong key fails on both sides, the initiator first") {
    std::string wrong = kKey;
    wrong.back() = 'x';
    auto o = exchange(params("a", "b", wrong), params("b", "a", kKey));
    REQUIRE_FALSE(o.initiator.ok());
    CHECK_THAT(o.initiator.status().message(), Catch::Contains("authentication failed"));
    REQUIRE_FALSE(o.responder.ok());
  }
  SECTION("a key on one side only") {
    auto o = exchange(params("a", "b", ""), params("b", "a", kKey));
    REQUIRE_FALSE(o.responder.ok());
    CHECK_THAT(o.responder.status().message(), Catch::Contains("does not authenticate"));
    REQUIRE_FALSE(o.initiator.ok());
    CHECK_THAT(o.initiator.status().message(), Catch::Contains("refused"));
  }
  SECTION("no key on either side (auth: none)") {
    auto o = exchange(params("a", "b", ""), params("b", "a", ""));
    CHECK(o.initiator.ok());
    CHECK(o.responder.ok());
  }
  SECTION("no common version: both sides name both ranges") {
    AuthParams newer = params("a", "b", kKey);
    newer.version_min = newer.version_max = 7;
    auto o = exchange(newer, params("b", "a", kKey));
    REQUIRE_FALSE(o.responder.ok());
    CHECK_THAT(o.responder.status().message(), Catch::Contains("7..7") && Catch::Contains("2..2"));
    REQUIRE_FALSE(o.initiator.ok());
    CHECK_THAT(o.initiator.status().message(), Catch::Contains("7..7") && Catch::Contains("2..2"));
  }
  SECTION("an older and a newer build that share a version agree on it") {
    AuthParams newer = params("a", "b", kKey);
    newer.version_max = 5;
    auto o = exchange(newer, params("b", "a", kKey));
    REQUIRE(o.initiator.ok());
    CHECK(o.initiator->version == 2);
  }
  SECTION("the wrong node name is refused") {
    auto o = exchange(params("c", "b", kKey), params("b", "a", kKey));
    REQUIRE_FALSE(o.responder.ok());
    CHECK_THAT(o.responder.status().message(), Catch::Contains("'c'"));
  }
}
