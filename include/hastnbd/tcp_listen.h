// A listening TCP socket on a configured address (the peer link, NBD over
// TCP, metrics): resolved once (numeric in practice), SO_REUSEADDR, bound and
// listening, or an error naming `what` and the address.
#pragma once

#include <memory>
#include <string>

#include "hastnbd/asio.h"
#include "hastnbd/config.h"
#include "hastnbd/status.h"

namespace hastnbd {

Result<std::shared_ptr<asio::ip::tcp::acceptor>> tcp_listen(asio::io_context& io, const Address& address,
                                                            const std::string& what,
                                                            int backlog = asio::socket_base::max_listen_connections);

}  // namespace hastnbd
