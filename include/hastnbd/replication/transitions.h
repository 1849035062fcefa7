// Every change the daemon and hastnbd-ctl make to a metadata header, as named
// pure operations: each takes the old header and returns the new one, so the
// generation rules of docs/design.md ("Metadata and generations") live here
// and nowhere else. Callers never set header fields themselves; they store
// what these return (MetaStore::update on the loop, MetadataFile's blocking
// writes offline). Pure: no I/O.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "hastnbd/disk/metadata.h"
#include "hastnbd/replication/sync_decision.h"

namespace hastnbd::meta {

// `hastnbd-ctl create`: a new resource identity, counters 0, fresh (holds
// nothing of value), empty bitmap.
MetaHeader create(const std::string& resource, uint64_t data_size, uint64_t extent_size, uint32_t keepdirty,
                  const std::array<uint8_t, 16>& uuid, uint64_t created_unix);

// The configuration's keepdirty, recorded at start-up.
MetaHeader set_keepdirty(const MetaHeader& h, uint32_t keepdirty);

// The primary accepts its first write without a connected secondary: a new
// data generation (localcnt + 1), which the peer will see as "wrote alone".
// Durable before that write completes.
// `now_ns`: the wall clock (unix ns), recorded as generation_time.
MetaHeader start_generation(const MetaHeader& h, uint64_t now_ns = 0);

// What a node records when the pair connects with decision `d` (made from
// the two HELLOs; the same decision on both sides). `peer` is the other
// node's generation as it sent it; `work` says whether anything is to be
// copied. A full sync to this node makes it take the primary's identity and
// its view of our generation (so an interrupted full sync resumes as an
// ordinary one); a primary the peer accepted is no longer fresh; a node that
// is to receive data is marked the target of an unfinished sync
// (inconsistent) until finish_sync.
MetaHeader record_connect(const MetaHeader& h, const SyncDecision& d, bool as_primary, const Generation& peer,
                          bool work);

// What the primary stores as remotecnt when the sync of decision `d`
// finishes: the secondary's localcnt as that connect left it (record_connect
// may have changed it), not the one its HELLO carried.
uint64_t peer_localcnt_after_connect(const SyncDecision& d, const Generation& primary, const Generation& secondary);

// The sync copying toward (kToPeer) or from (kFromPeer) the peer starts.
MetaHeader begin_sync(const MetaHeader& h, SyncDirection direction);

// The sync completed (SYNC_DONE sent and confirmed, or received): both nodes
// hold the same data; each stores the other's localcnt as its remotecnt.
MetaHeader finish_sync(const MetaHeader& h, uint64_t peer_localcnt);

// `role primary --force` on the target of an unfinished sync: the operator
// takes this node's data as it is.
MetaHeader take_data_as_is(const MetaHeader& h);

// `discard-my-data`: this node's data is to be replaced (the split-brain
// victim); it becomes fresh, so the next connect copies everything to it.
MetaHeader discard_my_data(const MetaHeader& h);

// Queries.
bool is_fresh(const MetaHeader& h);
bool is_sync_target(const MetaHeader& h);  // inconsistent: data still to come from the peer
bool is_sync_source(const MetaHeader& h);
Generation generation(const MetaHeader& h);
// "to-peer", "from-peer" or "" (no sync recorded).
const char* sync_direction_name(const MetaHeader& h);

}  // namespace hastnbd::meta
