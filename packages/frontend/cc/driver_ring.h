// The driver side of one split virtqueue (virtio 1.2 §2.7), as the front-end driver uses it.
// The ring lives in shared memory that the back-end also writes, so every index read from
// it is checked before it is trusted. Single-threaded: only the driver thread (or the JS
// thread while it holds the device lock) touches a SplitRing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "split_ring.h"  // packages/native/cc: the layout the engine reads

namespace vhd::drv {

/** Offsets of one queue's rings from the start of driver memory. */
struct RingLayout {
  uint64_t desc = 0, avail = 0, used = 0, end = 0;
};

/** Lays a ring of `size` entries at `offset` (4096-aligned): desc, avail right after, used
 *  4096-aligned; end is 4096-aligned too. */
RingLayout ComputeRingLayout(uint64_t offset, uint32_t size);

class SplitRing {
 public:
  enum class Pop { kNone, kOk, kBroken };

  /** mem is where driver memory starts in this process; layout offsets are relative to it. */
  void Attach(uint8_t* mem, const RingLayout& layout, uint32_t size);
  /** Zeroes the ring memory and indices, frees every descriptor, interrupts off. */
  void Reset(bool eventIdx);

  uint32_t size() const { return size_; }
  uint32_t inflight() const { return size_ - uint32_t(free_.size()); }
  bool HasFree() const { return !free_.empty(); }
  /** Takes a free descriptor id (call only when HasFree()). */
  uint16_t AllocDesc();
  VringDesc* Desc(uint16_t id) { return &desc_[id]; }

  /** Puts a descriptor head into the avail ring (not yet visible to the device). */
  void Push(uint16_t id);
  /** Makes pushed entries visible (store-release of avail->idx); returns true when the
   *  device asked to be notified (EVENT_IDX avail_event, else !VRING_USED_F_NO_NOTIFY). */
  bool PublishAndCheckKick();
  /** True when entries were pushed but not yet published. */
  bool HasUnpublished() const { return availIdx_ != publishedIdx_; }
  /** True when the device has used every entry we published: it holds none of ours now. */
  bool DeviceHoldsNone() const {
    uint16_t used = __atomic_load_n(usedIdxP_, __ATOMIC_ACQUIRE);
    return publishedIdx_ != lastUsed_ && used == publishedIdx_;
  }

  /** Next used element. kBroken when the device's used index is impossible (moved further
   *  than the ring size); the caller must stop using the ring until Reset. A used id that was
   *  not in flight is reported as kOk with *bad = true (the caller counts it, nothing freed). */
  Pop PopUsed(uint32_t* id, uint32_t* len, bool* bad);
  /** Ask the device for a call (used buffer notification) on the next used entry; returns true
   *  when used entries are already pending (do not sleep then). */
  bool EnableInterrupts();
  void DisableInterrupts();

 private:
  uint32_t size_ = 0;
  bool eventIdx_ = false;
  uint8_t* base_ = nullptr;
  RingLayout layout_;
  VringDesc* desc_ = nullptr;
  uint16_t* availFlags_ = nullptr;
  uint16_t* availIdxP_ = nullptr;
  uint16_t* availRing_ = nullptr;
  uint16_t* usedEvent_ = nullptr;  // avail->ring[size]
  uint16_t* usedFlags_ = nullptr;
  uint16_t* usedIdxP_ = nullptr;
  VringUsedElem* usedRing_ = nullptr;
  uint16_t* availEvent_ = nullptr;  // used->ring[size]

  uint16_t availIdx_ = 0;      // next avail slot (shadow of avail->idx)
  uint16_t publishedIdx_ = 0;  // last value stored to avail->idx
  uint16_t lastUsed_ = 0;      // next used entry to consume
  uint16_t usedSeen_ = 0;      // last used->idx read from the device
  std::vector<uint16_t> free_;
  std::vector<uint8_t> inFlight_;
};

}  // namespace vhd::drv
