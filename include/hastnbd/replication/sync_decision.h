// Who synchronises whom when the primary and the secondary connect (docs/design.md,
// "Metadata and generations"): a pure function of both nodes' metadata as
// exchanged in the HELLO records. Both sides evaluate it on the same inputs
// and so reach the same decision; each acts on its own part of it.
//
// `localcnt` counts data generations a node produced without its peer;
// `remotecnt` is the peer's localcnt as last seen in sync. Comparing each
// side's localcnt with what the other remembers of it tells who wrote alone.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "hastnbd/config/config.h"

namespace hastnbd {

struct Generation {
  std::array<uint8_t, 16> uuid{};
  uint64_t localcnt = 0;
  uint64_t remotecnt = 0;
  bool fresh = false;  // kMetaFresh: never synchronised, never wrote as primary
};

enum class SyncKind {
  kRefuseUuid,       // different resources, or a fresh primary facing a secondary with data
  kSplitBrain,       // both wrote without the other: refuse, the operator picks a victim
  kFullSync,         // fresh secondary: every extent, primary -> secondary
  kInStep,           // counters agree: the union of both dirty maps, primary -> secondary
  kPrimaryNewer,     // the primary wrote alone: the union, primary -> secondary
  kSecondaryNewer,   // the secondary wrote alone: the union, secondary -> primary
  kAnomaly,          // a counter is behind what the other side remembers: full sync from the side ahead
  kSplitBrainResolved,  // a split-brain the policy resolved: the secondary's changes are discarded,
                        // the union of both maps primary -> secondary
};
const char* to_string(SyncKind k);

struct SyncDecision {
  SyncKind kind = SyncKind::kRefuseUuid;
  bool refuse = false;           // the connection must not proceed
  bool full = false;             // every extent, not just the dirty ones
  bool from_secondary = false;   // data flows secondary -> primary
  bool adopt_uuid = false;       // the secondary takes the primary's UUID
  std::string reason;            // for logs and the refusal message
};

SyncDecision decide_sync(const Generation& primary, const Generation& secondary);


// What each side changed since the split, from its HELLO: the extents
// dirty in its map, and when it started its current generation (unix ns,
// 0 unknown).
struct Changes {
  uint64_t extents = 0;
  uint64_t generation_time = 0;
};

// A split-brain decision under `policy`. Unchanged (refused, manual) when
// the policy does not pick a side: manual; discard-zero-changes, since a
// split-brain means both sides wrote (a side that wrote nothing never
// starts a generation, and the pair resolves as primary-newer or
// secondary-newer whatever the policy); a tie; an unknown time. When the
// pick is the primary, a refusal that says so (the primary's data is not
// discarded under its users; make it secondary). Else kSplitBrainResolved.
SyncDecision resolve_split_brain(const SyncDecision& d, SplitBrainPolicy policy, const Changes& primary,
                                 const Changes& secondary);

}  // namespace hastnbd
