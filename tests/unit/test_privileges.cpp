#include <catch2/catch.hpp>
#include <linux/capability.h>

#include "hastnbd/config/config.h"
#include "hastnbd/daemon/privileges.h"

using namespace hastnbd;

TEST_CASE("capabilities kept after start-up", "[privileges]") {
  ResourceConfig c;
  c.listen = Address{"10.0.0.1", 8457};
  c.remote = Address{"10.0.0.2", 8457};
  CHECK(needed_capabilities(c).empty());
  CHECK(capability_names(needed_capabilities(c)) == "none");

  c.nbd.device = "/dev/nbd0";
  CHECK(needed_capabilities(c) == std::vector<int>{CAP_SYS_PTRACE, CAP_SYS_ADMIN});  // sorted by number
  CHECK(capability_names(needed_capabilities(c)) == "sys_ptrace,sys_admin");

  SECTION("a port below 1024 on any listener we bind later") {
    c.nbd.device.clear();
    c.listen = Address{"10.0.0.1", 843};
    CHECK(needed_capabilities(c) == std::vector<int>{CAP_NET_BIND_SERVICE});
    c.listen = Address{"10.0.0.1", 8457};
    c.nbd.listen = Address{"127.0.0.1", 0};  // 0 = any port: no privilege needed
    CHECK(needed_capabilities(c).empty());
    c.source = Address{"10.0.0.1", 1023};
    CHECK(needed_capabilities(c) == std::vector<int>{CAP_NET_BIND_SERVICE});
  }
  SECTION("a remote below 1024 needs nothing: connecting is unprivileged") {
    c.nbd.device.clear();
    c.remote = Address{"10.0.0.2", 80};
    CHECK(needed_capabilities(c).empty());
  }
}

TEST_CASE("nbd device paths", "[privileges][nbd]") {
  CHECK(*nbd_device_index("/dev/nbd0") == 0);
  CHECK(*nbd_device_index("/dev/nbd15") == 15);
  for (const char* bad : {"/dev/nbd", "/dev/nbd0p1", "/dev/vdb", "/dev/nbdx", "nbd0", "/dev/nbd-1", "/dev/nbd1234567"})
    CHECK(nbd_device_index(bad).status().code() == EINVAL);
}
