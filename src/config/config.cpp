// The configuration's schema and cascade: YAML tree -> validated,
// cascaded ResourceConfig per node (docs/config.md is the reference).
//
// Three passes over the text, cheapest first: a byte scan (size, NUL bytes), a
// yaml-cpp event pass that refuses deep nesting, anchors and extra documents
// before any tree exists (yaml.cpp), then yaml-cpp's tree walked against the
// schema below.

#include "hastnbd/config/config.h"

#include <algorithm>
#include <map>
#include <optional>
#include <span>
#include <tuple>

#include "detail.h"

namespace hastnbd {
namespace {

using namespace cfg;

// Where a value that the cross-checks compare came from, to name both sides.
struct Origin {
  std::string key;
  int line = 0;
};

// One node's view of one resource while defaults, resource and node sections
// are applied on top of each other.
struct Cascade {
  ResourceConfig cfg;
  Origin listen, remote, nbd_listen, metrics_listen, local, meta, nbd_socket, pidfile, auth, psk, tls;
};

Origin origin_of(const Item& it) { return {it.key, it.line}; }

std::string_view section_of(std::string_view key) { return key.substr(0, key.rfind('.') + 1); }

// psk and psk_file: the more specific section's key replaces the other one
// set above it; both in one section is a mistake.
void set_key(const Item& it, Cascade& c, bool file) {
  const bool other_set = file ? !c.cfg.psk.empty() : !c.cfg.psk_file.empty();
  if (other_set && section_of(c.psk.key) == section_of(it.key))
    fail(it, std::string("is set next to ") + (file ? "psk" : "psk_file") + " (line " + std::to_string(c.psk.line) +
                 "); keep one (psk_file is better: the key stays out of the configuration)");
  if (file) {
    c.cfg.psk_file = path_of(it);
    c.cfg.psk.clear();
  } else {
    std::string key = scalar_of(it);
    if (key.size() < kMinKeyChars)
      fail(it, "is " + std::to_string(key.size()) + " characters; a key needs at least " +
                   std::to_string(kMinKeyChars) + " ('hastnbd-ctl genkey FILE' writes a good one for psk_file)");
    c.cfg.psk = std::move(key);
    c.cfg.psk_file.clear();
  }
  c.psk = origin_of(it);
}

using Setter = void (*)(const Item&, Cascade&);
struct Key {
  std::string_view name;
  Setter apply;
};

std::vector<std::string_view> key_names(std::span<const Key> keys, std::string_view extra = {}) {
  std::vector<std::string_view> names;
  for (const Key& k : keys) names.push_back(k.name);
  if (!extra.empty()) names.push_back(extra);
  return names;
}

// `skip` is a key walked by the caller (a resource's `nodes`).
void apply_entries(const Item& section, std::span<const Key> keys, Cascade& c, std::string_view skip = {}) {
  for_each_entry(section, [&](const Item& it, const std::string& name) {
    if (!skip.empty() && name == skip) return;
    auto k = std::find_if(keys.begin(), keys.end(), [&](const Key& key) { return key.name == name; });
    if (k == keys.end()) fail(it, unknown_key(name, key_names(keys, skip)));
    k->apply(it, c);
  });
}

const Key kNbdKeys[] = {
    {"socket",
     [](const Item& it, Cascade& c) {
       c.cfg.nbd.socket = path_of(it);
       c.nbd_socket = origin_of(it);
     }},
    {"listen",
     [](const Item& it, Cascade& c) {
       c.cfg.nbd.listen = address_of(it);
       c.nbd_listen = origin_of(it);
     }},
    {"device", [](const Item& it, Cascade& c) { c.cfg.nbd.device = device_of(it); }},
    {"connections",
     [](const Item& it, Cascade& c) { c.cfg.nbd.connections = number_of(it, 1, kMaxNbdConnections); }},
    {"io_timeout", [](const Item& it, Cascade& c) { c.cfg.nbd.io_timeout = number_of(it, 1, 3600); }},
    {"reconnect_timeout", [](const Item& it, Cascade& c) { c.cfg.nbd.reconnect_timeout = number_of(it, 1, 86400); }},
};

const Key kMetricsKeys[] = {
    {"listen",
     [](const Item& it, Cascade& c) {
       c.cfg.metrics_listen = address_of(it);
       c.metrics_listen = origin_of(it);
     }},
};

void set_tls_path(const Item& it, Cascade& c, std::string TlsConfig::*field) {
  c.cfg.tls.*field = path_of(it);
  c.tls = origin_of(it);
}

const Key kTlsKeys[] = {
    {"cert", [](const Item& it, Cascade& c) { set_tls_path(it, c, &TlsConfig::cert); }},
    {"key", [](const Item& it, Cascade& c) { set_tls_path(it, c, &TlsConfig::key); }},
    {"ca", [](const Item& it, Cascade& c) { set_tls_path(it, c, &TlsConfig::ca); }},
    {"name",
     [](const Item& it, Cascade& c) {
       std::string name = scalar_of(it);
       check_name(it, it.key, name, "certificate");
       c.cfg.tls.name = std::move(name);
     }},
};

const Key kSettingKeys[] = {
    {"replication", [](const Item& it, Cascade& c) { c.cfg.replication = enum_of(it, kReplicationNames); }},
    {"compression", [](const Item& it, Cascade& c) { c.cfg.compression = enum_of(it, kCompressionNames); }},
    {"checksum", [](const Item& it, Cascade& c) { c.cfg.checksum = enum_of(it, kChecksumNames); }},
    {"timeout", [](const Item& it, Cascade& c) { c.cfg.timeout = number_of(it, 1, kMaxTimeout); }},
    {"run_dir", [](const Item& it, Cascade& c) { c.cfg.run_dir = path_of(it); }},
    {"state_dir", [](const Item& it, Cascade& c) { c.cfg.state_dir = path_of(it); }},
    {"exec", [](const Item& it, Cascade& c) { c.cfg.exec = scalar_of(it); }},
    {"extent_size", [](const Item& it, Cascade& c) { c.cfg.extent_size = extent_size_of(it); }},
    {"keepdirty", [](const Item& it, Cascade& c) { c.cfg.keepdirty = number_of(it, 0, kMaxKeepdirty); }},
    {"metaflush", [](const Item& it, Cascade& c) { c.cfg.metaflush = bool_of(it); }},
    {"sync_rate", [](const Item& it, Cascade& c) { c.cfg.sync_rate = size_of(it); }},
    {"verify_rate", [](const Item& it, Cascade& c) { c.cfg.verify_rate = size_of(it); }},
    {"sync_compare", [](const Item& it, Cascade& c) { c.cfg.sync_compare = bool_of(it); }},
    {"track_granule", [](const Item& it, Cascade& c) { c.cfg.track_granule = granule_of(it); }},
    {"after_split_brain",
     [](const Item& it, Cascade& c) { c.cfg.after_split_brain = enum_of(it, kSplitBrainNames); }},
    {"max_inflight", [](const Item& it, Cascade& c) { c.cfg.max_inflight = max_inflight_of(it); }},
    {"size", [](const Item& it, Cascade& c) { c.cfg.size = export_size_of(it); }},
    {"auth",
     [](const Item& it, Cascade& c) {
       c.cfg.auth = enum_of(it, kAuthNames);
       c.auth = origin_of(it);
     }},
    {"psk", [](const Item& it, Cascade& c) { set_key(it, c, false); }},
    {"psk_file", [](const Item& it, Cascade& c) { set_key(it, c, true); }},
    {"local",
     [](const Item& it, Cascade& c) {
       c.cfg.local = path_of(it);
       c.local = origin_of(it);
     }},
    {"listen",
     [](const Item& it, Cascade& c) {
       c.cfg.listen = address_of(it);
       c.listen = origin_of(it);
     }},
    {"remote",
     [](const Item& it, Cascade& c) {
       c.cfg.remote = address_of(it);
       c.remote = origin_of(it);
     }},
    {"source", [](const Item& it, Cascade& c) { c.cfg.source = source_of(it); }},
    {"pidfile",
     [](const Item& it, Cascade& c) {
       c.cfg.pidfile = path_of(it);
       c.pidfile = origin_of(it);
     }},
    {"meta",
     [](const Item& it, Cascade& c) {
       c.cfg.meta = path_of(it);
       c.meta = origin_of(it);
     }},
    {"nbd", [](const Item& it, Cascade& c) { apply_entries(it, kNbdKeys, c); }},
    {"metrics", [](const Item& it, Cascade& c) { apply_entries(it, kMetricsKeys, c); }},
    {"tls", [](const Item& it, Cascade& c) { apply_entries(it, kTlsKeys, c); }},
};

constexpr std::string_view kNodesKey = "nodes";


bool has_key(const ResourceConfig& cfg) { return !cfg.psk.empty() || !cfg.psk_file.empty(); }
// Either authenticates the link: the key, or a TLS certificate.
bool authenticates(const ResourceConfig& cfg) { return has_key(cfg) || cfg.tls.enabled(); }

// tls needs all three files, or none.
void check_tls(std::string_view file, const Cascade& c) {
  const TlsConfig& t = c.cfg.tls;
  if (!t.enabled()) return;
  std::vector<std::string> missing;
  if (t.cert.empty()) missing.push_back("cert");
  if (t.key.empty()) missing.push_back("key");
  if (t.ca.empty()) missing.push_back("ca");
  if (!missing.empty())
    fail_key(file, c.tls.line, c.tls.key,
             "node '" + c.cfg.node + "' has tls without " + join(missing) +
                 "; TLS needs this node's certificate (cert), its private key (key) and the CA that signed the "
                 "peer's (ca)");
}

// Secure by default (docs/config.md, "Authentication"): a peer link that
// leaves loopback needs a key unless `auth: none` says otherwise.
void check_auth(std::string_view file, const Cascade& c) {
  const ResourceConfig& cfg = c.cfg;
  const std::string genkey = "'hastnbd-ctl genkey /etc/hastnbd/" + cfg.name + ".key' writes one";
  if (cfg.auth == PeerAuth::kNone && has_key(cfg))
    fail_key(file, c.auth.line, c.auth.key,
             "is none, but " + c.psk.key + " (line " + std::to_string(c.psk.line) +
                 ") sets a key; remove one of them");
  if (cfg.auth == PeerAuth::kPsk && !has_key(cfg))
    fail_key(file, c.auth.line, c.auth.key, "is psk, but node '" + cfg.node + "' has no psk_file; " + genkey);
  if (cfg.auth != PeerAuth::kDefault || authenticates(cfg)) return;
  for (auto [addr, from] : {std::pair{&cfg.listen, &c.listen}, std::pair{&cfg.remote, &c.remote}}) {
    if (!addr->has_value() || is_loopback_host((*addr)->host)) continue;
    fail_key(file, from->line, from->key,
             (*addr)->to_string() + " is outside loopback, and node '" + cfg.node +
                 "' has no key for the peer link: set psk_file (" + genkey +
                 ", copy it to both nodes) or tls, or write 'auth: none' to run the link unauthenticated");
  }
}

// Paths derived from directories get the node section as their origin, under
// the key they would have had if written out.
void finish_node(const Item& node, const std::string& resource_key, Cascade& c) {
  ResourceConfig& cfg = c.cfg;
  if (cfg.local.empty()) {
    fail(node,
         "no 'local' (the backing device or file); set it here, in " + resource_key + " or in defaults");
  }
  if (cfg.nbd.socket.empty()) {
    cfg.nbd.socket = cfg.run_dir + "/" + cfg.name + ".sock";
    c.nbd_socket = {node.key + ".nbd.socket", node.line};
  }
  if (cfg.meta.empty()) {
    cfg.meta = cfg.state_dir + "/" + cfg.name + ".meta";
    c.meta = {node.key + ".meta", node.line};
  }
}

// ---------------------------------------------------------------------------
// The whole file

struct NodeEntry {
  std::string name;
  Cascade c;
};

struct ResourceEntry {
  std::string name;
  Origin nodes;  // where the `nodes` key is, for "no section for node" errors
  std::vector<NodeEntry> node_list;
};

struct ParsedFile {
  std::vector<ResourceEntry> resources;
};

ResourceEntry walk_resource(const Item& res, const std::string& name, const Item& defaults) {
  Cascade scratch;  // validates resource-level keys even if no node used them
  apply_entries(res, kSettingKeys, scratch, kNodesKey);
  std::optional<Item> nodes = find_entry(res, kNodesKey);
  if (!nodes) {
    fail(res, "has no 'nodes' section (one entry per node, e.g. nodes: {hosta: {local: /dev/vdb}})");
  }
  ResourceEntry entry{name, origin_of(*nodes), {}};
  for_each_entry(*nodes, [&](const Item& node, const std::string& node_name) {
    check_name(node, nodes->key, node_name, "node");
    Cascade c;
    c.cfg.config_path = std::string(res.file);
    c.cfg.name = name;
    c.cfg.node = node_name;
    apply_entries(defaults, kSettingKeys, c);
    apply_entries(res, kSettingKeys, c, kNodesKey);
    apply_entries(node, kSettingKeys, c);
    finish_node(node, res.key, c);
    if (c.cfg.tls.enabled() && c.cfg.tls.name.empty()) c.cfg.tls.name = node_name;
    entry.node_list.push_back({node_name, std::move(c)});
  });
  if (entry.node_list.empty()) fail(*nodes, "no nodes; add one section per node");
  if (entry.node_list.size() > 2)
    fail(*nodes, "has " + std::to_string(entry.node_list.size()) +
                     " nodes; a resource is replicated between exactly two (a primary and a secondary)");
  return entry;
}

struct Use {
  Origin from;
  std::string resource;
  std::string shown;
};

std::string used_by(const Use& u) {
  return u.from.key + " (line " + std::to_string(u.from.line) + ", resource " + u.resource + ")";
}

// Per node, across all resources: two listeners on one port collide when their
// hosts match or either is a wildcard. Maps keep this linear in the listeners.
void check_ports(const ParsedFile& f, std::string_view file) {
  using NodePort = std::pair<std::string, uint16_t>;
  std::map<NodePort, Use> first, wildcard;
  std::map<std::pair<NodePort, std::string>, Use> exact;
  for (const ResourceEntry& r : f.resources) {
    for (const NodeEntry& n : r.node_list) {
      for (auto [addr, from] :
           {std::pair{&n.c.cfg.listen, &n.c.listen}, std::pair{&n.c.cfg.nbd.listen, &n.c.nbd_listen},
            std::pair{&n.c.cfg.metrics_listen, &n.c.metrics_listen}}) {
        if (!addr->has_value()) continue;
        Use me{*from, r.name, (*addr)->to_string()};
        NodePort np{n.name, (*addr)->port};
        HostKey host = host_key((*addr)->host);
        const Use* other = nullptr;
        if (auto w = wildcard.find(np); w != wildcard.end()) {
          other = &w->second;
        } else if (auto any = first.find(np); host.wildcard && any != first.end()) {
          other = &any->second;
        } else if (auto e = exact.find({np, host.key}); e != exact.end()) {
          other = &e->second;
        }
        if (other) {
          fail_key(file, me.from.line, me.from.key,
                   me.shown + " (resource " + r.name + ") collides with " + other->shown + " from " +
                       used_by(*other) + ": node '" + n.name + "' would listen twice on port " +
                       std::to_string(np.second));
        }
        first.emplace(np, me);
        exact.emplace(std::pair{np, host.key}, me);
        if (host.wildcard) wildcard.emplace(np, me);
      }
    }
  }
}

// Two resources of one node on the same disk, metadata file, socket or pid
// file would destroy each other's data or fail to start; catch it before
// either runs.
void check_paths(const ParsedFile& f, std::string_view file) {
  std::map<std::pair<std::string, std::string>, Use> seen;
  for (const ResourceEntry& r : f.resources) {
    for (const NodeEntry& n : r.node_list) {
      const ResourceConfig& cfg = n.c.cfg;
      for (auto [path, from] : {std::pair{&cfg.local, &n.c.local}, std::pair{&cfg.meta, &n.c.meta},
                                std::pair{&cfg.nbd.socket, &n.c.nbd_socket}, std::pair{&cfg.pidfile, &n.c.pidfile}}) {
        if (path->empty()) continue;  // no pidfile
        Use me{*from, r.name, *path};
        auto [other, fresh] = seen.emplace(std::pair{n.name, *path}, me);
        if (!fresh) {
          fail_key(file, me.from.line, me.from.key,
                   quote(*path) + " is also used by " + used_by(other->second) + " on node '" + n.name +
                       "'; each needs its own");
        }
      }
    }
  }
}

// Per node, then across the two: either both hold a key or neither does.
void check_auth(std::string_view file, const ResourceEntry& r) {
  for (const NodeEntry& n : r.node_list) {
    check_tls(file, n.c);
    check_auth(file, n.c);
  }
  if (r.node_list.size() != 2) return;
  const NodeEntry &x = r.node_list[0], &y = r.node_list[1];
  // Each node applies its own policy to a split-brain: they must agree.
  if (x.c.cfg.after_split_brain != y.c.cfg.after_split_brain)
    fail_key(file, r.nodes.line, r.nodes.key,
             "after_split_brain is " + std::string(to_string(x.c.cfg.after_split_brain)) + " for node '" + x.name +
                 "' but " + to_string(y.c.cfg.after_split_brain) + " for node '" + y.name +
                 "'; both nodes must apply the same policy");
  if (x.c.cfg.tls.enabled() != y.c.cfg.tls.enabled()) {
    const NodeEntry& with = x.c.cfg.tls.enabled() ? x : y;
    const NodeEntry& without = x.c.cfg.tls.enabled() ? y : x;
    fail_key(file, r.nodes.line, r.nodes.key,
             "node '" + with.name + "' runs the peer link over TLS (" + with.c.tls.key + ", line " +
                 std::to_string(with.c.tls.line) + ") but node '" + without.name +
                 "' has no tls; both need it (their own cert and key, the same ca)");
  }
  if (has_key(x.c.cfg) == has_key(y.c.cfg)) return;
  const NodeEntry& keyless = has_key(x.c.cfg) ? y : x;
  const NodeEntry& keyed = has_key(x.c.cfg) ? x : y;
  fail_key(file, r.nodes.line, r.nodes.key,
           "node '" + keyed.name + "' authenticates the peer link (" + keyed.c.psk.key + ", line " +
               std::to_string(keyed.c.psk.line) + ") but node '" + keyless.name +
               "' has no key; both need the same one");
}

ParsedFile walk_file(const YAML::Node& root, std::string_view file) {
  if (!root.IsNull() && !root.IsMap()) {
    fail_key(file, line_of(root.Mark()), "top level",
             "expected a map with 'defaults' and 'resources', got " + describe(root));
  }
  Item top{file, "", 1, root};
  std::optional<Item> defaults_entry, resources;
  for_each_entry(top, [&](const Item& it, const std::string& name) {
    if (name == "defaults") {
      defaults_entry.emplace(it);
    } else if (name == "resources") {
      resources.emplace(it);
    } else {
      fail(it, unknown_key(name, {"defaults", "resources"}));
    }
  });
  const Item none{file, "defaults", 1, YAML::Node()};
  const Item& defaults = defaults_entry ? *defaults_entry : none;
  Cascade scratch;  // validates defaults even when no resource follows
  apply_entries(defaults, kSettingKeys, scratch);
  if (!resources) fail_key(file, 1, "resources", "missing; the file needs at least one resource");

  ParsedFile f;
  for_each_entry(*resources, [&](const Item& res, const std::string& name) {
    check_name(res, resources->key, name, "resource");
    f.resources.push_back(walk_resource(res, name, defaults));
  });
  if (f.resources.empty()) fail(*resources, "no resources; add at least one");
  check_ports(f, file);
  check_paths(f, file);
  for (const ResourceEntry& r : f.resources) check_auth(file, r);
  return f;
}

ParsedFile parse_file(std::string_view text, std::string_view file) {
  check_bytes(text, file);
  return walk_file(load_tree(text, file), file);
}

std::vector<std::string> resource_names(const ParsedFile& f) {
  std::vector<std::string> names;
  for (const ResourceEntry& r : f.resources) names.push_back(r.name);
  return names;
}

ResourceConfig select(const ParsedFile& f, std::string_view file, std::string_view resource,
                      std::string_view node) {
  auto r = std::find_if(f.resources.begin(), f.resources.end(),
                        [&](const ResourceEntry& e) { return e.name == resource; });
  if (r == f.resources.end()) {
    throw ConfigError{ENOENT, std::string(file) + ": no resource " + quote(resource) +
                                  " (resources: " + join(resource_names(f)) + ")"};
  }
  const std::string want = node.empty() ? default_node_name() : std::string(node);
  std::vector<std::string> names;
  for (const NodeEntry& n : r->node_list) {
    if (n.name != want) continue;
    ResourceConfig cfg = n.c.cfg;
    for (const NodeEntry& other : r->node_list) {
      if (other.name == want) continue;
      cfg.peer_node = other.name;
      cfg.peer_tls_name = other.c.cfg.tls.name;
    }
    return cfg;
  }
  for (const NodeEntry& n : r->node_list) names.push_back(n.name);
  fail_key(file, r->nodes.line, r->nodes.key,
           "no section for node " + quote(want) + " (nodes: " + join(names) + "); use --node NAME", ENOENT);
}

}  // namespace

Result<ResourceConfig> parse_resource_config(std::string_view yaml, std::string_view path,
                                             std::string_view resource, std::string_view node) {
  return guarded(path, [&] { return select(parse_file(yaml, path), path, resource, node); });
}

Result<ResourceConfig> load_resource_config(const std::string& path, std::string_view resource,
                                            std::string_view node) {
  Result<std::string> text = read_file(path);
  if (!text.ok()) return text.status();
  return parse_resource_config(*text, path, resource, node);
}

Result<std::vector<std::string>> parse_resource_names(std::string_view yaml, std::string_view path) {
  return guarded(path, [&] { return resource_names(parse_file(yaml, path)); });
}

Result<std::vector<std::string>> load_resource_names(const std::string& path) {
  Result<std::string> text = read_file(path);
  if (!text.ok()) return text.status();
  return parse_resource_names(*text, path);
}

}  // namespace hastnbd
