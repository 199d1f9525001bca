// Driver side of a split virtqueue: see driver_ring.h.
#include "driver_ring.h"

#include <cstring>

namespace vhd::drv {
namespace {
inline uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }
inline uint16_t LoadAcquire(const uint16_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
inline uint16_t LoadRelaxed(const uint16_t* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
inline void StoreRelease(uint16_t* p, uint16_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
inline void StoreRelaxed(uint16_t* p, uint16_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
}  // namespace

RingLayout ComputeRingLayout(uint64_t offset, uint32_t size) {
  RingLayout l;
  l.desc = offset;
  l.avail = l.desc + DescTableBytes(size);
  l.used = AlignUp(l.avail + AvailRingBytes(size), 4096);
  l.end = AlignUp(l.used + UsedRingBytes(size), 4096);
  return l;
}

void SplitRing::Attach(uint8_t* mem, const RingLayout& layout, uint32_t size) {
  base_ = mem;
  layout_ = layout;
  size_ = size;
  desc_ = reinterpret_cast<VringDesc*>(mem + layout.desc);
  auto* avail = reinterpret_cast<uint16_t*>(mem + layout.avail);
  availFlags_ = avail + kAvailFlagsWord;
  availIdxP_ = avail + kAvailIdxWord;
  availRing_ = avail + kAvailRingWord;
  usedEvent_ = avail + UsedEventWord(size);
  uint8_t* used = mem + layout.used;
  usedFlags_ = reinterpret_cast<uint16_t*>(used + kUsedFlagsOff);
  usedIdxP_ = reinterpret_cast<uint16_t*>(used + kUsedIdxOff);
  usedRing_ = reinterpret_cast<VringUsedElem*>(used + kUsedRingOff);
  availEvent_ = reinterpret_cast<uint16_t*>(used + AvailEventOff(size));
  inFlight_.assign(size, 0);
  free_.reserve(size);
}

void SplitRing::Reset(bool eventIdx) {
  eventIdx_ = eventIdx;
  std::memset(base_ + layout_.desc, 0, layout_.end - layout_.desc);
  availIdx_ = publishedIdx_ = lastUsed_ = usedSeen_ = 0;
  free_.clear();
  for (uint32_t i = size_; i-- > 0;) free_.push_back(uint16_t(i));  // hands out 0, 1, 2, ...
  inFlight_.assign(size_, 0);
  DisableInterrupts();
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

uint16_t SplitRing::AllocDesc() {
  uint16_t id = free_.back();
  free_.pop_back();
  return id;
}

void SplitRing::Push(uint16_t id) {
  inFlight_[id] = 1;
  availRing_[availIdx_ & (size_ - 1)] = id;
  availIdx_++;
}

bool SplitRing::PublishAndCheckKick() {
  uint16_t old = publishedIdx_;
  StoreRelease(availIdxP_, availIdx_);
  publishedIdx_ = availIdx_;
  // The device may be deciding to sleep right now: order our idx store before reading its
  // suppression state (a full barrier, virtio 1.2 §2.7.13.4).
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (eventIdx_) return VringNeedEvent(LoadRelaxed(availEvent_), availIdx_, old);
  return (LoadRelaxed(usedFlags_) & VRING_USED_F_NO_NOTIFY) == 0;
}

SplitRing::Pop SplitRing::PopUsed(uint32_t* id, uint32_t* len, bool* bad) {
  *bad = false;
  if (lastUsed_ == usedSeen_) {
    uint16_t idx = LoadAcquire(usedIdxP_);
    // The device can never have used more entries than were ever made available.
    if (uint16_t(idx - lastUsed_) > uint16_t(publishedIdx_ - lastUsed_)) return Pop::kBroken;
    usedSeen_ = idx;
    if (lastUsed_ == usedSeen_) return Pop::kNone;
  }
  VringUsedElem e;
  std::memcpy(&e, &usedRing_[lastUsed_ & (size_ - 1)], sizeof e);
  lastUsed_++;
  *id = e.id;
  *len = e.len;
  if (e.id >= size_ || !inFlight_[e.id]) {
    *bad = true;
    return Pop::kOk;
  }
  inFlight_[e.id] = 0;
  free_.push_back(uint16_t(e.id));
  return Pop::kOk;
}

bool SplitRing::EnableInterrupts() {
  if (eventIdx_)
    StoreRelaxed(usedEvent_, lastUsed_);
  else
    StoreRelaxed(availFlags_, 0);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return LoadAcquire(usedIdxP_) != lastUsed_;
}

void SplitRing::DisableInterrupts() {
  // With EVENT_IDX the flag is ignored by the device; an event index just behind the
  // consumer position is only crossed again after a full 16-bit wrap.
  StoreRelaxed(availFlags_, VRING_AVAIL_F_NO_INTERRUPT);
  if (eventIdx_) StoreRelaxed(usedEvent_, uint16_t(lastUsed_ - 1));
}

}  // namespace vhd::drv
