// Status and Result: how errors travel through hastnbd without exceptions.
//
// A Status is either ok or carries an errno-style code plus a message meant for
// a human (an admin reading the log or a hastnbd-ctl error). Result<T> is a
// value or a non-ok Status. Both are cheap to move and safe to copy.
#pragma once

#include <cerrno>
#include <optional>
#include <string>
#include <utility>

namespace hastnbd {

class [[nodiscard]] Status {
 public:
  Status() = default;  // ok
  static Status Ok() { return Status(); }
  static Status Error(int code, std::string message) {
    return Status(code == 0 ? EIO : code, std::move(message));
  }

  bool ok() const { return code_ == 0; }
  int code() const { return code_; }  // errno value; 0 when ok
  const std::string& message() const { return message_; }

 private:
  Status(int code, std::string message) : code_(code), message_(std::move(message)) {}
  int code_ = 0;
  std::string message_;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {
    if (status_.ok()) status_ = Status::Error(EINVAL, "internal: Result built from ok Status");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace hastnbd
