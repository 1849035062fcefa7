// The fixed-newstyle handshake of one NBD connection: greeting, client
// flags, then options until the client attaches with GO or EXPORT_NAME.
#include <spdlog/spdlog.h>

#include "connection.h"

namespace hastnbd {

using namespace nbd_limits;

namespace {
Status closed(std::string why) { return Status::Error(EPROTO, std::move(why)); }
const char* const kGone = "client closed the connection";
}  // namespace

awaitable<void> NbdServer::Connection::negotiate_then_transmit() {
  handshake_timer_.expires_after(kHandshakeTimeout);
  handshake_timer_.async_wait([self = shared_from_this()](error_code ec) {
    if (ec) return;
    self->handshake_timed_out_ = true;
    error_code ignored;
    self->socket_.close(ignored);
  });
  Status attached = co_await negotiate();
  handshake_timer_.cancel();
  if (attached.ok()) co_return co_await transmission();
  end_reason_ = handshake_timed_out_ ? "handshake timed out" : attached.message();
}

awaitable<Status> NbdServer::Connection::negotiate() {
  if (!co_await send(nbd::encode_greeting())) co_return closed("client went away during the greeting");
  uint8_t flags_bytes[4];
  if (!co_await read_exact(flags_bytes, 4)) co_return closed("truncated handshake (no client flags)");
  const uint32_t client_flags = nbd::get_be32(flags_bytes);
  if (client_flags & ~(nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes))
    co_return closed(fmt::format("protocol violation: unknown client flags {:#x}", client_flags));
  if (!(client_flags & nbd::kClientFlagFixedNewstyle)) co_return closed("client does not speak fixed newstyle");
  no_zeroes_ = client_flags & nbd::kClientFlagNoZeroes;

  for (unsigned count = 0; count < kMaxOptions; ++count) {
    std::array<uint8_t, nbd::kOptionHeaderSize> hdr;
    if (!co_await read_exact(hdr.data(), hdr.size())) co_return closed("truncated handshake (during option haggling)");
    const auto opt = nbd::decode_option_header(hdr);
    if (opt.magic != nbd::kOptMagic) co_return closed("protocol violation: bad option magic");
    if (opt.length > nbd::kMaxOptionLength)
      co_return closed(fmt::format("protocol violation: option {} carries {} bytes", opt.option, opt.length));
    std::vector<uint8_t> payload(opt.length);
    if (!co_await read_exact(payload.data(), payload.size())) co_return closed("truncated handshake (option payload)");
    switch (opt.option) {
      case nbd::kOptExportName: {
        std::string name(payload.begin(), payload.end());
        // This option has no error reply: the protocol says close.
        if (!name.empty() && name != server_.export_name_)
          co_return closed(fmt::format("unknown export '{}' requested", name));
        if (!co_await send(nbd::encode_export_name_reply(server_.backend_.size(), kTransmissionFlags, no_zeroes_)))
          co_return closed(kGone);
        spdlog::info("nbd: client {} attached to export '{}' (EXPORT_NAME)", id_, server_.export_name_);
        co_return Status::Ok();
      }
      case nbd::kOptAbort:
        co_await send(nbd::encode_option_reply(opt.option, nbd::kRepAck));
        co_return closed("client aborted the handshake");
      case nbd::kOptList:
        if (!payload.empty()) {
          if (!co_await send(nbd::encode_option_reply(opt.option, nbd::kRepErrInvalid))) co_return closed(kGone);
          break;
        }
        if (!co_await send(nbd::encode_list_entry(server_.export_name_))) co_return closed(kGone);
        if (!co_await send(nbd::encode_option_reply(opt.option, nbd::kRepAck))) co_return closed(kGone);
        break;
      case nbd::kOptInfo:
      case nbd::kOptGo: {
        Result<bool> attached = co_await handle_go(opt.option, payload);
        if (!attached.ok()) co_return attached.status();
        if (*attached) co_return Status::Ok();
        if (!socket_.is_open()) co_return closed(kGone);
        break;
      }
      default:
        // STARTTLS, STRUCTURED_REPLY, meta contexts and anything newer: the
        // client falls back to what we do support.
        if (!co_await send(nbd::encode_option_reply(opt.option, nbd::kRepErrUnsup))) co_return closed(kGone);
        break;
    }
  }
  co_return closed("too many handshake options");
}

awaitable<Result<bool>> NbdServer::Connection::handle_go(uint32_t option, std::span<const uint8_t> payload) {
  auto reply = [&](uint32_t type) -> awaitable<Result<bool>> {
    if (!co_await send(nbd::encode_option_reply(option, type))) co_return closed(kGone);
    co_return false;
  };
  auto go = nbd::decode_go(payload);
  if (!go.ok()) co_return co_await reply(nbd::kRepErrInvalid);
  if (!go->name.empty() && go->name != server_.export_name_) {
    spdlog::info("nbd: client {} asked for unknown export '{}'", id_, go->name);
    co_return co_await reply(nbd::kRepErrUnknown);
  }
  bool block_size_requested = false;
  for (uint16_t info : go->info_requests) block_size_requested |= info == nbd::kInfoBlockSize;
  std::vector<uint8_t> out = nbd::encode_info_export(option, server_.backend_.size(), kTransmissionFlags);
  if (block_size_requested) {
    auto bs = nbd::encode_info_block_size(option, nbd::kMinBlock, nbd::kPreferredBlock, nbd::kMaxPayload);
    out.insert(out.end(), bs.begin(), bs.end());
  }
  auto ack = nbd::encode_option_reply(option, nbd::kRepAck);
  out.insert(out.end(), ack.begin(), ack.end());
  if (!co_await send(out)) co_return closed(kGone);
  if (option != nbd::kOptGo) co_return false;
  spdlog::info("nbd: client {} attached to export '{}'", id_, server_.export_name_);
  co_return true;
}

}  // namespace hastnbd
