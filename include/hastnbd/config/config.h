// Configuration: /etc/hastnbd/hastnbd.yaml, parsed and validated, reduced to the
// view one node has of one resource.
//
// The file holds `defaults`, then `resources.NAME` with per-node sections under
// `resources.NAME.nodes.NODE`. Every setting key may appear at all three levels;
// the most specific wins (node > resource > defaults > built-in default).
// Validation covers the whole file, not only the resource asked for, so a typo
// anywhere is reported before any daemon starts. Errors name the file, the line
// (1-based) and the key: "hastnbd.yaml:12: resources.data.nodes.a.listen: ...".
// Pure: no sockets, no files except reading the config file in load_*().
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hastnbd/base/net.h"
#include "hastnbd/base/status.h"

namespace hastnbd {

inline constexpr const char* kDefaultConfigPath = "/etc/hastnbd/hastnbd.yaml";

enum class Replication { kFullsync, kMemsync, kAsync };
enum class Compression { kNone, kHole, kLz4 };
enum class Checksum { kNone, kXxh3 };
// `auth`: how the peer link is authenticated (peer/auth.h). kDefault: with
// the pre-shared key when one is configured; without one only on loopback.
enum class PeerAuth { kDefault, kPsk, kNone };
// `after_split_brain` (replication/sync_decision.h, resolve_split_brain).
enum class SplitBrainPolicy { kManual, kDiscardZeroChanges, kDiscardLeastChanges, kDiscardYoungerPrimary };

const char* to_string(Replication r);
const char* to_string(Compression c);
const char* to_string(Checksum c);
const char* to_string(PeerAuth a);
const char* to_string(SplitBrainPolicy p);

// A host that only this machine can reach: 127.0.0.0/8, ::1, "localhost".
bool is_loopback_host(const std::string& host);

// "HOST:PORT", "[V6ADDR]:PORT"; HOST is an IPv4/IPv6 literal or a DNS name
// (Address itself is in base/net.h).
Result<Address> parse_address(std::string_view text);
// The local address of the connection to the peer (`source`): an IPv4 or
// IPv6 literal, optionally with a port ("192.0.2.1", "[2001:db8::1]:0"); port
// 0 = any.
Result<Address> parse_source_address(std::string_view text);

// "4096", "512B", "64KiB", "2MiB", "1GiB", "1TiB" (also K/M/G/T and KB/MB/GB/TB
// meaning powers of 1024; "k" suffixes case-insensitive). Rejects overflow,
// negatives, fractions, empty strings and trailing garbage.
Result<uint64_t> parse_size(std::string_view text);

// "/dev/nbd12" -> 12; anything else is EINVAL (the only form `nbd.device`
// accepts).
Result<int> nbd_device_index(const std::string& path);

struct NbdConfig {
  std::string socket;             // Unix socket path; default RUN_DIR/RESOURCE.sock
  std::optional<Address> listen;  // optional TCP listener
  std::string device;             // optional /dev/nbdN (kernel client, later issue)
  unsigned connections = 1;       // kernel client connections, 1..16
  // The kernel device's request timeout (seconds): a request not answered
  // by then is sent again on a fresh connection (docs/design.md, "Kernel
  // device"), which bounds the stall of a daemon restart. 1..3600.
  unsigned io_timeout = 3;
  // How long the kernel device holds I/O while no daemon serves it (dead
  // connection timeout, seconds) before failing it: room for a restart.
  // 1..86400.
  unsigned reconnect_timeout = 60;
};

// `tls: {cert, key, ca, name}` of a node (docs/config.md, "TLS"): mutual
// TLS 1.3 on the peer link. Merged key by key down the cascade, so `ca` can
// sit in defaults and cert/key in the node's section.
struct TlsConfig {
  std::string cert;  // this node's certificate chain (PEM)
  std::string key;   // its private key (PEM), mode 0600 like a psk_file
  std::string ca;    // the CA (PEM) the peer's certificate must chain to
  std::string name;  // the name this node's certificate is for; default the node name
  bool enabled() const { return !cert.empty() || !key.empty() || !ca.empty(); }
  bool operator==(const TlsConfig&) const = default;
};
// The TLS files as the daemon read them (load_tls_material): PEM text.
struct TlsMaterial {
  std::string cert_pem, key_pem, ca_pem;
  bool operator==(const TlsMaterial&) const = default;
};

struct ResourceConfig {
  std::string config_path;  // the file it came from
  std::string name;         // resource name; also the NBD export name
  std::string node;         // this node's name
  std::string peer_node;    // the other node's name; empty for a single-node resource

  Replication replication = Replication::kFullsync;
  Compression compression = Compression::kLz4;
  Checksum checksum = Checksum::kXxh3;
  unsigned timeout = 20;              // seconds without traffic => peer dead; 1..3600
  std::string run_dir = "/run/hastnbd";
  std::string state_dir = "/var/lib/hastnbd";
  std::string exec;                   // hook program; empty = none
  uint64_t extent_size = 2 << 20;     // power of two, 64KiB..1GiB
  unsigned keepdirty = 1024;          // 0..1000000 (docs/config.md: the resync cost)
  bool metaflush = true;
  uint64_t sync_rate = 0;             // bytes/s, 0 = unlimited
  uint64_t verify_rate = 100 << 20;   // online verify, bytes/s per side, 0 = unlimited
  bool sync_compare = true;           // a sync that is not full copies only the blocks whose hashes differ
  uint64_t track_granule = 4096;      // what the primary writes without its peer, per granule; 0 = off
  SplitBrainPolicy after_split_brain = SplitBrainPolicy::kManual;
  uint64_t max_inflight = 64 << 20;   // unacked bytes to the peer (every mode, sync too); >= 1MiB
  std::optional<uint64_t> size;       // exported size; default: whole local device
  PeerAuth auth = PeerAuth::kDefault;
  std::string psk;                    // the pre-shared key written in the file (prefer psk_file)
  std::string psk_file;               // a file holding the key, mode 0600 or stricter
  std::string peer_key;               // not from the file: the key load_peer_key() read (the daemon sets it)
  TlsConfig tls;                      // this node's; tls.name filled in (default the node name)
  std::string peer_tls_name;          // the name the peer's certificate must carry (its tls.name)
  TlsMaterial tls_material;           // not from the file: what load_tls_material() read

  std::string local;                  // backing device or file (required)
  std::optional<Address> listen;      // peer listen address of this node
  std::optional<Address> remote;      // the peer's address
  std::optional<Address> source;      // local address the primary connects from (port 0 = any)
  std::string pidfile;                // optional pid file, locked while the daemon runs
  std::string meta;                   // metadata file; default STATE_DIR/RESOURCE.meta

  NbdConfig nbd;
  std::optional<Address> metrics_listen;  // `metrics: {listen: ADDR}`: Prometheus text over HTTP

  std::string control_path() const { return run_dir + "/" + name + ".ctl"; }
};

// SIGHUP: what a running daemon takes from a newly loaded configuration.
// timeout, exec, sync_rate, verify_rate, sync_compare, track_granule,
// after_split_brain, remote (a new address for the peer), source,
// compression, checksum, max_inflight and the peer key (auth, psk, psk_file)
// change in place; everything else
// (devices, paths, sizes, listen addresses, replication mode, keepdirty,
// metaflush, the peer's name, a remote added or removed, ...) needs a restart
// and is left as it runs. Each entry reads "key: old -> new".
struct ReloadDiff {
  std::vector<std::string> applied;
  std::vector<std::string> refused;
};
ReloadDiff apply_reload(ResourceConfig& running, const ResourceConfig& next);

// The peer link's key: `psk`, or the contents of `psk_file` (without the
// trailing newline), which must be a regular file that neither group nor
// others may read. Empty when the link is not authenticated. Read at start
// and at each reload, so a new key takes effect at the next connect.
Result<std::string> load_peer_key(const ResourceConfig& config);
// The files of `tls`, read with the checks of a secret for the key (a
// regular file, owned by root or us, no access for group or others) and of
// a regular file for the certificates. Empty when tls is not set.
Result<TlsMaterial> load_tls_material(const ResourceConfig& config);
// A new key file: 32 random bytes as 64 hex digits, mode 0600; never
// replaces an existing file.
Status write_new_key_file(const std::string& path);

// The node name used when --node is not given: the short hostname.
std::string default_node_name();

// Parse YAML text. `path` is used only in messages. `node` empty => default_node_name().
Result<ResourceConfig> parse_resource_config(std::string_view yaml, std::string_view path,
                                             std::string_view resource, std::string_view node);
Result<ResourceConfig> load_resource_config(const std::string& path, std::string_view resource,
                                            std::string_view node);

// All resource names in the file (validated like above), in file order.
Result<std::vector<std::string>> parse_resource_names(std::string_view yaml, std::string_view path);
Result<std::vector<std::string>> load_resource_names(const std::string& path);

}  // namespace hastnbd
