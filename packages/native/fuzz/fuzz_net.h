// A virtio-net device over the fake guest, configured from the head of a fuzz input, for the
// net harnesses. Queues are set up as the engine's startQueue does (features, enable, counters,
// dirty log, Virtqueue::mapRings); the burst functions of net_device.h then run unchanged.
//
// Ring config (16 bytes, the first of every net input):
//   u8  ring size log2 (mod 9: 1..256 entries)
//   u8  feature bits: 0 INDIRECT_DESC, 1 EVENT_IDX, 2 VERSION_1, 3 MRG_RXBUF, 4 LOG_ALL (and
//       the used ring logged), 5 GUEST_CSUM, 6 GUEST_TSO4/TSO6/UFO/ECN/USO, 7 ring addresses
//       from the next 12 bytes (else the packed layout of ringLayout(0, size))
//   u16 last avail index (SET_VRING_BASE)
//   u32 desc, avail, used: offsets from region 0's front-end VA (any value: mapRings judges)
#pragma once
#include <memory>

#include "../cc/net_device.h"
#include "fuzz_guest.h"

namespace fuzz {

struct RingConfig {
  uint16_t size;
  uint8_t bits;
  vhd::QueueSetup setup;
};

RingConfig readRing(Input& in);
// Rings packed from gpa `base` on (region 0, where gpa == offset from kUva0): desc table,
// avail ring, used ring; *end is the first byte after them (16-byte aligned).
vhd::QueueSetup ringLayout(uint64_t base, uint16_t size, uint64_t* end);
uint64_t featuresOf(uint8_t bits);

// Posts nothing anywhere: checks that every reason is a terminated string.
class CheckingSink : public vhd::EventSink {
 public:
  void post(int devId, int queue, vhd::EvKind kind, const char* reason) noexcept override;
};

// The per-worker scratch, allocated once (as a worker does when it starts).
vhd::WorkerCtx& workerCtx();

class NetRig {
 public:
  explicit NetRig(uint64_t features);
  ~NetRig();
  NetRig(const NetRig&) = delete;
  NetRig& operator=(const NetRig&) = delete;
  // startQueue: maps queue q's rings; false (with a reason) when they are refused.
  bool start(int q, const vhd::QueueSetup& s);
  vhd::Device d;
  vhd::QueueCounters ctr[vhd::kMaxQueues] = {};
};

}  // namespace fuzz
