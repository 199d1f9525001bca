// Inflight I/O tracking for blk VFs (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD, split rings): a
// region the front-end keeps across our restarts, one descriptor-state table per queue. We
// mark a request's head inflight when we take it and clear it once its completion is published
// in the used ring; the queue's used_idx follows used->idx. A successor (after our restart,
// with the area handed back by SET_INFLIGHT_FD) checks the area before trusting any of it.
// Because completions are published in avail order, the requests still marked are exactly
// those from used->idx on, which the successor takes again in avail order (= counter order).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "sigbus_guard.h"

namespace vhd {

// Layout from the vhost-user spec ("Inflight I/O tracking", split virtqueue).
struct InflightDesc {
  uint8_t inflight;
  uint8_t padding[5];
  uint16_t next;
  uint64_t counter;
};
static_assert(sizeof(InflightDesc) == 16, "inflight desc layout");

struct InflightQueue {
  uint64_t features;
  uint16_t version;
  uint16_t descNum;
  uint16_t lastBatchHead;
  uint16_t usedIdx;
  InflightDesc desc[];
};
static_assert(sizeof(InflightQueue) == 16, "inflight queue header layout");

constexpr uint16_t kInflightVersion = 1;
constexpr uint64_t kInflightAlign = 64;

// Bytes of one queue's region (header + table, 64-byte aligned) for a ring of queueSize.
inline uint64_t inflightQueueBytes(uint32_t queueSize) {
  return (sizeof(InflightQueue) + sizeof(InflightDesc) * (uint64_t)queueSize + kInflightAlign - 1) & ~(kInflightAlign - 1);
}

// A mapped area and its per-queue tables.
class InflightArea {
 public:
  ~InflightArea() { unmap(); }
  // Maps and checks `size` bytes of fd at offset for numQueues rings of queueSize. `fresh`:
  // the area was just created by us (GET_INFLIGHT_FD) and is initialized; otherwise every
  // field the front-end could have changed is checked (version, sizes, flags 0/1) and
  // *pending gets the number of requests still marked per queue. "" or why not. The mapping is
  // under the SIGBUS guard (a fault is recorded in `fault`, the device's record); a fresh area
  // is sealed against shrinking and growing first.
  std::string map(int fd, uint64_t size, uint64_t offset, uint32_t numQueues, uint32_t queueSize, bool fresh, uint32_t* pending,
                  std::shared_ptr<MemFault> fault);
  void unmap() noexcept;
  void swap(InflightArea& o) noexcept;
  InflightQueue* queue(int q) const noexcept { return (q >= 0 && (uint32_t)q < numQueues_) ? queues_[q] : nullptr; }
  uint32_t queueSize() const noexcept { return queueSize_; }
  uint64_t nextCounter() noexcept { return ++counter_; }
  // The front-end shrank the area's file: (part of) it is our zero pages now.
  bool faulted() const noexcept { return sigbus::faulted(guard_); }

 private:
  void* map_ = nullptr;
  size_t len_ = 0;
  InflightQueue* queues_[64] = {};
  uint32_t numQueues_ = 0, queueSize_ = 0;
  uint64_t counter_ = 0;  // highest counter seen or given: orders takes across restarts
  int guard_ = -1;                   // SIGBUS registry handle
  std::shared_ptr<MemFault> fault_;  // outlives the registration (the handler writes to it)
};

// Worker, when a request is taken / after its used entry is published / at a ring's start.
// Every index is bounded by queueSize(), the value we checked and keep privately: the
// front-end can rewrite desc_num (or anything else in the area) at any moment.
inline void inflightTake(InflightArea& a, int q, uint16_t head) noexcept {
  InflightQueue* iq = a.queue(q);
  if (!iq || head >= a.queueSize()) return;
  iq->desc[head].counter = a.nextCounter();
  __atomic_store_n(&iq->desc[head].inflight, (uint8_t)1, __ATOMIC_RELEASE);
}
inline void inflightDone(InflightArea& a, int q, uint16_t head) noexcept {
  InflightQueue* iq = a.queue(q);
  if (!iq || head >= a.queueSize()) return;
  iq->lastBatchHead = head;
  __atomic_store_n(&iq->desc[head].inflight, (uint8_t)0, __ATOMIC_RELEASE);
}
inline void inflightPublished(InflightArea& a, int q, uint16_t usedIdx) noexcept {
  if (InflightQueue* iq = a.queue(q)) __atomic_store_n(&iq->usedIdx, usedIdx, __ATOMIC_RELEASE);
}
// A ring starts at used->idx: whatever is still marked will be taken (and marked) again.
void inflightRestart(InflightArea& a, int q, uint16_t usedIdx) noexcept;

}  // namespace vhd
