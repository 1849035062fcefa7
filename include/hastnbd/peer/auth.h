// The opening of every peer link, before anything else is parsed from the
// peer (docs/protocol.md, "Authentication"): protocol version and feature
// negotiation, and mutual challenge-response authentication with the
// resource's pre-shared key.
//
//   initiator (the primary)              responder (the listener)
//   AUTH_HELLO   versions, features, resource, node, nonce Ni, mode  ->
//             <-  AUTH_CHALLENGE  chosen version, features, node, nonce Nr,
//                                 mode, MAC(responder)
//   AUTH_PROOF   MAC(initiator)  ->
//
// MAC(side) = HMAC-SHA256(key, label, side, version, features, resource,
// initiator node, responder node, Ni, Nr[, TLS exporter]). Each side's nonce is fresh from
// the OS random generator, so a recorded proof never fits a new challenge
// (replay), and the side byte differs, so a node's own MAC never passes as
// its peer's (reflection). The initiator verifies the responder's MAC before
// it sends its own: it proves nothing to a listener that does not hold the
// key. MACs are compared in constant time.
//
// The codec is pure and checks hostile input field by field; the exchange
// functions run on a PeerConnection whose payload limit is kMaxAuthPayload
// until they succeed.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/status.h"
#include "hastnbd/config/config.h"
#include "hastnbd/peer/link.h"

namespace hastnbd::peer {

// Feature bits, agreed as the intersection of both sides' sets; unknown
// bits from a newer peer are ignored.
// kFeatureHash: HASH / HASH_REPLY records (online verify, checksum resync).
// kFeatureGenerationTime: HELLO ends with the sender's generation_time.
inline constexpr uint64_t kFeatureHash = 1;
inline constexpr uint64_t kFeatureGenerationTime = 2;
inline constexpr uint64_t kFeatures = kFeatureHash | kFeatureGenerationTime;

inline constexpr size_t kNonceBytes = 32;
inline constexpr size_t kMacBytes = 32;
inline constexpr size_t kMinKeyBytes = 32;  // a psk shorter than this is a configuration error

enum class AuthMode : uint8_t { kNone = 0, kPsk = 1 };
const char* to_string(AuthMode m);

using Nonce = std::array<uint8_t, kNonceBytes>;
using Mac = std::array<uint8_t, kMacBytes>;

struct AuthHello {
  uint32_t version_min = kProtocolMin, version_max = kProtocolMax;
  uint64_t features = kFeatures;
  std::string resource, node;
  AuthMode mode = AuthMode::kNone;
  Nonce nonce{};
  bool operator==(const AuthHello&) const = default;
};
struct AuthChallenge {
  uint32_t version = 0;  // chosen by the responder
  uint64_t features = 0;
  std::string node;
  AuthMode mode = AuthMode::kNone;
  Nonce nonce{};
  Mac mac{};  // zero with mode none
  bool operator==(const AuthChallenge&) const = default;
};
struct AuthProof {
  Mac mac{};
  bool operator==(const AuthProof&) const = default;
};

std::vector<uint8_t> encode(const AuthHello& m);
std::vector<uint8_t> encode(const AuthChallenge& m);
std::vector<uint8_t> encode(const AuthProof& m);
Result<AuthHello> decode_auth_hello(std::span<const uint8_t> payload);
Result<AuthChallenge> decode_auth_challenge(std::span<const uint8_t> payload);
Result<AuthProof> decode_auth_proof(std::span<const uint8_t> payload);

// The highest version both ranges hold, or an error naming both ranges.
Result<uint32_t> choose_version(uint32_t our_min, uint32_t our_max, uint32_t their_min, uint32_t their_max,
                                const std::string& peer_node);

enum class Side : uint8_t { kResponder = 1, kInitiator = 2 };
struct Transcript {
  uint32_t version;
  uint64_t features;
  std::string resource, initiator, responder;
  Nonce initiator_nonce, responder_nonce;
  // Over TLS, the session's exporter value (PeerConnection::channel_binding):
  // the key is then proved for this TLS session only, so the proof cannot
  // be relayed from another connection. Empty on a plain link.
  std::vector<uint8_t> channel_binding;
};
Mac auth_mac(std::span<const uint8_t> key, Side side, const Transcript& t);
bool mac_equal(const Mac& a, const Mac& b);  // constant time
Nonce random_nonce();

// What one side brings to the exchange.
struct AuthParams {
  std::string resource;
  std::string node;       // this node
  std::string peer_node;  // the node the other side must be
  std::string key;        // empty: mode none
  uint32_t version_min = kProtocolMin, version_max = kProtocolMax;
  uint64_t features = kFeatures;
};
// The parameters of a resource: its name, this node, the peer node, and
// the key loaded into config.peer_key.
AuthParams auth_params(const ResourceConfig& config);

struct AuthResult {
  uint32_t version = 0;
  uint64_t features = 0;
};

// Run on a fresh connection. On failure the Status says why; a side that
// detects the failure has already sent ERROR with the reason where that
// tells an attacker nothing (version and name mismatches), or a bare
// "authentication failed" where it would.
awaitable<Result<AuthResult>> authenticate_initiator(PeerConnection& conn, const AuthParams& p);
awaitable<Result<AuthResult>> authenticate_responder(PeerConnection& conn, const AuthParams& p);

}  // namespace hastnbd::peer
