// Dirty-page log for live migration (vhost-user VHOST_USER_PROTOCOL_F_LOG_SHMFD): one bit per
// 4 KiB page of guest-physical memory in a file the front-end shares (SET_LOG_BASE). While
// VHOST_F_LOG_ALL is negotiated, every byte the engine writes into guest memory (receive
// buffers, blk read data and status, used rings) sets its page's bit, so the front-end sends
// that page again. Bits are set with atomic OR: the front-end clears them concurrently.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "sigbus_guard.h"

namespace vhd {

class MemTable;

constexpr int VHOST_F_LOG_ALL = 26;
constexpr uint64_t kLogPageShift = 12;

class DirtyLog {
 public:
  ~DirtyLog() { unmap(); }
  // Maps `size` bytes of fd at offset (MAP_SHARED), replacing any earlier map, under the SIGBUS
  // guard (the front-end may shrink the file later: a fault is recorded in `fault`, the
  // device's record). The caller swaps logs only on the owner worker with every RX lock held,
  // so no writer sees a change.
  bool map(int fd, uint64_t size, uint64_t offset, std::shared_ptr<MemFault> fault, std::string* err) noexcept;
  void unmap() noexcept;
  void swap(DirtyLog& o) noexcept;

  // LOG_ALL negotiated (owner only, under RX locks).
  bool on = false;
  bool active() const noexcept { return on && base_ != nullptr; }
  uint64_t bytes() const noexcept { return size_; }
  // The front-end shrank the log file: (part of) it is our zero pages now.
  bool faulted() const noexcept { return sigbus::faulted(guard_); }

  // Marks [gpa, gpa + len). Pages beyond the log are counted, not written.
  void mark(uint64_t gpa, uint64_t len) noexcept;
  // Marks a range given by its host address in one of mem's regions (reverse translation).
  void markHost(const MemTable& mem, const void* host, uint64_t len) noexcept;
  uint64_t outOfRange() const noexcept { return outOfRange_.load(std::memory_order_relaxed); }

 private:
  uint8_t* base_ = nullptr;  // the log as the front-end sees it (map + offset)
  void* map_ = nullptr;
  size_t mapLen_ = 0;
  uint64_t size_ = 0;
  int guard_ = -1;                   // SIGBUS registry handle
  std::shared_ptr<MemFault> fault_;  // outlives the registration (the handler writes to it)
  std::atomic<uint64_t> outOfRange_{0};
};

}  // namespace vhd
