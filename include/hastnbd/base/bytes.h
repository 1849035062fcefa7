// The one byte codec: fixed-width integers encoded field by field in a named
// byte order, never by memcpy of a struct. The NBD and peer protocols are
// big-endian on the wire (kBig); the metadata file is little-endian (kLittle).
//
// put/get work on raw pointers the caller has bounds-checked; Writer appends
// to a vector; Reader refuses to run past the end of its input and says which
// field ran short ("truncated at resource: needs 2 bytes at offset 4, 1
// left"), so hostile input is reported, never read beyond. Pure, header-only.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace hastnbd::bytes {

enum class Order { kBig, kLittle };

template <Order O, std::unsigned_integral T>
constexpr void put(uint8_t* p, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) {
    const size_t shift = 8 * (O == Order::kBig ? sizeof(T) - 1 - i : i);
    p[i] = uint8_t(v >> shift);
  }
}

template <Order O, std::unsigned_integral T>
constexpr T get(const uint8_t* p) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) {
    const size_t shift = 8 * (O == Order::kBig ? sizeof(T) - 1 - i : i);
    v = T(v | T(T(p[i]) << shift));
  }
  return v;
}

// Big-endian shorthands, for the two network protocols.
constexpr void put_be16(uint8_t* p, uint16_t v) { put<Order::kBig>(p, v); }
constexpr void put_be32(uint8_t* p, uint32_t v) { put<Order::kBig>(p, v); }
constexpr void put_be64(uint8_t* p, uint64_t v) { put<Order::kBig>(p, v); }
constexpr uint16_t get_be16(const uint8_t* p) { return get<Order::kBig, uint16_t>(p); }
constexpr uint32_t get_be32(const uint8_t* p) { return get<Order::kBig, uint32_t>(p); }
constexpr uint64_t get_be64(const uint8_t* p) { return get<Order::kBig, uint64_t>(p); }

// Appends fields to `out`.
template <Order O>
class Writer {
 public:
  explicit Writer(std::vector<uint8_t>& out) : out_(out) {}
  void u8(uint8_t v) { out_.push_back(v); }
  void u16(uint16_t v) { append(v); }
  void u32(uint32_t v) { append(v); }
  void u64(uint64_t v) { append(v); }
  void bytes(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    out_.insert(out_.end(), b, b + n);
  }
  void zeros(size_t n) { out_.insert(out_.end(), n, 0); }
  size_t size() const { return out_.size(); }

 private:
  template <class T>
  void append(T v) {
    size_t at = out_.size();
    out_.resize(at + sizeof(T));
    put<O>(out_.data() + at, v);
  }
  std::vector<uint8_t>& out_;
};

// Reads fields in order. After the first short read every further read
// returns 0 and the first error is kept; check ok() once at the end.
template <Order O>
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  size_t pos() const { return pos_; }
  size_t remaining() const { return in_.size() - pos_; }

  uint8_t u8(const char* what) { return need(1, what) ? in_[pos_++] : 0; }
  uint16_t u16(const char* what) { return take<uint16_t>(what); }
  uint32_t u32(const char* what) { return take<uint32_t>(what); }
  uint64_t u64(const char* what) { return take<uint64_t>(what); }
  void bytes(void* dst, size_t n, const char* what) {
    if (!need(n, what)) return;
    std::copy_n(in_.begin() + long(pos_), n, static_cast<uint8_t*>(dst));
    pos_ += n;
  }
  void skip(size_t n, const char* what) {
    if (need(n, what)) pos_ += n;
  }
  void fail(std::string message) {
    if (ok()) error_ = std::move(message);
  }

 private:
  bool need(size_t n, const char* what) {
    if (!ok()) return false;
    if (remaining() < n) {
      fail(std::string("truncated at ") + what + ": needs " + std::to_string(n) + " bytes at offset " +
           std::to_string(pos_) + ", " + std::to_string(remaining()) + " left");
      return false;
    }
    return true;
  }
  template <class T>
  T take(const char* what) {
    if (!need(sizeof(T), what)) return 0;
    T v = get<O, T>(in_.data() + pos_);
    pos_ += sizeof(T);
    return v;
  }

  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  std::string error_;
};

using BigWriter = Writer<Order::kBig>;
using BigReader = Reader<Order::kBig>;
using LittleWriter = Writer<Order::kLittle>;
using LittleReader = Reader<Order::kLittle>;

}  // namespace hastnbd::bytes
