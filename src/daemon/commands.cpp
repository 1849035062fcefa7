#include "hastnbd/daemon/commands.h"

#include <optional>

#include "hastnbd/daemon/control.h"
#include "hastnbd/daemon/resource.h"

namespace hastnbd {

awaitable<nlohmann::json> handle_command(Resource& r, const nlohmann::json& request) {
  const std::string cmd = request["cmd"];
  if (cmd == "ping") co_return json{{"ok", true}};
  if (cmd == "status") {
    json s = r.status();
    s["ok"] = true;
    co_return s;
  }
  if (cmd == "role") {
    const json& role_field = request.contains("role") ? request["role"] : json();
    const json& force_field = request.contains("force") ? request["force"] : json(false);
    auto role = parse_role(role_field.is_string() ? role_field.get<std::string>() : "");
    if (!role) co_return control_error(Status::Error(EINVAL, "role must be init, secondary or primary"));
    if (!force_field.is_boolean()) co_return control_error(Status::Error(EINVAL, "force must be true or false"));
    Status s = co_await r.change_role(*role, force_field.get<bool>());
    if (!s.ok()) co_return control_error(s);
    co_return json{{"ok", true}, {"role", to_string(r.role())}, {"device", r.device_status()}};
  }
  if (cmd == "reload") co_return r.reload();
  if (cmd == "discard-my-data") {
    Status s = co_await r.discard_my_data();
    if (!s.ok()) co_return control_error(s);
    co_return json{{"ok", true}};
  }
  if (cmd == "verify") {
    auto flag = [&](const char* key) -> std::optional<bool> {
      if (!request.contains(key)) return false;
      if (!request[key].is_boolean()) return std::nullopt;
      return request[key].get<bool>();
    };
    auto number = [&](const char* key) -> std::optional<uint64_t> {
      if (!request.contains(key)) return uint64_t(0);
      if (!request[key].is_number_unsigned()) return std::nullopt;
      return request[key].get<uint64_t>();
    };
    auto stop = flag("stop"), repair = flag("repair"), resume = flag("resume");
    auto offset = number("offset"), length = number("length");
    if (!stop || !repair || !resume)
      co_return control_error(Status::Error(EINVAL, "stop, repair and resume must be true or false"));
    if (!offset || !length)
      co_return control_error(Status::Error(EINVAL, "offset and length must be byte counts"));
    Status s = *stop ? r.stop_verify() : r.verify(VerifyRequest{*offset, *length, *repair, *resume});
    if (!s.ok()) co_return control_error(s);
    json st = r.status();
    co_return json{{"ok", true}, {"verify", st.contains("verify") ? st["verify"] : json()}};
  }
  co_return control_error(Status::Error(EINVAL, "unknown command '" + cmd + "'"));
}

}  // namespace hastnbd
