// The status document of a resource (`hastnbd-ctl status --json`; its
// schema is docs/status.md), built from the components' own state. Metrics
// are rendered from the same document (daemon/metrics.h), so the two never
// disagree. Read-only; loop thread only.
#pragma once

#include <chrono>

#include <nlohmann/json.hpp>

#include "hastnbd/base/role.h"
#include "hastnbd/config/config.h"
#include "hastnbd/daemon/hooks.h"
#include "hastnbd/daemon/kernel_device.h"
#include "hastnbd/daemon/sync_target.h"
#include "hastnbd/disk/disk.h"
#include "hastnbd/disk/meta_store.h"
#include "hastnbd/nbd/server.h"
#include "hastnbd/replication/replicator.h"
#include "hastnbd/replication/secondary.h"
#include "hastnbd/replication/syncer.h"
#include "hastnbd/replication/verifier.h"
#include "hastnbd/replication/write_path.h"

namespace hastnbd {

struct StatusSources {
  const ResourceConfig& config;
  Role role;
  std::chrono::system_clock::time_point role_since, started;
  const MetaStore& store;
  const Disk& disk;
  const NbdServer& nbd;
  const WritePath& write_path;
  const Replicator* replicator;  // null without a `remote`
  const Secondary* secondary;    // null without a `listen`
  const Syncer* syncer;          // with replicator
  const Verifier* verifier;      // with replicator
  const SyncTarget& sync_target;
  const Hooks& hooks;
  const KernelDevice& device;
};

nlohmann::json status_report(const StatusSources& s);

// Connected to the peer with nothing left to synchronise.
bool in_sync(const StatusSources& s);

}  // namespace hastnbd
