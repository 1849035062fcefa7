#include "hastnbd/nbd/kernel.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/nbd-netlink.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/netlink.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>

namespace hastnbd::kernel_nbd {
namespace {

const char* kNoNetlink =
    "the kernel's nbd netlink interface is not available (is the nbd module loaded? 'modprobe nbd'; "
    "the unit file does this). The export stays on the Unix socket: 'nbd-client -unix SOCKET /dev/nbdN -N "
    "RESOURCE -b 4096' attaches it by hand";

// libnl folds the kernel's errno into its own codes; map back the ones an
// admin acts on.
int errno_of(int nl_err) {
  switch (nl_err < 0 ? -nl_err : nl_err) {
    case NLE_BUSY: return EBUSY;
    case NLE_PERM: return EPERM;
    case NLE_INVAL: return EINVAL;
    case NLE_NOMEM: return ENOMEM;
    case NLE_OBJ_NOTFOUND: return ENOENT;
    case NLE_NOACCESS: return EACCES;
    default: return EIO;
  }
}

struct SockDeleter {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
};
using Sock = std::unique_ptr<nl_sock, SockDeleter>;

struct MsgDeleter {
  void operator()(nl_msg* m) const { nlmsg_free(m); }
};
using Msg = std::unique_ptr<nl_msg, MsgDeleter>;

// A connected generic-netlink socket and the nbd family's id.
Result<std::pair<Sock, int>> open_family() {
  Sock sock(nl_socket_alloc());
  if (!sock) return Status::Error(ENOMEM, "netlink: cannot allocate a socket");
  if (int e = genl_connect(sock.get()); e < 0)
    return Status::Error(errno_of(e), std::string("netlink: connect: ") + nl_geterror(e));
  int family = genl_ctrl_resolve(sock.get(), NBD_GENL_FAMILY_NAME);
  if (family < 0) return Status::Error(ENOENT, kNoNetlink);
  return std::make_pair(std::move(sock), family);
}

Result<Msg> new_msg(int family, uint8_t cmd) {
  Msg msg(nlmsg_alloc());
  if (!msg || !genlmsg_put(msg.get(), NL_AUTO_PORT, NL_AUTO_SEQ, family, 0, 0, cmd, NBD_GENL_VERSION))
    return Status::Error(ENOMEM, "netlink: cannot build a message");
  return msg;
}

// Sends and waits for the kernel's answer; replies other than the ack (the
// CONNECT reply carries the index we already know) are read and dropped.
Status send(nl_sock* sock, Msg msg, const std::string& what) {
  int e = nl_send_sync(sock, msg.release());  // frees the message
  if (e < 0) return Status::Error(errno_of(e), what + ": " + nl_geterror(e));
  return Status::Ok();
}

// NBD_ATTR_SOCKETS: one NBD_SOCK_ITEM with NBD_SOCK_FD per descriptor.
bool put_sockets(nl_msg* m, const std::vector<int>& fds) {
  nlattr* socks = nla_nest_start(m, NBD_ATTR_SOCKETS);
  if (!socks) return false;
  for (int fd : fds) {
    nlattr* item = nla_nest_start(m, NBD_SOCK_ITEM);
    if (!item || nla_put_u32(m, NBD_SOCK_FD, uint32_t(fd)) != 0) return false;
    nla_nest_end(m, item);
  }
  nla_nest_end(m, socks);
  return true;
}

std::string sys_block(int index, const char* file) {
  return "/sys/block/nbd" + std::to_string(index) + "/" + file;
}

std::string read_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace

Status connect(const AttachParams& p) {
  auto fam = open_family();
  if (!fam.ok()) return fam.status();
  auto& [sock, family] = *fam;
  auto msg = new_msg(family, NBD_CMD_CONNECT);
  if (!msg.ok()) return msg.status();
  nl_msg* m = msg->get();
  bool ok = nla_put_u32(m, NBD_ATTR_INDEX, uint32_t(p.index)) == 0 &&
            nla_put_u64(m, NBD_ATTR_SIZE_BYTES, p.size) == 0 &&
            nla_put_u64(m, NBD_ATTR_BLOCK_SIZE_BYTES, p.block_size) == 0 &&
            nla_put_u64(m, NBD_ATTR_SERVER_FLAGS, p.server_flags) == 0 &&
            (p.timeout_s == 0 || nla_put_u64(m, NBD_ATTR_TIMEOUT, p.timeout_s) == 0) &&
            nla_put_u64(m, NBD_ATTR_DEAD_CONN_TIMEOUT, p.dead_conn_timeout_s) == 0 &&
            (p.backend.empty() || nla_put_string(m, NBD_ATTR_BACKEND_IDENTIFIER, p.backend.c_str()) == 0);
  if (!ok || !put_sockets(m, p.fds)) return Status::Error(ENOMEM, "netlink: message too large");
  const std::string dev = "/dev/nbd" + std::to_string(p.index);
  Status s = send(sock.get(), std::move(*msg), "attach " + dev);
  if (s.code() == EBUSY) {
    const std::string owner = backend(p.index);
    return Status::Error(EBUSY, "attach " + dev + ": the device is already connected" +
                                    (owner.empty() ? "" : " to '" + owner + "'") +
                                    " (another hastnbd or nbd-client?); 'nbd-client -d " + dev +
                                    "' disconnects it, or configure another nbd.device");
  }
  if (s.code() == EPERM)
    return Status::Error(EPERM, "attach " + dev + ": permission denied (the daemon needs CAP_SYS_ADMIN)");
  return s;
}

Status reconfigure(const AttachParams& p, const std::vector<int>& our_ends, std::vector<bool>& taken) {
  taken.assign(our_ends.size(), false);
  // The kernel's ends are closed on every path: the hang-up check below
  // needs it, and an early failure must not leak them.
  struct CloseFds {
    const std::vector<int>& fds;
    bool done = false;
    void now() {
      if (done) return;
      for (int fd : fds) ::close(fd);
      done = true;
    }
    ~CloseFds() { now(); }
  } close_fds{p.fds};
  auto fam = open_family();
  if (!fam.ok()) return fam.status();
  auto& [sock, family] = *fam;
  auto msg = new_msg(family, NBD_CMD_RECONFIGURE);
  if (!msg.ok()) return msg.status();
  nl_msg* m = msg->get();
  bool ok = nla_put_u32(m, NBD_ATTR_INDEX, uint32_t(p.index)) == 0 &&
            (p.timeout_s == 0 || nla_put_u64(m, NBD_ATTR_TIMEOUT, p.timeout_s) == 0) &&
            (p.dead_conn_timeout_s == 0 || nla_put_u64(m, NBD_ATTR_DEAD_CONN_TIMEOUT, p.dead_conn_timeout_s) == 0) &&
            nla_put_string(m, NBD_ATTR_BACKEND_IDENTIFIER, p.backend.c_str()) == 0;
  if (!ok || (!p.fds.empty() && !put_sockets(m, p.fds))) return Status::Error(ENOMEM, "netlink: message too large");
  const std::string dev = "/dev/nbd" + std::to_string(p.index);
  Status s = send(sock.get(), std::move(*msg), "reconnect " + dev);
  close_fds.now();
  for (size_t i = 0; i < our_ends.size(); ++i) {
    // Hung up on: the kernel did not keep its end. (POLLIN alone is the
    // kernel already sending requests that waited for a connection.)
    pollfd pfd{our_ends[i], POLLRDHUP, 0};
    taken[i] = s.ok() && ::poll(&pfd, 1, 0) >= 0 && (pfd.revents & (POLLRDHUP | POLLHUP)) == 0;
  }
  if (s.code() == EINVAL) {
    const std::string owner = backend(p.index);
    if (owner.empty()) return Status::Error(EINVAL, "reconnect " + dev + ": the device is not connected");
    if (owner != p.backend)
      return Status::Error(EINVAL, "reconnect " + dev + ": the device is served by '" + owner + "', not '" + p.backend +
                                       "'; it is not taken over");
  }
  if (s.code() == EPERM)
    return Status::Error(EPERM, "reconnect " + dev + ": permission denied (the daemon needs CAP_SYS_ADMIN)");
  return s;
}

Status disconnect(int index) {
  auto fam = open_family();
  if (!fam.ok()) return fam.status();
  auto& [sock, family] = *fam;
  auto msg = new_msg(family, NBD_CMD_DISCONNECT);
  if (!msg.ok()) return msg.status();
  if (nla_put_u32(msg->get(), NBD_ATTR_INDEX, uint32_t(index)) != 0)
    return Status::Error(ENOMEM, "netlink: message too large");
  return send(sock.get(), std::move(*msg), "detach /dev/nbd" + std::to_string(index));
}

// The driver creates the pid attribute when a device starts and removes it
// when it is torn down.
bool connected(int index) { return ::access(sys_block(index, "pid").c_str(), F_OK) == 0; }

std::string backend(int index) { return connected(index) ? read_line(sys_block(index, "backend")) : ""; }

std::string users(const std::string& path, int index) {
  std::string out;
  auto add = [&](const std::string& what) { out += (out.empty() ? "" : "; ") + what; };

  std::string holders;
  if (DIR* d = ::opendir(sys_block(index, "holders").c_str())) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') holders += (holders.empty() ? "" : ", ") + std::string(e->d_name);
    ::closedir(d);
  }
  if (!holders.empty()) add("held by " + holders);

  // Mounts, swap, md and device-mapper claim the device exclusively.
  int fd = ::open(path.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC | O_NONBLOCK);
  if (fd >= 0) ::close(fd);
  else if (errno == EBUSY) add("mounted or held exclusively (opening it with O_EXCL says busy)");

  // Plain opens (a database on the raw device, dd) show only in /proc.
  const std::string self = std::to_string(::getpid());
  if (DIR* proc = ::opendir("/proc")) {
    unsigned listed = 0;
    while (dirent* p = ::readdir(proc)) {
      if (p->d_name[0] < '0' || p->d_name[0] > '9' || self == p->d_name) continue;
      const std::string fds = std::string("/proc/") + p->d_name + "/fd";
      DIR* fdd = ::opendir(fds.c_str());
      if (!fdd) continue;
      bool uses = false;
      while (dirent* f = ::readdir(fdd)) {
        if (f->d_name[0] == '.') continue;
        char target[256];
        ssize_t n = ::readlink((fds + "/" + f->d_name).c_str(), target, sizeof target - 1);
        if (n <= 0) continue;
        std::string t(target, size_t(n));
        // /dev/nbdN itself or one of its partitions (/dev/nbdNpK).
        if (t.rfind(path, 0) == 0 && (t.size() == path.size() || t[path.size()] == 'p')) uses = true;
      }
      ::closedir(fdd);
      if (uses && listed++ < 5)
        add("open by pid " + std::string(p->d_name) + " (" + read_line(std::string("/proc/") + p->d_name + "/comm") +
            ")");
    }
    ::closedir(proc);
    if (listed > 5) add("and " + std::to_string(listed - 5) + " more processes");
  }
  return out;
}

}  // namespace hastnbd::kernel_nbd
