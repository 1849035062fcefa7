// The HELLO exchange both sides run on a fresh link, and how a side refuses
// (docs/protocol.md, "Handshake"). The primary sends first; the secondary
// answers with its own HELLO once the primary's passed these checks, so each
// side ends up holding both HELLOs and reaches the same sync decision.
//
// receive_hello() returns the peer's HELLO only when it is a valid HELLO
// for the same resource, from the expected node, in the expected role.
// Otherwise the Status says why, and says whether to answer: a link that
// broke or a peer that refused us gets no answer (kPeerGone); anything else
// is refused with refuse(), which tells the peer the reason before closing.
// Loop thread only.
#pragma once

#include <optional>
#include <string>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/role.h"
#include "hastnbd/base/status.h"
#include "hastnbd/peer/hello.h"
#include "hastnbd/peer/link.h"

namespace hastnbd::peer {

void send_hello(PeerConnection& conn, const Hello& ours);

struct HelloResult {
  Result<Hello> hello = Status::Error(EPROTO, "no HELLO");
  bool peer_gone = false;  // the link broke, or the peer refused us: nothing to answer
};
// `role`: what the peer must be; nullopt accepts any role (the primary
// learns whether a refusing peer is a primary too, for split-brain).
awaitable<HelloResult> receive_hello(PeerConnection& conn, const Hello& ours, const std::string& expected_peer_node,
                                     std::optional<Role> role);

// Sends an ERROR record with the reason and waits until it is on the wire
// (or the link is gone); the caller closes.
awaitable<void> refuse(PeerConnection& conn, const Status& why);

}  // namespace hastnbd::peer
