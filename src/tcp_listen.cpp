#include "hastnbd/tcp_listen.h"

namespace hastnbd {

Result<std::shared_ptr<asio::ip::tcp::acceptor>> tcp_listen(asio::io_context& io, const Address& address,
                                                            const std::string& what, int backlog) {
  error_code ec;
  asio::ip::tcp::resolver resolver(io);
  auto results = resolver.resolve(address.host, std::to_string(address.port), ec);
  if (ec || results.empty())
    return Status::Error(EINVAL, what + " " + address.to_string() + ": cannot resolve: " + ec.message());
  auto ep = results.begin()->endpoint();
  auto acceptor = std::make_shared<asio::ip::tcp::acceptor>(io);
  acceptor->open(ep.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(ep, ec);
  if (!ec) acceptor->listen(backlog, ec);
  if (ec) return Status::Error(ec.value(), what + " " + address.to_string() + ": " + ec.message());
  return acceptor;
}

}  // namespace hastnbd
