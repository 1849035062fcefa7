// The fine-tracking records of a clean stop (docs/design.md, "Fine-grained
// tracking"): STATE_DIR/RESOURCE.fine, written at a clean stop once the
// bitmap is durable, taken (read and removed) at the next start. A record
// is only a narrowing of what the durable extent map says, so a file that
// is missing, damaged, or from another generation of the metadata is simply
// not used: the extents are then synchronised whole (or compared).
//
// Layout, little-endian, field by field: magic "HNBDFINE", u32 version 1,
// 16-byte resource UUID, u64 localcnt, remotecnt, data_size, extent_size,
// granule, record count; per record u64 extent and the granule bits
// (extent_size / granule bits in u64 words); then XXH3-64 of all before it.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "hastnbd/base/status.h"

namespace hastnbd {

struct FineSnapshot {
  std::array<uint8_t, 16> uuid{};
  uint64_t localcnt = 0, remotecnt = 0, data_size = 0, extent_size = 0, granule = 0;
  std::vector<std::pair<uint64_t, std::vector<uint64_t>>> records;  // extent, granule bits
  bool operator==(const FineSnapshot&) const = default;
};

std::vector<uint8_t> encode_fine(const FineSnapshot& s);
// Checks the magic, version, checksum, the granule against the extent
// size, and every record's extent and size; the message names what failed.
Result<FineSnapshot> decode_fine(std::span<const uint8_t> bytes);

// Written aside, fsynced and renamed, mode 0600.
Status save_fine(const std::string& path, const FineSnapshot& s);
// Reads and removes the file; nullopt when there is none. A file that
// cannot be removed is not used (it would outlive the records it holds).
Result<std::optional<FineSnapshot>> take_fine(const std::string& path);

}  // namespace hastnbd
