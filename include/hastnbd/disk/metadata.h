// The metadata file: a small header kept in two checksummed slots, then the
// dirty bitmap (one bit per extent), memory-mapped.
//
// Layout (all integers little-endian, encoded field by field):
//   [0, 4096)      header slot 0
//   [4096, 8192)   header slot 1
//   [8192, ...)    bitmap, rounded up to 4096 bytes; bit i of byte j = extent 8j+i
// A header update writes the slot NOT holding the newest valid header, with a
// higher sequence number, then fdatasyncs: a torn write damages only the slot
// being written, whose checksum then fails, and the other slot still holds the
// previous header. Readers take the valid slot with the highest sequence.
//
// The daemon holds an exclusive flock on the file for its lifetime; the
// offline commands (create, dump) refuse to write while it is held.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/status.h"

namespace hastnbd {

class Uring;

inline constexpr uint64_t kMetaMagic = 0x4d44424e54534148ULL;  // "HASTNBDM" little-endian
inline constexpr uint32_t kMetaVersion = 1;
inline constexpr size_t kMetaSlotSize = 4096;
inline constexpr size_t kMetaHeaderBytes = 256;  // encoded header, checksum in the last 8
inline constexpr uint64_t kMetaBitmapOffset = 2 * kMetaSlotSize;
inline constexpr size_t kMetaNameMax = 64;

enum MetaFlags : uint32_t {
  kMetaFresh = 1 << 0,          // never synchronised, never primary: holds no data of value
  kMetaSynchronising = 1 << 1,  // a sync was running; sync_direction says which way
};

enum class SyncDirection : uint8_t { kNone = 0, kToPeer = 1, kFromPeer = 2 };

struct MetaHeader {
  uint64_t sequence = 0;
  std::string resource;
  uint64_t data_size = 0;
  uint64_t extent_size = 0;
  uint32_t keepdirty = 0;
  uint32_t flags = 0;
  SyncDirection sync_direction = SyncDirection::kNone;
  std::array<uint8_t, 16> uuid{};
  uint64_t localcnt = 0;
  uint64_t remotecnt = 0;
  uint64_t created = 0;  // unix seconds
  // When this node first started a generation alone since its last
  // completed sync (start_generation; cleared by finish_sync), unix ns; 0
  // none or unknown (a header written before this field existed: it sits
  // in what was zero padding). after_split_brain discard-younger-primary
  // compares it.
  uint64_t generation_time = 0;

  uint64_t extents() const { return extent_size ? (data_size + extent_size - 1) / extent_size : 0; }
  uint64_t bitmap_bytes() const { return ((extents() + 7) / 8 + 4095) / 4096 * 4096; }
  uint64_t file_size() const { return kMetaBitmapOffset + bitmap_bytes(); }
  std::string uuid_string() const;
  bool operator==(const MetaHeader&) const = default;
};

// Pure codec: a slot's bytes <-> header. decode() checks magic, version,
// checksum and internal consistency and says which failed.
std::array<uint8_t, kMetaSlotSize> encode_meta_header(const MetaHeader& h);
Result<MetaHeader> decode_meta_header(std::span<const uint8_t> slot);
// The newest valid header of the two slots; fails only if neither is valid.
Result<MetaHeader> pick_meta_header(std::span<const uint8_t> slot0, std::span<const uint8_t> slot1);

std::array<uint8_t, 16> random_uuid();

class MetadataFile {
 public:
  // Creates (or with `force` replaces) the file with a fresh header: new UUID,
  // counters 0, empty bitmap, kMetaFresh. Synchronous; not for the event loop.
  static Status create(const std::string& path, const MetaHeader& header, bool force);
  // Opens, validates, locks (unless `lock` is false) and maps the bitmap. Synchronous, at startup.
  static Result<std::unique_ptr<MetadataFile>> open(const std::string& path, bool lock, bool writable);
  ~MetadataFile();

  // Refuses a file made for another resource, size or extent size, saying which.
  Status check_matches(const std::string& resource, uint64_t data_size, uint64_t extent_size) const;

  const MetaHeader& header() const { return header_; }
  std::span<uint8_t> bitmap() { return {bitmap_, size_t(header_.bitmap_bytes())}; }
  std::span<const uint8_t> bitmap() const { return {bitmap_, size_t(header_.bitmap_bytes())}; }
  const std::string& path() const { return path_; }

  // Durably replaces the header (next slot, sequence + 1). Asynchronous.
  awaitable<Status> write_header(Uring& uring, MetaHeader h);
  // Makes the mapped bitmap durable (fdatasync of the file). Asynchronous.
  awaitable<Status> sync_bitmap(Uring& uring);
  // Blocking versions, for startup, shutdown and offline commands.
  Status write_header_now(MetaHeader h);
  Status sync_now();

 private:
  MetadataFile() = default;
  std::string path_;
  int fd_ = -1;
  uint8_t* bitmap_ = nullptr;
  MetaHeader header_;
  int newest_slot_ = 0;
  std::unique_ptr<std::array<uint8_t, kMetaSlotSize>> slot_buf_;  // in flight to the kernel
};

}  // namespace hastnbd
