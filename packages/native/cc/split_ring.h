// The split virtqueue's memory layout (virtio 1.2 §2.7), defined once for both of its sides:
// the engine's device side (virtqueue.h) and the front-end driver's side
// (packages/frontend/cc/driver_ring.h, which includes this file through its binding.gyp).
// Layout only: descriptor and used-element structs, flags, where each field sits, sizes and
// alignment. Everything is little-endian (virtio 1.x); so must the host be.
#pragma once
#include <cstdint>

namespace vhd {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "virtio 1.x rings are little-endian; host must be too");

/** A queue holds at most this many entries (and a power of two of them). */
constexpr uint32_t kMaxQueueSize = 32768;

struct VringDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(VringDesc) == 16, "desc layout");

struct VringUsedElem {
  uint32_t id;
  uint32_t len;
};
static_assert(sizeof(VringUsedElem) == 8, "used elem layout");

constexpr uint16_t VRING_DESC_F_NEXT = 1;
constexpr uint16_t VRING_DESC_F_WRITE = 2;
constexpr uint16_t VRING_DESC_F_INDIRECT = 4;
constexpr uint16_t VRING_USED_F_NO_NOTIFY = 1;
constexpr uint16_t VRING_AVAIL_F_NO_INTERRUPT = 1;
constexpr int VIRTIO_RING_F_INDIRECT_DESC = 28;
constexpr int VIRTIO_RING_F_EVENT_IDX = 29;

/** Alignment the spec requires of each part's guest address. */
constexpr uint64_t kDescAlign = 16, kAvailAlign = 2, kUsedAlign = 4;

/** Bytes each part takes for a ring of `size` entries (with the EVENT_IDX word at the end). */
constexpr uint64_t DescTableBytes(uint32_t size) { return uint64_t(sizeof(VringDesc)) * size; }
constexpr uint64_t AvailRingBytes(uint32_t size) { return 6ull + 2ull * size; }
constexpr uint64_t UsedRingBytes(uint32_t size) { return 6ull + uint64_t(sizeof(VringUsedElem)) * size; }

/** The avail ring as 16-bit words: flags, idx, ring[size], used_event. */
constexpr uint32_t kAvailFlagsWord = 0, kAvailIdxWord = 1, kAvailRingWord = 2;
constexpr uint32_t UsedEventWord(uint32_t size) { return kAvailRingWord + size; }

/** The used ring in bytes: flags, idx, elems {id, len}[size], avail_event. */
constexpr uint32_t kUsedFlagsOff = 0, kUsedIdxOff = 2, kUsedRingOff = 4, kUsedElemBytes = sizeof(VringUsedElem);
constexpr uint32_t UsedElemOff(uint32_t slot) { return kUsedRingOff + kUsedElemBytes * slot; }
constexpr uint32_t AvailEventOff(uint32_t size) { return UsedElemOff(size); }

/** §2.7.10: true when an event index between old (excluded) and newIdx was crossed. */
inline bool VringNeedEvent(uint16_t event, uint16_t newIdx, uint16_t old) {
  return uint16_t(newIdx - event - 1) < uint16_t(newIdx - old);
}

}  // namespace vhd
