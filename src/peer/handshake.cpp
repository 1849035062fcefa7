#include "hastnbd/peer/handshake.h"

namespace hastnbd::peer {

void send_hello(PeerConnection& conn, const Hello& ours) {
  Header h;
  h.type = kHello;
  auto payload = encode_hello(ours);
  h.payload_length = uint32_t(payload.size());
  conn.send(h, std::move(payload));
}

awaitable<HelloResult> receive_hello(PeerConnection& conn, const Hello& ours, const std::string& expected_peer_node,
                                     std::optional<Role> role) {
  HelloResult r;
  auto f = co_await conn.read_frame();
  if (!f.ok()) {
    r.hello = Status::Error(f.status().code(), "handshake: " + f.status().message());
    r.peer_gone = true;
    co_return r;
  }
  if (f->header.type == kError) {
    auto e = decode_error(f->payload.span());
    r.hello = Status::Error(
        EPROTO, "peer refused the connection: " + (e.ok() ? e->second : std::string("(unreadable error record)")));
    r.peer_gone = true;
    co_return r;
  }
  if (f->header.type != kHello) {
    r.hello = Status::Error(EPROTO, std::string("expected HELLO, got ") + type_name(f->header.type));
    co_return r;
  }
  if (Status v = verify_payload(f->header, f->payload.span()); !v.ok()) {
    r.hello = v;
    co_return r;
  }
  r.hello = decode_hello(f->payload.span());
  if (!r.hello.ok()) co_return r;
  if (Status s = check_hello(ours, *r.hello, expected_peer_node); !s.ok()) {
    r.hello = s;
    co_return r;
  }
  if (role && r.hello->role != uint8_t(*role))
    r.hello = Status::Error(EINVAL, "peer '" + r.hello->node + "' is not " + to_string(*role));
  co_return r;
}

awaitable<void> refuse(PeerConnection& conn, const Status& why) {
  conn.send_error(0, why);
  co_await conn.drain_sends();
}

}  // namespace hastnbd::peer
