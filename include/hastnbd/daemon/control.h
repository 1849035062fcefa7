// The control socket (RUN_DIR/RESOURCE.ctl): one JSON request line in, one
// JSON reply line out, then the connection closes. Replies carry "ok": true,
// or "ok": false with "error" (a message for the admin) and "errno".
// The server side runs on the loop; control_call() is the blocking client
// used by hastnbd-ctl.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/status.h"

namespace hastnbd {

using json = nlohmann::json;
using ControlHandler = std::function<awaitable<json>(const json& request)>;

inline constexpr size_t kMaxControlRequest = 64 * 1024;

json control_error(const Status& s);

class ControlServer {
 public:
  ControlServer(asio::io_context& io, ControlHandler handler);
  ~ControlServer();
  // Binds `path` (mode 0600). Refuses if another live process answers there.
  Status listen(const std::string& path);
  void close();

 private:
  awaitable<void> serve(asio::local::stream_protocol::socket socket);

  asio::io_context& io_;
  ControlHandler handler_;
  std::string path_;
  std::shared_ptr<asio::local::stream_protocol::acceptor> acceptor_;
};

// Sends one request and waits up to `timeout_ms` for the reply. ENOENT /
// ECONNREFUSED mean no daemon is running for the resource.
Result<json> control_call(const std::string& path, const json& request, int timeout_ms);

}  // namespace hastnbd
