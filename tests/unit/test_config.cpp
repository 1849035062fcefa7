// Config parsing: the cascade, every validation error with its file:line:key,
// the cross-checks, and the shipped example file.

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "hastnbd/config/config.h"

using namespace hastnbd;

namespace {

// The smallest valid file; error tests splice one bad line into files like it.
const char* const kMinimal = R"(resources:
  data:
    nodes:
      a: {local: /dev/vdb}
)";

Result<ResourceConfig> parse(const std::string& yaml, std::string_view resource = "data",
                             std::string_view node = "a") {
  return parse_resource_config(yaml, "t.yaml", resource, node);
}

ResourceConfig parse_ok(const std::string& yaml, std::string_view resource = "data",
                        std::string_view node = "a") {
  auto r = parse(yaml, resource, node);
  INFO(r.status().message());
  REQUIRE(r.ok());
  return *r;
}

// The error message; also checks the names API rejects the file the same way.
std::string error_of(const std::string& yaml, std::string_view resource = "data",
                     std::string_view node = "a") {
  auto r = parse(yaml, resource, node);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() != 0);
  auto names = parse_resource_names(yaml, "t.yaml");
  if (r.status().code() == EINVAL) {
    REQUIRE_FALSE(names.ok());
    CHECK(names.status().message() == r.status().message());
  }
  return r.status().message();
}

// A file whose data resource has one extra line at resource level (line 3).
std::string with_resource_line(const std::string& line) {
  return "resources:\n  data:\n    " + line + "\n    nodes:\n      a: {local: /dev/vdb}\n";
}

std::filesystem::path source_root() {
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
}

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("config: cascade node over resource over defaults over built-in", "[config]") {
  const std::string yaml = R"(defaults:
  replication: async
  compression: hole
  checksum: none
  timeout: 5
  run_dir: /run/d
  state_dir: /var/d
  exec: /usr/bin/hook-d
  extent_size: 64KiB
  keepdirty: 10
  metaflush: false
  sync_rate: 10MiB
  verify_rate: 20MiB
  sync_compare: false
  track_granule: 16KiB
  max_inflight: 2MiB
  psk: secret-d-0123456789abcdef-0123456789
  nbd: {connections: 2}
resources:
  data:
    replication: memsync
    timeout: 30
    exec: /usr/bin/hook-r
    size: 1GiB
    nbd: {device: /dev/nbd3}
    nodes:
      a:
        timeout: 40
        local: /dev/vdb
        listen: "192.0.2.1:8457"
        remote: "[2001:db8::2]:8457"
        nbd: {listen: "127.0.0.1:10809", connections: 4}
        keepdirty: 0
      b:
        local: /dev/vdc
        listen: "[2001:db8::2]:8457"
        remote: "192.0.2.1:8457"
)";
  ResourceConfig a = parse_ok(yaml, "data", "a");
  CHECK(a.config_path == "t.yaml");
  CHECK(a.name == "data");
  CHECK(a.node == "a");
  CHECK(a.replication == Replication::kMemsync);  // resource over defaults
  CHECK(a.compression == Compression::kHole);     // defaults
  CHECK(a.checksum == Checksum::kNone);
  CHECK(a.timeout == 40);  // node over resource
  CHECK(a.run_dir == "/run/d");
  CHECK(a.state_dir == "/var/d");
  CHECK(a.exec == "/usr/bin/hook-r");
  CHECK(a.extent_size == 64 * 1024);
  CHECK(a.keepdirty == 0);
  CHECK_FALSE(a.metaflush);
  CHECK(a.sync_rate == 10 << 20);
  CHECK(a.verify_rate == 20 << 20);
  CHECK_FALSE(a.sync_compare);
  CHECK(a.track_granule == 16384);
  CHECK(a.max_inflight == 2 << 20);
  REQUIRE(a.size.has_value());
  CHECK(*a.size == 1ull << 30);
  CHECK(a.psk == "secret-d-0123456789abcdef-0123456789");
  CHECK(a.local == "/dev/vdb");
  REQUIRE(a.listen.has_value());
  CHECK(a.listen->to_string() == "192.0.2.1:8457");
  REQUIRE(a.remote.has_value());
  CHECK(a.remote->host == "2001:db8::2");
  CHECK(a.remote->port == 8457);
  CHECK(a.meta == "/var/d/data.meta");
  CHECK(a.nbd.socket == "/run/d/data.sock");
  REQUIRE(a.nbd.listen.has_value());
  CHECK(a.nbd.listen->to_string() == "127.0.0.1:10809");
  CHECK(a.nbd.device == "/dev/nbd3");  // nbd keys merge across levels
  CHECK(a.nbd.connections == 4);
  CHECK(a.control_path() == "/run/d/data.ctl");

  ResourceConfig b = parse_ok(yaml, "data", "b");
  CHECK(b.node == "b");
  CHECK(b.timeout == 30);
  CHECK(b.keepdirty == 10);
  CHECK(b.local == "/dev/vdc");
  CHECK(b.nbd.connections == 2);
  CHECK_FALSE(b.nbd.listen.has_value());
  CHECK(b.remote->to_string() == "192.0.2.1:8457");
}

TEST_CASE("config: built-in defaults and default paths", "[config]") {
  ResourceConfig c = parse_ok(kMinimal);
  ResourceConfig builtin;
  CHECK(c.replication == Replication::kFullsync);
  CHECK(c.compression == Compression::kLz4);
  CHECK(c.checksum == Checksum::kXxh3);
  CHECK(c.timeout == builtin.timeout);
  CHECK(c.run_dir == "/run/hastnbd");
  CHECK(c.state_dir == "/var/lib/hastnbd");
  CHECK(c.exec.empty());
  CHECK(c.extent_size == 2u << 20);
  CHECK(c.keepdirty == 1024);
  CHECK(c.metaflush);
  CHECK(c.sync_rate == 0);
  CHECK(c.verify_rate == 100u << 20);
  CHECK(c.sync_compare);
  CHECK(c.track_granule == 4096);
  CHECK(c.max_inflight == 64u << 20);
  CHECK_FALSE(c.size.has_value());
  CHECK(c.psk.empty());
  CHECK_FALSE(c.listen.has_value());
  CHECK_FALSE(c.remote.has_value());
  CHECK(c.meta == "/var/lib/hastnbd/data.meta");
  CHECK(c.nbd.socket == "/run/hastnbd/data.sock");
  CHECK(c.nbd.device.empty());
  CHECK(c.nbd.connections == 1);
  CHECK(c.control_path() == "/run/hastnbd/data.ctl");
}

TEST_CASE("config: explicit meta and socket win over the directories", "[config]") {
  ResourceConfig c = parse_ok(R"(defaults: {run_dir: /r, state_dir: /s}
resources:
  data:
    meta: /m/data.meta
    nbd: {socket: /n/data.sock}
    nodes: {a: {local: /dev/vdb}}
)");
  CHECK(c.meta == "/m/data.meta");
  CHECK(c.nbd.socket == "/n/data.sock");
  CHECK(c.control_path() == "/r/data.ctl");
}

TEST_CASE("config: two nodes on one machine", "[config]") {
  const std::string yaml = R"(resources:
  data:
    nodes:
      a:
        local: /tmp/t/a.img
        run_dir: /tmp/t/a/run
        state_dir: /tmp/t/a/state
        listen: "127.0.0.1:18457"
        remote: "127.0.0.1:18458"
        nbd: {listen: "127.0.0.1:10809"}
      b:
        local: /tmp/t/b.img
        run_dir: /tmp/t/b/run
        state_dir: /tmp/t/b/state
        listen: "127.0.0.1:18458"
        remote: "127.0.0.1:18457"
        nbd: {listen: "127.0.0.1:10810"}
)";
  ResourceConfig a = parse_ok(yaml, "data", "a");
  ResourceConfig b = parse_ok(yaml, "data", "b");
  CHECK(a.local == "/tmp/t/a.img");
  CHECK(b.local == "/tmp/t/b.img");
  CHECK(a.meta == "/tmp/t/a/state/data.meta");
  CHECK(b.meta == "/tmp/t/b/state/data.meta");
  CHECK(a.nbd.socket == "/tmp/t/a/run/data.sock");
  CHECK(b.nbd.socket == "/tmp/t/b/run/data.sock");
  CHECK(a.control_path() == "/tmp/t/a/run/data.ctl");
  CHECK(b.control_path() == "/tmp/t/b/run/data.ctl");
  CHECK(*a.listen == *b.remote);
  CHECK(*b.listen == *a.remote);
}

TEST_CASE("config: resource names in file order", "[config]") {
  const std::string yaml = R"(resources:
  zeta: {nodes: {a: {local: /dev/vdb}}}
  alpha: {nodes: {a: {local: /dev/vdc}}}
  mid.dle-1_x: {nodes: {a: {local: /dev/vdd}}}
)";
  auto names = parse_resource_names(yaml, "t.yaml");
  REQUIRE(names.ok());
  CHECK(*names == std::vector<std::string>{"zeta", "alpha", "mid.dle-1_x"});
  CHECK(parse_ok(yaml, "alpha").local == "/dev/vdc");
}

TEST_CASE("config: forms YAML allows", "[config]") {
  SECTION("null node section inherits everything") {
    ResourceConfig c = parse_ok("resources:\n  data:\n    local: /dev/vdb\n    nodes:\n      a:\n");
    CHECK(c.local == "/dev/vdb");
  }
  SECTION("booleans") {
    for (const char* t : {"true", "yes", "on", "True", "YES"}) {
      CHECK(parse_ok(with_resource_line(std::string("metaflush: ") + t)).metaflush);
    }
    for (const char* f : {"false", "no", "off", "False"}) {
      CHECK_FALSE(parse_ok(with_resource_line(std::string("metaflush: ") + f)).metaflush);
    }
  }
  SECTION("quoted numbers and comments") {
    ResourceConfig c = parse_ok(with_resource_line("timeout: \"7\"  # seconds"));
    CHECK(c.timeout == 7);
  }
  SECTION("empty exec and device override the ones above") {
    ResourceConfig c = parse_ok(R"(defaults: {exec: /bin/hook, nbd: {device: /dev/nbd0}}
resources:
  data:
    nodes: {a: {local: /dev/vdb, exec: "", nbd: {device: ""}}}
)");
    CHECK(c.exec.empty());
    CHECK(c.nbd.device.empty());
  }
  SECTION("explicit document markers") {
    CHECK(parse_ok(std::string("---\n") + kMinimal + "...\n").local == "/dev/vdb");
  }
}

TEST_CASE("config: empty node name means the host name", "[config]") {
  const std::string me = default_node_name();
  REQUIRE_FALSE(me.empty());
  const std::string yaml = "resources:\n  data:\n    nodes:\n      " + me + ": {local: /dev/vdb}\n";
  CHECK(parse_ok(yaml, "data", "").node == me);
}

TEST_CASE("config: default_node_name is the short host name", "[config]") {
  char buf[256] = {};
  REQUIRE(gethostname(buf, sizeof buf - 1) == 0);
  const std::string full(buf);
  const std::string name = default_node_name();
  CHECK(name.find('.') == std::string::npos);
  CHECK(full.rfind(name, 0) == 0);
  CHECK((full.size() == name.size() || full[name.size()] == '.'));
}

TEST_CASE("config: enum names", "[config]") {
  CHECK(std::string(to_string(Replication::kFullsync)) == "fullsync");
  CHECK(std::string(to_string(Replication::kMemsync)) == "memsync");
  CHECK(std::string(to_string(Replication::kAsync)) == "async");
  CHECK(std::string(to_string(Compression::kNone)) == "none");
  CHECK(std::string(to_string(Compression::kHole)) == "hole");
  CHECK(std::string(to_string(Compression::kLz4)) == "lz4");
  CHECK(std::string(to_string(Checksum::kNone)) == "none");
  CHECK(std::string(to_string(Checksum::kXxh3)) == "xxh3");
}

TEST_CASE("config: parse_size", "[config]") {
  struct Case {
    const char* text;
    uint64_t bytes;
  };
  const Case good[] = {
      {"0", 0},
      {"4096", 4096},
      {"512B", 512},
      {"512b", 512},
      {"64KiB", 64 << 10},
      {"64K", 64 << 10},
      {"64KB", 64 << 10},
      {"64k", 64 << 10},
      {"64kib", 64 << 10},
      {"2MiB", 2 << 20},
      {"2M", 2 << 20},
      {"2mb", 2 << 20},
      {"1GiB", 1ull << 30},
      {"1G", 1ull << 30},
      {"1TiB", 1ull << 40},
      {"3TB", 3ull << 40},
      {"007", 7},
      {"16777215TiB", 16777215ull << 40},
      {"18446744073709551615", UINT64_MAX},
  };
  for (const Case& c : good) {
    INFO(c.text);
    auto r = parse_size(c.text);
    REQUIRE(r.ok());
    CHECK(*r == c.bytes);
  }
  const char* bad[] = {"",
                       "B",
                       "KiB",
                       "-1",
                       "+1",
                       "1.5GiB",
                       "1,024",
                       " 1",
                       "1 ",
                       "1 KiB",
                       "2XB",
                       "1KiBB",
                       "1iB",
                       "0x10",
                       "1PiB",
                       "1e3",
                       "16777216TiB",
                       "18446744073709551616",
                       "99999999999999999999999"};
  for (const char* text : bad) {
    INFO(text);
    auto r = parse_size(text);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == EINVAL);
  }
  CHECK(parse_size("2XB").status().message() == "'2XB' is not a size (examples: 4096, 64KiB, 2MiB, 1GiB)");
  CHECK(parse_size("16777216TiB").status().message() == "'16777216TiB' is too large for a 64-bit byte count");
}

TEST_CASE("config: parse_address", "[config]") {
  struct Case {
    const char* text;
    const char* host;
    uint16_t port;
    const char* canonical;
  };
  const Case good[] = {
      {"1.2.3.4:8457", "1.2.3.4", 8457, "1.2.3.4:8457"},
      {"0.0.0.0:1", "0.0.0.0", 1, "0.0.0.0:1"},
      {"[::1]:8457", "::1", 8457, "[::1]:8457"},
      {"[::]:65535", "::", 65535, "[::]:65535"},
      {"[2001:db8::1]:80", "2001:db8::1", 80, "[2001:db8::1]:80"},
      {"host.example:80", "host.example", 80, "host.example:80"},
      {"localhost:10809", "localhost", 10809, "localhost:10809"},
      {"a-b_c.example.org:1", "a-b_c.example.org", 1, "a-b_c.example.org:1"},
  };
  for (const Case& c : good) {
    INFO(c.text);
    auto r = parse_address(c.text);
    REQUIRE(r.ok());
    CHECK(r->host == c.host);
    CHECK(r->port == c.port);
    CHECK(r->to_string() == c.canonical);
    auto again = parse_address(r->to_string());
    REQUIRE(again.ok());
    CHECK(*again == *r);
  }
  const char* bad[] = {"",
                       "1.2.3.4",
                       "1.2.3.4:",
                       "1.2.3.4:0",
                       "1.2.3.4:65536",
                       "1.2.3.4:80x",
                       "1.2.3.4:-1",
                       ":8457",
                       "::1:8457",
                       "::1",
                       "[::1]",
                       "[::1]8457",
                       "[::1:8457",
                       "[1.2.3.4]:80",
                       "[]:80",
                       "[host]:80",
                       "1.2.3.400:80",
                       "bad host:80",
                       "-bad.example:80",
                       "a..b:80",
                       "host.:80",
                       "1.2.3.4:080000"};
  for (const char* text : bad) {
    INFO(text);
    auto r = parse_address(text);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == EINVAL);
  }
  CHECK(parse_address("::1:8457").status().message() ==
        "'::1:8457' is an IPv6 address without [ ] "
        "(examples: 192.0.2.1:8457, [2001:db8::1]:8457, host.example:8457)");
  CHECK(parse_address("1.2.3.4").status().message().starts_with("'1.2.3.4' has no :PORT (examples:"));
}

TEST_CASE("config: unknown keys", "[config]") {
  CHECK(error_of("defaults:\n  replicaton: fullsync\n" + std::string(kMinimal)) ==
        "t.yaml:2: defaults.replicaton: unknown key; did you mean 'replication'?");
  CHECK(error_of(with_resource_line("colour: blue"))
            .starts_with("t.yaml:3: resources.data.colour: unknown key (known keys: replication, "
                         "compression, checksum, "));
  CHECK(error_of(with_resource_line("colour: blue")).ends_with(", meta, nbd, metrics, tls, nodes)"));
  CHECK(error_of("resources:\n  data:\n    nodes:\n      a:\n        local: /dev/vdb\n        lisen: "
                 "\"1.2.3.4:5\"\n") ==
        "t.yaml:6: resources.data.nodes.a.lisen: unknown key; did you mean 'listen'?");
  CHECK(error_of(with_resource_line("nbd: {sock: /x}")) ==
        "t.yaml:3: resources.data.nbd.sock: unknown key; did you mean 'socket'?");
  CHECK(error_of(std::string(kMinimal) + "default: {}\n") ==
        "t.yaml:5: default: unknown key; did you mean 'defaults'?");
  // A node section takes settings only: `nodes` belongs to the resource.
  CHECK(error_of("resources:\n  data:\n    nodes:\n      a:\n        local: /dev/vdb\n        nodes: {}\n")
            .starts_with("t.yaml:6: resources.data.nodes.a.nodes: unknown key"));
}

TEST_CASE("config: wrong types", "[config]") {
  CHECK(error_of(with_resource_line("timeout: [1, 2]")) ==
        "t.yaml:3: resources.data.timeout: expected a single value, got a list");
  CHECK(error_of(with_resource_line("local: {path: /dev/vdb}")) ==
        "t.yaml:3: resources.data.local: expected a single value, got a map");
  CHECK(error_of(with_resource_line("psk:")) == "t.yaml:3: resources.data.psk: has no value");
  CHECK(error_of(with_resource_line("nbd: /run/x.sock")) ==
        "t.yaml:3: resources.data.nbd: expected a map of KEY: VALUE, got '/run/x.sock'");
  CHECK(error_of("resources:\n  data:\n    nodes: [a, b]\n") ==
        "t.yaml:3: resources.data.nodes: expected a map of KEY: VALUE, got a list");
  CHECK(error_of("defaults: fast\n" + std::string(kMinimal)) ==
        "t.yaml:1: defaults: expected a map of KEY: VALUE, got 'fast'");
  CHECK(error_of("resources:\n  data:\n    ? [x]\n    : 1\n    nodes: {a: {local: /dev/vdb}}\n") ==
        "t.yaml:3: resources.data: keys must be plain names, got a list");
  CHECK(error_of("- a\n- b\n") ==
        "t.yaml:1: top level: expected a map with 'defaults' and 'resources', got a list");
}

TEST_CASE("config: bad enum values", "[config]") {
  CHECK(error_of(with_resource_line("replication: fast")) ==
        "t.yaml:3: resources.data.replication: 'fast' is not one of fullsync, memsync, async");
  CHECK(error_of(with_resource_line("compression: zstd")) ==
        "t.yaml:3: resources.data.compression: 'zstd' is not one of none, hole, lz4");
  CHECK(error_of(with_resource_line("checksum: crc32")) ==
        "t.yaml:3: resources.data.checksum: 'crc32' is not one of none, xxh3");
  CHECK(error_of(with_resource_line("replication: FullSync")) ==
        "t.yaml:3: resources.data.replication: 'FullSync' is not one of fullsync, memsync, async");
  CHECK(error_of(with_resource_line("metaflush: maybe")) ==
        "t.yaml:3: resources.data.metaflush: 'maybe' is not true or false");
}

TEST_CASE("config: bad sizes", "[config]") {
  CHECK(error_of(with_resource_line("extent_size: 2XB")) ==
        "t.yaml:3: resources.data.extent_size: '2XB' is not a size (examples: 4096, 64KiB, 2MiB, 1GiB)");
  CHECK(error_of(with_resource_line("sync_rate: fast")) ==
        "t.yaml:3: resources.data.sync_rate: 'fast' is not a size (examples: 4096, 64KiB, 2MiB, 1GiB)");
  for (const char* e : {"3MiB", "32KiB", "2GiB", "0"}) {
    INFO(e);
    CHECK(error_of(with_resource_line(std::string("extent_size: ") + e)) ==
          "t.yaml:3: resources.data.extent_size: '" + std::string(e) +
              "' is not a power of two from 64KiB to 1GiB");
  }
  CHECK(parse_ok(with_resource_line("extent_size: 1GiB")).extent_size == 1ull << 30);
  CHECK(parse_ok(with_resource_line("extent_size: 65536")).extent_size == 65536);
  CHECK(error_of(with_resource_line("size: 1000")) ==
        "t.yaml:3: resources.data.size: '1000' is not a positive multiple of 512 bytes");
  CHECK(error_of(with_resource_line("size: 0")) ==
        "t.yaml:3: resources.data.size: '0' is not a positive multiple of 512 bytes");
  CHECK(*parse_ok(with_resource_line("size: 512")).size == 512);
  CHECK(error_of(with_resource_line("max_inflight: 4096")) ==
        "t.yaml:3: resources.data.max_inflight: '4096' is too small (at least 1MiB)");
  CHECK(parse_ok(with_resource_line("max_inflight: 1MiB")).max_inflight == 1 << 20);
  CHECK(parse_ok(with_resource_line("sync_rate: 0")).sync_rate == 0);
  CHECK(parse_ok(with_resource_line("track_granule: 0")).track_granule == 0);
  CHECK(parse_ok(with_resource_line("after_split_brain: discard-least-changes")).after_split_brain ==
        SplitBrainPolicy::kDiscardLeastChanges);
  CHECK(parse_ok(kMinimal).after_split_brain == SplitBrainPolicy::kManual);
  CHECK_THAT(error_of("resources:\n  data:\n    nodes:\n      a: {local: /dev/vdb, listen: \"127.0.0.1:7001\", remote: "
                      "\"127.0.0.1:7002\", after_split_brain: discard-least-changes}\n      b: {local: /dev/vdc, listen: "
                      "\"127.0.0.1:7002\", remote: \"127.0.0.1:7001\"}\n"),
             Catch::Contains("after_split_brain is discard-least-changes for node 'a' but manual for node 'b'"));
  CHECK_THAT(error_of(with_resource_line("after_split_brain: discard-newer")),
             Catch::Contains("resources.data.after_split_brain") && Catch::Contains("discard-younger-primary"));
  CHECK(parse_ok(with_resource_line("track_granule: 64KiB")).track_granule == 65536);
  for (const char* bad : {"2KiB", "128KiB", "12KiB", "x"}) {
    INFO(bad);
    CHECK_THAT(error_of(with_resource_line(std::string("track_granule: ") + bad)),
               Catch::Contains("resources.data.track_granule"));
  }
}

TEST_CASE("config: out of range numbers", "[config]") {
  struct Case {
    const char* line;
    const char* message;
  };
  const Case cases[] = {
      {"timeout: 0", "timeout: '0' is not a whole number from 1 to 3600"},
      {"timeout: 3601", "timeout: '3601' is not a whole number from 1 to 3600"},
      {"timeout: -1", "timeout: '-1' is not a whole number from 1 to 3600"},
      {"timeout: 2.5", "timeout: '2.5' is not a whole number from 1 to 3600"},
      {"timeout: 99999999999999999999",
       "timeout: '99999999999999999999' is not a whole number from 1 to 3600"},
      {"keepdirty: 1000001", "keepdirty: '1000001' is not a whole number from 0 to 1000000"},
      {"keepdirty: lots", "keepdirty: 'lots' is not a whole number from 0 to 1000000"},
      {"nbd: {connections: 0}", "nbd.connections: '0' is not a whole number from 1 to 16"},
      {"nbd: {connections: 17}", "nbd.connections: '17' is not a whole number from 1 to 16"},
  };
  for (const Case& c : cases) {
    INFO(c.line);
    CHECK(error_of(with_resource_line(c.line)) == std::string("t.yaml:3: resources.data.") + c.message);
  }
  CHECK(parse_ok(with_resource_line("timeout: 3600")).timeout == 3600);
  CHECK(parse_ok(with_resource_line("keepdirty: 1000000")).keepdirty == 1000000);
  CHECK(parse_ok(with_resource_line("nbd: {connections: 16}")).nbd.connections == 16);
}

TEST_CASE("config: bad paths and devices", "[config]") {
  struct Case {
    const char* line;
    const char* message;
  };
  const Case cases[] = {
      {"run_dir: run", "run_dir: 'run' is not an absolute path (it must start with /)"},
      {"state_dir: \"\"", "state_dir: '' is not an absolute path (it must start with /)"},
      {"local: dev/vdb", "local: 'dev/vdb' is not an absolute path (it must start with /)"},
      {"meta: data.meta", "meta: 'data.meta' is not an absolute path (it must start with /)"},
      {"nbd: {socket: x.sock}", "nbd.socket: 'x.sock' is not an absolute path (it must start with /)"},
      {"nbd: {device: /tmp/nbd0}", "nbd.device: '/tmp/nbd0' is not an nbd device (like /dev/nbd0)"},
      {"nbd: {device: /dev/}", "nbd.device: '/dev/' is not an nbd device (like /dev/nbd0)"},
      {"nbd: {device: /dev/vdb}", "nbd.device: '/dev/vdb' is not an nbd device (like /dev/nbd0)"},
      {"nbd: {device: /dev/nbd0p1}", "nbd.device: '/dev/nbd0p1' is not an nbd device (like /dev/nbd0)"},
      {"local: \"/dev/v\\0db\"", "local: contains a NUL character"},
  };
  for (const Case& c : cases) {
    INFO(c.line);
    CHECK(error_of(with_resource_line(c.line)) == std::string("t.yaml:3: resources.data.") + c.message);
  }
}

TEST_CASE("config: bad addresses", "[config]") {
  const std::string yaml = R"(resources:
  data:
    nodes:
      a: {local: /dev/vdb, listen: "192.0.2.1:8457"}
      b:
        local: /dev/vdb
        listen: "::1:8457"
)";
  CHECK(error_of(yaml) ==
        "t.yaml:7: resources.data.nodes.b.listen: '::1:8457' is an IPv6 address without [ ] "
        "(examples: 192.0.2.1:8457, [2001:db8::1]:8457, host.example:8457)");
  CHECK(error_of(with_resource_line("remote: 192.0.2.1"))
            .starts_with("t.yaml:3: resources.data.remote: '192.0.2.1' has no :PORT (examples: "));
  CHECK(error_of(with_resource_line("nbd: {listen: \"[::1]:0\"}"))
            .starts_with("t.yaml:3: resources.data.nbd.listen: '[::1]:0' needs a port from 1 to 65535"));
}

TEST_CASE("config: bad resource and node names", "[config]") {
  CHECK(error_of("resources:\n  bad name: {nodes: {a: {local: /dev/vdb}}}\n", "bad name") ==
        "t.yaml:2: resources: 'bad name' is not a valid resource name (1 to 64 of A-Z a-z 0-9 _ . -)");
  const std::string long_name(65, 'r');
  CHECK(error_of("resources:\n  " + long_name + ": {nodes: {a: {local: /dev/vdb}}}\n")
            .starts_with("t.yaml:2: resources: '" + long_name.substr(0, 60) +
                         "...' is not a valid resource name"));
  CHECK(parse_ok("resources:\n  " + long_name.substr(1) + ": {nodes: {a: {local: /dev/vdb}}}\n",
                 long_name.substr(1))
            .name.size() == 64);
  CHECK(error_of("resources:\n  data:\n    nodes:\n      a/b: {local: /dev/vdb}\n") ==
        "t.yaml:4: resources.data.nodes: 'a/b' is not a valid node name (1 to 64 of A-Z a-z 0-9 _ . -)");
  CHECK(error_of("resources:\n  data:\n    nodes:\n      \"\": {local: /dev/vdb}\n") ==
        "t.yaml:4: resources.data.nodes: '' is not a valid node name (1 to 64 of A-Z a-z 0-9 _ . -)");
}

TEST_CASE("config: duplicate keys", "[config]") {
  CHECK(
      error_of("resources:\n  data:\n    timeout: 5\n    timeout: 6\n    nodes: {a: {local: /dev/vdb}}\n") ==
      "t.yaml:4: resources.data.timeout: duplicate key (first at line 3)");
  CHECK(error_of(std::string(kMinimal) + "  data: {nodes: {a: {local: /dev/vdc}}}\n") ==
        "t.yaml:5: resources.data: duplicate key (first at line 2)");
}

TEST_CASE("config: YAML syntax errors", "[config]") {
  std::string e = error_of("resources:\n  data:\n    nodes: {a: {local: /dev/vdb}\n");
  CHECK(e.starts_with("t.yaml:"));
  CHECK(e.find(": YAML syntax error: ") != std::string::npos);
  e = error_of("resources:\n  data:\n    nodes:\n      a: {local: /dev/vdb}\n     bad: indent\n");
  CHECK(e.starts_with("t.yaml:5: YAML syntax error: "));
  e = error_of("resources:\n\tdata: {}\n");
  CHECK(e.find("YAML syntax error") != std::string::npos);
}

TEST_CASE("config: hostile input is refused before yaml-cpp recurses", "[config]") {
  SECTION("too large") {
    std::string big = kMinimal + std::string((1 << 20), '#');
    auto r = parse(big);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().message() ==
          "t.yaml: " + std::to_string(big.size()) + " bytes is more than the 1 MiB a config file may have");
    std::string fits = kMinimal + std::string((1 << 20) - std::string(kMinimal).size(), '#');
    CHECK(parse(fits).ok());
  }
  SECTION("deep flow nesting") {
    CHECK(error_of("resources: " + std::string(33, '[') + std::string(33, ']') + "\n") ==
          "t.yaml:1: YAML nested deeper than 32 levels");
    CHECK(error_of(std::string(200000, '[')) == "t.yaml:1: YAML nested deeper than 32 levels");
    CHECK(error_of(std::string(200000, '{')) == "t.yaml:1: YAML nested deeper than 32 levels");
  }
  SECTION("deep block nesting") {
    std::string deep;
    for (int i = 0; i < 40; ++i) deep += std::string(i, ' ') + "k" + std::to_string(i) + ":\n";
    CHECK(error_of(deep) == "t.yaml:33: YAML nested deeper than 32 levels");
    std::string list;
    for (int i = 0; i < 1400; ++i) list += std::string(i, ' ') + "- \n";
    CHECK(error_of(list) == "t.yaml:33: YAML nested deeper than 32 levels");
  }
  SECTION("anchors and aliases") {
    const char* refusal = "YAML anchors (&name) and aliases (*name) are not supported; write the values out";
    CHECK(error_of("defaults: &d {timeout: 5}\n" + std::string(kMinimal)) ==
          std::string("t.yaml:1: ") + refusal);
    CHECK(error_of("a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n") == std::string("t.yaml:1: ") + refusal);
    CHECK(error_of("base: &b {timeout: 5}\n" + with_resource_line("<<: *b")) ==
          std::string("t.yaml:1: ") + refusal);
    CHECK(error_of(with_resource_line("<<: *nowhere")) ==
          "t.yaml:3: YAML syntax error: the referenced anchor is not defined");
  }
  SECTION("several documents") {
    CHECK(error_of(std::string(kMinimal) + "---\n" + kMinimal) ==
          "t.yaml:5: a second YAML document ('---'); the file must hold one");
  }
  SECTION("NUL bytes") {
    std::string text = std::string(kMinimal) + "# x";
    text += '\0';
    CHECK(error_of(text) == "t.yaml:5: contains a NUL byte; a config file is text");
  }
}

TEST_CASE("config: missing sections", "[config]") {
  CHECK(error_of("") == "t.yaml:1: resources: missing; the file needs at least one resource");
  CHECK(error_of("# only a comment\n") ==
        "t.yaml:1: resources: missing; the file needs at least one resource");
  CHECK(error_of("defaults: {timeout: 5}\n") ==
        "t.yaml:1: resources: missing; the file needs at least one resource");
  CHECK(error_of("defaults: {}\nresources: {}\n") == "t.yaml:2: resources: no resources; add at least one");
  CHECK(error_of("resources:\n") == "t.yaml:1: resources: no resources; add at least one");
  CHECK(error_of("resources:\n  data:\n    timeout: 5\n")
            .starts_with("t.yaml:2: resources.data: has no 'nodes' section (one entry per node"));
  CHECK(error_of("resources:\n  data:\n    nodes: {}\n") ==
        "t.yaml:3: resources.data.nodes: no nodes; add one section per node");
}

TEST_CASE("config: a node section needs local after the cascade", "[config]") {
  CHECK(error_of("resources:\n  data:\n    nodes:\n      a: {local: /dev/vdb}\n      b: {timeout: 5}\n") ==
        "t.yaml:5: resources.data.nodes.b: no 'local' (the backing device or file); "
        "set it here, in resources.data or in defaults");
  CHECK(parse_ok("defaults: {local: /dev/vdb}\nresources:\n  data:\n    nodes: {a: }\n").local == "/dev/vdb");
}

TEST_CASE("config: missing resource or node", "[config]") {
  const std::string yaml = R"(resources:
  data:
    nodes:
      a: {local: /dev/vdb}
      b: {local: /dev/vdb}
  other:
    nodes: {a: {local: /dev/vdc}}
)";
  auto r = parse(yaml, "nope", "a");
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == ENOENT);
  CHECK(r.status().message() == "t.yaml: no resource 'nope' (resources: data, other)");

  r = parse(yaml, "data", "c");
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == ENOENT);
  CHECK(r.status().message() ==
        "t.yaml:3: resources.data.nodes: no section for node 'c' (nodes: a, b); use --node NAME");
}

TEST_CASE("config: long name lists in messages are cut short", "[config]") {
  std::string yaml = "resources:\n";
  for (int i = 0; i < 25; ++i) {
    yaml += "  r" + std::to_string(i) + ": {nodes: {a: {local: /dev/v" + std::to_string(i) + "}}}\n";
  }
  auto r = parse(yaml, "nope", "a");
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message() ==
        "t.yaml: no resource 'nope' (resources: r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13, "
        "r14, r15, r16, r17, r18, r19, ... (5 more))");
}

TEST_CASE("config: validation covers the whole file", "[config]") {
  // The error is in a resource and a node nobody asked for.
  const std::string yaml = R"(resources:
  data:
    nodes:
      a: {local: /dev/vdb}
      b: {local: /dev/vdb, timeout: never}
  other:
    replication: fast
    nodes: {a: {local: /dev/vdc}}
)";
  CHECK(error_of(yaml, "data", "a") ==
        "t.yaml:5: resources.data.nodes.b.timeout: 'never' is not a whole number from 1 to 3600");
  CHECK(error_of("defaults: {sync_rate: x}\n" + std::string(kMinimal))
            .starts_with("t.yaml:1: defaults.sync_rate: 'x' is not a size"));
  CHECK(error_of(std::string(kMinimal) +
                 "  other:\n    replication: fast\n    nodes: {b: {local: /dev/vdb}}\n") ==
        "t.yaml:6: resources.other.replication: 'fast' is not one of fullsync, memsync, async");
}

TEST_CASE("config: port conflicts on one node", "[config]") {
  SECTION("two resources on the same host and port") {
    const std::string yaml = R"(resources:
  data:
    nodes:
      a: {local: /dev/vdb, listen: "192.0.2.1:8457"}
  logs:
    nodes:
      a: {local: /dev/vdc, listen: "192.0.2.1:8457"}
)";
    CHECK(error_of(yaml) ==
          "t.yaml:7: resources.logs.nodes.a.listen: 192.0.2.1:8457 (resource logs) collides with "
          "192.0.2.1:8457 "
          "from resources.data.nodes.a.listen (line 4, resource data): node 'a' would listen twice on port "
          "8457");
  }
  SECTION("a wildcard collides with every host") {
    const std::string yaml = R"(resources:
  data:
    nodes:
      a: {local: /dev/vdb, listen: "192.0.2.1:8457"}
  logs:
    nodes:
      a: {local: /dev/vdc, listen: "[::]:8457"}
)";
    CHECK(error_of(yaml).starts_with(
        "t.yaml:7: resources.logs.nodes.a.listen: [::]:8457 (resource logs) collides with "
        "192.0.2.1:8457 from resources.data.nodes.a.listen (line 4, resource data)"));
    const std::string reversed = R"(resources:
  data:
    nodes:
      a: {local: /dev/vdb, listen: "0.0.0.0:8457"}
  logs:
    nodes:
      a: {local: /dev/vdc, listen: "192.0.2.1:8457"}
)";
    CHECK(error_of(reversed).starts_with(
        "t.yaml:7: resources.logs.nodes.a.listen: 192.0.2.1:8457 (resource logs) "
        "collides with 0.0.0.0:8457 from resources.data.nodes.a.listen (line 4"));
  }
  SECTION("listen and nbd.listen of one resource") {
    const std::string yaml = R"(resources:
  data:
    nbd:
      listen: "127.0.0.1:8457"
    nodes:
      a: {local: /dev/vdb, listen: "0.0.0.0:8457"}
)";
    CHECK(error_of(yaml).starts_with(
        "t.yaml:4: resources.data.nbd.listen: 127.0.0.1:8457 (resource data) collides "
        "with 0.0.0.0:8457 from resources.data.nodes.a.listen (line 6, resource data)"));
  }
  SECTION("a listen from defaults shared by two resources") {
    const std::string yaml = R"(defaults:
  listen: "192.0.2.1:8457"
resources:
  data: {nodes: {a: {local: /dev/vdb}}}
  logs: {nodes: {a: {local: /dev/vdc}}}
)";
    CHECK(
        error_of(yaml).starts_with("t.yaml:2: defaults.listen: 192.0.2.1:8457 (resource logs) collides with "
                                   "192.0.2.1:8457 from defaults.listen (line 2, resource data)"));
  }
  SECTION("equal IPv6 literals written differently") {
    const std::string yaml = R"(resources:
  data: {nodes: {a: {local: /dev/vdb, listen: "[::1]:8457"}}}
  logs: {nodes: {a: {local: /dev/vdc, listen: "[0:0::1]:8457"}}}
)";
    CHECK(error_of(yaml).starts_with("t.yaml:3: resources.logs.nodes.a.listen: [0:0::1]:8457"));
  }
  SECTION("no conflict: other node, other port or other host") {
    const std::string yaml = R"(defaults: {auth: none}
resources:
  data:
    nbd: {listen: "127.0.0.1:10809"}
    nodes:
      a: {local: /dev/vdb, listen: "192.0.2.1:8457"}
      b: {local: /dev/vdb, listen: "192.0.2.1:8457"}
  logs:
    nbd: {listen: "127.0.0.1:10810"}
    nodes:
      a: {local: /dev/vdc, listen: "192.0.2.1:8458"}
      b: {local: /dev/vdc, listen: "192.0.2.2:8457"}
)";
    CHECK(parse_ok(yaml, "logs", "b").listen->to_string() == "192.0.2.2:8457");
  }
}

TEST_CASE("config: two resources of one node on the same path", "[config]") {
  const std::string yaml = R"(resources:
  data:
    nodes:
      a: {local: /dev/vdb}
  logs:
    nodes:
      a: {local: /dev/vdb}
)";
  CHECK(error_of(yaml) ==
        "t.yaml:7: resources.logs.nodes.a.local: '/dev/vdb' is also used by resources.data.nodes.a.local "
        "(line 4, resource data) on node 'a'; each needs its own");
  CHECK(error_of("defaults: {meta: /var/lib/x.meta}\nresources:\n  data: {nodes: {a: {local: /dev/vdb}}}\n"
                 "  logs: {nodes: {a: {local: /dev/vdc}}}\n")
            .starts_with("t.yaml:1: defaults.meta: '/var/lib/x.meta' is also used by defaults.meta (line 1, "
                         "resource data)"));
}

TEST_CASE("config: load from files", "[config]") {
  SECTION("missing file") {
    auto r = load_resource_config("/nonexistent/hastnbd.yaml", "data", "a");
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == ENOENT);
    CHECK(r.status().message() == "/nonexistent/hastnbd.yaml: No such file or directory");
    auto n = load_resource_names("/nonexistent/hastnbd.yaml");
    REQUIRE_FALSE(n.ok());
    CHECK(n.status().code() == ENOENT);
  }
  SECTION("a directory") {
    auto r = load_resource_names("/");
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == EISDIR);
    CHECK(r.status().message() == "/: Is a directory");
  }
  SECTION("a real file, errors name it") {
    auto dir = std::filesystem::temp_directory_path() / ("hastnbd-test-config-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir);
    const std::string path = (dir / "h.yaml").string();
    std::ofstream(path) << kMinimal;
    auto r = load_resource_config(path, "data", "a");
    REQUIRE(r.ok());
    CHECK(r->config_path == path);
    auto n = load_resource_names(path);
    REQUIRE(n.ok());
    CHECK(*n == std::vector<std::string>{"data"});
    std::ofstream(path) << "resources:\n  data:\n    nodes: {a: {local: vdb}}\n";
    r = load_resource_config(path, "data", "a");
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().message().starts_with(
        path + ":3: resources.data.nodes.a.local: 'vdb' is not an absolute path"));
    std::filesystem::remove_all(dir);
  }
}

TEST_CASE("config: the shipped example file", "[config]") {
  const auto path = source_root() / "config" / "hastnbd.yaml";
  INFO(path.string());
  auto names = load_resource_names(path.string());
  INFO((names.ok() ? "" : names.status().message()));
  REQUIRE(names.ok());
  CHECK(*names == std::vector<std::string>{"data"});

  auto a = load_resource_config(path.string(), "data", "hosta");
  INFO((a.ok() ? "" : a.status().message()));
  REQUIRE(a.ok());
  CHECK(a->local == "/dev/vdb");
  CHECK(a->listen->to_string() == "192.0.2.1:8457");
  CHECK(a->remote->to_string() == "192.0.2.2:8457");
  CHECK(a->replication == Replication::kFullsync);
  CHECK(a->meta == "/var/lib/hastnbd/data.meta");
  CHECK(a->nbd.socket == "/run/hastnbd/data.sock");
  CHECK(a->nbd.device == "/dev/nbd0");
  CHECK(a->exec.empty());
  CHECK_FALSE(a->size.has_value());

  auto b = load_resource_config(path.string(), "data", "hostb");
  REQUIRE(b.ok());
  CHECK(b->listen->to_string() == "192.0.2.2:8457");
  CHECK(b->remote->to_string() == "192.0.2.1:8457");

  // Every setting key appears in the file; `size` commented out, since
  // exporting less than the whole device must be a deliberate choice.
  const std::string text = read_text(path);
  for (const char* key :
       {"replication:", "compression:", "checksum:",    "timeout:",   "run_dir:",   "state_dir:",
        "exec:",        "extent_size:", "keepdirty:",   "metaflush:", "sync_rate:", "verify_rate:", "sync_compare:", "track_granule:", "after_split_brain:", "max_inflight:",
        "# auth:",      "psk_file:",    "local:",       "listen:",      "remote:",    "meta:",      "nbd:",
        "socket:",      "device:",      "connections:", "# size:"}) {
    INFO(key);
    CHECK(text.find(std::string("  ") + key) != std::string::npos);
  }
  std::string uncommented = text;
  uncommented.replace(uncommented.find("# size:"), 7, "size:");
  auto sized = parse_resource_config(uncommented, "hastnbd.yaml", "data", "hosta");
  INFO((sized.ok() ? "" : sized.status().message()));
  REQUIRE(sized.ok());
  CHECK(*sized->size == 100ull << 30);
}

TEST_CASE("the peer node is the other section; more than two nodes are refused", "[config]") {
  const char* two = R"(resources:
  data:
    nodes:
      a: {local: /dev/vdb, listen: "127.0.0.1:8457", remote: "127.0.0.1:8458"}
      b: {local: /dev/vdc, listen: "127.0.0.1:8458", remote: "127.0.0.1:8457"}
)";
  auto a = hastnbd::parse_resource_config(two, "t.yaml", "data", "a");
  REQUIRE(a.ok());
  CHECK(a->peer_node == "b");
  CHECK(hastnbd::parse_resource_config(two, "t.yaml", "data", "b")->peer_node == "a");
  const char* one = "resources:\n  data:\n    nodes:\n      a: {local: /dev/vdb}\n";
  CHECK(hastnbd::parse_resource_config(one, "t.yaml", "data", "a")->peer_node.empty());
  const char* three = R"(resources:
  data:
    nodes:
      a: {local: /dev/vdb}
      b: {local: /dev/vdb}
      c: {local: /dev/vdb}
)";
  auto r = hastnbd::parse_resource_config(three, "t.yaml", "data", "a");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.status().message(), Catch::Contains("t.yaml:3: resources.data.nodes: has 3 nodes"));
}

TEST_CASE("config: source and pidfile", "[config]") {
  auto c = parse_ok(with_resource_line("source: 192.0.2.7"));
  REQUIRE(c.source);
  CHECK(c.source->host == "192.0.2.7");
  CHECK(c.source->port == 0);
  CHECK_FALSE(parse_ok(kMinimal).source);
  CHECK(parse_ok(kMinimal).pidfile.empty());
  CHECK(parse_ok(with_resource_line("pidfile: /run/hastnbd/data.pid")).pidfile == "/run/hastnbd/data.pid");

  struct Case {
    const char* text;
    const char* host;
    uint16_t port;
  };
  for (const Case& k : {Case{"192.0.2.1", "192.0.2.1", 0}, Case{"192.0.2.1:0", "192.0.2.1", 0},
                        Case{"192.0.2.1:9000", "192.0.2.1", 9000}, Case{"2001:db8::1", "2001:db8::1", 0},
                        Case{"[2001:db8::1]", "2001:db8::1", 0}, Case{"[::1]:9000", "::1", 9000}}) {
    INFO(k.text);
    auto r = parse_source_address(k.text);
    REQUIRE(r.ok());
    CHECK(r->host == k.host);
    CHECK(r->port == k.port);
  }
  for (const char* bad : {"", "host.example", "host.example:9000", "192.0.2.1:x", "192.0.2.1:70000", "[::1",
                          "[::1]x", "[192.0.2.1]"}) {
    INFO(bad);
    CHECK_FALSE(parse_source_address(bad).ok());
  }
  CHECK(error_of(with_resource_line("source: peer.example"))
            .starts_with("t.yaml:3: resources.data.source: 'peer.example' is not an IP address"));
  CHECK(error_of("defaults: {pidfile: /run/hastnbd.pid}\nresources:\n  data: {nodes: {a: {local: /dev/vdb}}}\n"
                 "  logs: {nodes: {a: {local: /dev/vdc}}}\n")
            .starts_with("t.yaml:1: defaults.pidfile: '/run/hastnbd.pid' is also used by defaults.pidfile (line 1, "
                         "resource data)"));
  CHECK(error_of(with_resource_line("pidfile: data.pid"))
            .starts_with("t.yaml:3: resources.data.pidfile: 'data.pid' is not an absolute path"));
}

TEST_CASE("config: what a reload changes and what it refuses", "[config]") {
  const std::string base = R"(resources:
  data:
    timeout: 20
    sync_rate: 0
    nodes:
      a: {local: /dev/vdb, listen: "127.0.0.1:7001", remote: "127.0.0.1:7002"}
      b: {local: /dev/vdc, listen: "127.0.0.1:7002", remote: "127.0.0.1:7001"}
)";
  ResourceConfig running = parse_ok(base);

  SECTION("nothing changed") {
    ReloadDiff d = apply_reload(running, parse_ok(base));
    CHECK(d.applied.empty());
    CHECK(d.refused.empty());
  }
  SECTION("the reloadable keys change in place") {
    std::string next = base;
    next.replace(next.find("timeout: 20"), 11, "timeout: 5");
    next.replace(next.find("sync_rate: 0"), 12, "sync_rate: 8MiB\n    exec: /usr/local/sbin/hook\n"
                                                   "    compression: none\n    source: 127.0.0.3");
    next.replace(next.find("remote: \"127.0.0.1:7002\""), 24, "remote: \"127.0.0.2:7002\"");
    ReloadDiff d = apply_reload(running, parse_ok(next));
    CHECK(d.refused.empty());
    CHECK(d.applied == std::vector<std::string>{"timeout: 20 -> 5", "exec: (none) -> /usr/local/sbin/hook",
                                                "sync_rate: 0 -> 8388608", "compression: lz4 -> none",
                                                "source: (none) -> 127.0.0.3:0",
                                                "remote: 127.0.0.1:7002 -> 127.0.0.2:7002"});
    CHECK(running.timeout == 5);
    CHECK(running.sync_rate == 8u << 20);
    CHECK(running.exec == "/usr/local/sbin/hook");
    CHECK(running.compression == Compression::kNone);
    CHECK(running.remote->host == "127.0.0.2");
    CHECK(running.source->host == "127.0.0.3");
  }
  SECTION("the rest is refused and left as it runs") {
    std::string next = base;
    next.replace(next.find("timeout: 20"), 11, "replication: async\n    extent_size: 1MiB\n    keepdirty: 8");
    next.replace(next.find("local: /dev/vdb"), 15, "local: /dev/vdx");
    next.replace(next.find("listen: \"127.0.0.1:7001\""), 24, "listen: \"127.0.0.1:7009\"");
    ReloadDiff d = apply_reload(running, parse_ok(next));
    CHECK(d.applied.empty());  // the timeout line went, and its default is the same 20
    CHECK(d.refused == std::vector<std::string>{"replication: fullsync -> async", "local: /dev/vdb -> /dev/vdx",
                                                "extent_size: 2097152 -> 1048576", "keepdirty: 1024 -> 8",
                                                "listen: 127.0.0.1:7001 -> 127.0.0.1:7009"});
    CHECK(running.replication == Replication::kFullsync);
    CHECK(running.local == "/dev/vdb");
    CHECK(running.extent_size == 2u << 20);
    CHECK(running.listen->port == 7001);
  }
  SECTION("adding or removing the peer needs a restart") {
    std::string next = base;
    next.replace(next.find(", remote: \"127.0.0.1:7002\""), 26, "");
    ReloadDiff d = apply_reload(running, parse_ok(next));
    CHECK(d.refused == std::vector<std::string>{"remote: 127.0.0.1:7002 -> (none)"});
    CHECK(running.remote->port == 7002);
  }
}

TEST_CASE("config: metrics listener", "[config]") {
  auto c = parse_ok(with_resource_line("metrics: {listen: \"127.0.0.1:9917\"}"));
  REQUIRE(c.metrics_listen);
  CHECK(c.metrics_listen->port == 9917);
  CHECK_FALSE(parse_ok(kMinimal).metrics_listen);
  CHECK(error_of(with_resource_line("metrics: {port: 9917}")).starts_with("t.yaml:3: resources.data.metrics.port: unknown key"));
  const std::string clash = R"(resources:
  data:
    nodes:
      a: {local: /dev/vdb, listen: "0.0.0.0:9917", metrics: {listen: "127.0.0.1:9917"}}
)";
  CHECK(error_of(clash).find("would listen twice on port 9917") != std::string::npos);
  ResourceConfig running = parse_ok(kMinimal);
  ReloadDiff d = apply_reload(running, parse_ok(with_resource_line("metrics: {listen: \"127.0.0.1:9917\"}")));
  CHECK(d.refused == std::vector<std::string>{"metrics.listen: (none) -> 127.0.0.1:9917"});
}

TEST_CASE("config: the peer key file: written 0600, read back, refused when others may read it", "[config][key]") {
  std::string dir = (std::filesystem::current_path() / "key.XXXXXX").string();
  REQUIRE(::mkdtemp(dir.data()) != nullptr);
  const std::string path = dir + "/data.key";
  REQUIRE(write_new_key_file(path).ok());
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(write_new_key_file(path).code() == EEXIST);  // never replaced

  ResourceConfig c;
  c.name = "data";
  c.psk_file = path;
  auto key = load_peer_key(c);
  INFO(key.status().message());
  REQUIRE(key.ok());
  CHECK(key->size() == 64);  // the hex digits, without the newline
  ResourceConfig d = c;
  d.psk_file = dir + "/other.key";
  REQUIRE(write_new_key_file(d.psk_file).ok());
  CHECK(*load_peer_key(d) != *key);

  REQUIRE(::chmod(path.c_str(), 0640) == 0);
  auto open = load_peer_key(c);
  REQUIRE_FALSE(open.ok());
  CHECK_THAT(open.status().message(), Catch::Contains("mode 0640") && Catch::Contains("chmod 600"));

  REQUIRE(::chmod(path.c_str(), 0600) == 0);
  { std::ofstream(path, std::ios::trunc) << "short\n"; }
  CHECK_THAT(load_peer_key(c).status().message(), Catch::Contains("at least 32"));
  c.psk_file = dir + "/missing.key";
  CHECK_THAT(load_peer_key(c).status().message(), Catch::Contains("hastnbd-ctl genkey"));
  c.auth = PeerAuth::kNone;
  CHECK(load_peer_key(c)->empty());

  CHECK(is_loopback_host("127.0.0.1"));
  CHECK(is_loopback_host("127.3.2.1"));
  CHECK(is_loopback_host("::1"));
  CHECK(is_loopback_host("LocalHost"));
  CHECK_FALSE(is_loopback_host("0.0.0.0"));
  CHECK_FALSE(is_loopback_host("192.0.2.1"));
  CHECK_FALSE(is_loopback_host("::"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("config: peer authentication is required off loopback", "[config][auth]") {
  const std::string key = "0123456789abcdef0123456789abcdef";
  auto pair = [](const std::string& extra_a, const std::string& extra_b, const std::string& res = "") {
    return "resources:\n  data:\n" + res +
           "    nodes:\n"
           "      a: {local: /dev/vdb, listen: \"192.0.2.1:8457\", remote: \"192.0.2.2:8457\"" + extra_a + "}\n"
           "      b: {local: /dev/vdb, listen: \"192.0.2.2:8457\", remote: \"192.0.2.1:8457\"" + extra_b + "}\n";
  };
  SECTION("no key off loopback names the fix") {
    CHECK(error_of(pair("", "")) ==
          "t.yaml:4: resources.data.nodes.a.listen: 192.0.2.1:8457 is outside loopback, and node 'a' has no key for "
          "the peer link: set psk_file ('hastnbd-ctl genkey /etc/hastnbd/data.key' writes one, copy it to both "
          "nodes) or tls, or write 'auth: none' to run the link unauthenticated");
    // remote alone off loopback counts too
    CHECK(error_of("resources:\n  data:\n    nodes:\n      a: {local: /dev/vdb, remote: \"192.0.2.2:8457\"}\n")
              .starts_with("t.yaml:4: resources.data.nodes.a.remote: 192.0.2.2:8457 is outside loopback"));
  }
  SECTION("loopback needs no key; auth none is explicit") {
    const std::string lo = "resources:\n  data:\n    nodes:\n"
                           "      a: {local: /dev/vdb, listen: \"127.0.0.1:8457\", remote: \"[::1]:8458\"}\n"
                           "      b: {local: /dev/vdc, listen: \"[::1]:8458\", remote: \"localhost:8457\"}\n";
    CHECK(parse_ok(lo).auth == PeerAuth::kDefault);
    ResourceConfig none = parse_ok(pair("", "", "    auth: none\n"));
    CHECK(none.auth == PeerAuth::kNone);
    CHECK(none.psk_file.empty());
  }
  SECTION("a key file or an inline key") {
    ResourceConfig a = parse_ok(pair("", "", "    psk_file: /etc/hastnbd/data.key\n"));
    CHECK(a.psk_file == "/etc/hastnbd/data.key");
    CHECK(parse_ok(pair("", "", "    psk: " + key + "\n"), "data", "b").psk == key);
    CHECK(parse_ok(pair("", "", "    auth: psk\n    psk: " + key + "\n")).auth == PeerAuth::kPsk);
  }
  SECTION("a node's key replaces the other kind set above it") {
    ResourceConfig a = parse_ok("defaults: {psk: " + key + "}\n" + pair(", psk_file: /k/a", ", psk_file: /k/b"));
    CHECK(a.psk.empty());
    CHECK(a.psk_file == "/k/a");
  }
  SECTION("mistakes") {
    CHECK(error_of(pair("", "", "    psk: short\n")) ==
          "t.yaml:3: resources.data.psk: is 5 characters; a key needs at least 32 ('hastnbd-ctl genkey FILE' "
          "writes a good one for psk_file)");
    CHECK(error_of(pair("", "", "    psk: " + key + "\n    psk_file: /k\n")) ==
          "t.yaml:4: resources.data.psk_file: is set next to psk (line 3); keep one (psk_file is better: the key "
          "stays out of the configuration)");
    CHECK(error_of(pair("", "", "    psk_file: k\n"))
              .starts_with("t.yaml:3: resources.data.psk_file: 'k' is not an absolute path"));
    CHECK(error_of(pair("", "", "    auth: maybe\n"))
              .starts_with("t.yaml:3: resources.data.auth: 'maybe' is not one of psk, none"));
    CHECK(error_of(pair("", "", "    auth: none\n    psk_file: /k\n")) ==
          "t.yaml:3: resources.data.auth: is none, but resources.data.psk_file (line 4) sets a key; remove one of "
          "them");
    CHECK(error_of(pair("", "", "    auth: psk\n")) ==
          "t.yaml:3: resources.data.auth: is psk, but node 'a' has no psk_file; 'hastnbd-ctl genkey "
          "/etc/hastnbd/data.key' writes one");
    CHECK(error_of(pair(", psk_file: /k", ", auth: none")) ==
          "t.yaml:3: resources.data.nodes: node 'a' authenticates the peer link (resources.data.nodes.a.psk_file, "
          "line 4) but node 'b' has no key; both need the same one");
  }
}

TEST_CASE("config: tls on the peer link", "[config][tls]") {
  auto pair = [](const std::string& tls_a, const std::string& tls_b, const std::string& defaults = "") {
    return defaults + "resources:\n  data:\n    nodes:\n"
           "      a: {local: /dev/vdb, listen: \"192.0.2.1:8457\", remote: \"192.0.2.2:8457\"" + tls_a + "}\n"
           "      b: {local: /dev/vdb, listen: \"192.0.2.2:8457\", remote: \"192.0.2.1:8457\"" + tls_b + "}\n";
  };
  const std::string ta = ", tls: {cert: /t/a.crt, key: /t/a.key, ca: /t/ca.crt}";
  const std::string tb = ", tls: {cert: /t/b.crt, key: /t/b.key, ca: /t/ca.crt}";
  SECTION("tls alone authenticates the link off loopback; names default to the node names") {
    ResourceConfig a = parse_ok(pair(ta, tb));
    CHECK(a.tls == TlsConfig{"/t/a.crt", "/t/a.key", "/t/ca.crt", "a"});
    CHECK(a.peer_tls_name == "b");
    CHECK(a.psk_file.empty());
    CHECK(parse_ok(pair(ta, tb), "data", "b").peer_tls_name == "a");
  }
  SECTION("ca from defaults, cert and key per node; a certificate name of its own") {
    ResourceConfig b = parse_ok(pair(", tls: {cert: /t/a.crt, key: /t/a.key, name: hosta.example.org}",
                                     ", tls: {cert: /t/b.crt, key: /t/b.key}", "defaults: {tls: {ca: /t/ca.crt}}\n"),
                                "data", "b");
    CHECK(b.tls == TlsConfig{"/t/b.crt", "/t/b.key", "/t/ca.crt", "b"});
    CHECK(b.peer_tls_name == "hosta.example.org");
  }
  SECTION("mistakes") {
    CHECK(error_of(pair(", tls: {cert: /t/a.crt}", tb)) ==
          "t.yaml:4: resources.data.nodes.a.tls.cert: node 'a' has tls without key, ca; TLS needs this node's "
          "certificate (cert), its private key (key) and the CA that signed the peer's (ca)");
    CHECK(error_of(pair(ta, ", psk_file: /k")) ==
          "t.yaml:3: resources.data.nodes: node 'a' runs the peer link over TLS (resources.data.nodes.a.tls.ca, "
          "line 4) but node 'b' has no tls; both need it (their own cert and key, the same ca)");
    CHECK(error_of(pair(", tls: {cert: a.crt}", tb)).starts_with("t.yaml:4: resources.data.nodes.a.tls.cert: 'a.crt' is not an absolute path"));
    CHECK(error_of(pair(", tls: {cert: /a, key: /b, ca: /c, colour: red}", tb))
              .starts_with("t.yaml:4: resources.data.nodes.a.tls.colour: unknown key (known keys: cert, key, ca, name)"));
  }
}
