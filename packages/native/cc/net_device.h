// virtio-net device datapath over split virtqueues: TX (driver->device) gathers frames out
// of guest chains into per-worker buffers; RX (device->driver) scatters frames into guest
// buffers, with MRG_RXBUF, header size per features and offload pass-through.
#pragma once
#include <sys/uio.h>
#include <cstdint>
#include <memory>

#include "counters.h"
#include "crash_attr.h"
#include "dirty_log.h"
#include "guest_memory.h"
#include "virtqueue.h"

namespace vhd {

class L2Switch;
struct BlkDevice;

constexpr int kBurst = 32;
constexpr uint32_t kMaxFrame = 65535;
constexpr uint32_t kFrameStride = 65536;
constexpr int kMaxIov = 1024;
constexpr int kMaxRxChains = 256;
constexpr int kNetHdrMax = 12;

// virtio-net feature bits used here
constexpr int VIRTIO_NET_F_CSUM = 0;
constexpr int VIRTIO_NET_F_GUEST_CSUM = 1;
constexpr int VIRTIO_NET_F_GUEST_TSO4 = 7;
constexpr int VIRTIO_NET_F_GUEST_TSO6 = 8;
constexpr int VIRTIO_NET_F_GUEST_ECN = 9;
constexpr int VIRTIO_NET_F_GUEST_UFO = 10;
constexpr int VIRTIO_NET_F_MRG_RXBUF = 15;
constexpr int VIRTIO_NET_F_GUEST_USO4 = 54;
constexpr int VIRTIO_NET_F_GUEST_USO6 = 55;
constexpr int VHOST_USER_F_PROTOCOL_FEATURES = 30;
constexpr int VIRTIO_F_VERSION_1 = 32;

constexpr uint8_t VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
constexpr uint8_t VIRTIO_NET_HDR_GSO_NONE = 0;
constexpr uint8_t VIRTIO_NET_HDR_GSO_TCPV4 = 1;
constexpr uint8_t VIRTIO_NET_HDR_GSO_UDP = 3;
constexpr uint8_t VIRTIO_NET_HDR_GSO_TCPV6 = 4;
constexpr uint8_t VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
constexpr uint8_t VIRTIO_NET_HDR_GSO_ECN = 0x80;

enum class EvKind { kRingError, kChainError, kQueueBroken, kTapError, kSpoofed, kPortLocked };

// Receives datapath events; must never block or allocate.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void post(int devId, int queue, EvKind kind, const char* reason) noexcept = 0;
};

// One frame in a worker's burst buffer: the 12-byte (mrg_rxbuf) header as the source sent
// it (num_buffers zero), and the frame.
struct Pkt {
  uint8_t hdr[kNetHdrMax];
  uint32_t len;
  uint8_t* data;
  // NEEDS_CSUM handling across several destinations: the field is computed in place for a
  // destination without GUEST_CSUM and restored for one with it.
  bool csumDone;
  uint16_t csumOrig;
};

// Per-worker scratch, allocated once when the worker starts.
struct WorkerCtx {
  Pkt pkts[kBurst];
  int n = 0;
  uint8_t pos[kBurst];  // TX: avail position (within the burst) of each pkt
  uint8_t* bufs = nullptr;  // kBurst * kFrameStride
  struct iovec iov[kMaxIov];
  Chain chains[kMaxRxChains];
  char reason[256];
  EventSink* events = nullptr;
  uint64_t nowNs = 0;
  // Scratch for the switch: destinations of a burst.
  void** dstPtr = nullptr;   // Device* per destination slot
  uint32_t* dstMask = nullptr;
  int dstCap = 0;
  // This thread's crash attribution slot (crash_attr.h): the device served, the one delivered to.
  crash::Slot* attr = &crash::gSpareSlot;
};

// One device of the engine, net or blk (blk != nullptr): its queues, guest memory, dirty log
// and counters. The net datapath over it is below; the blk one is in blk_device.h.
struct Device {
  int devId = -1;
  int switchId = -1;
  uint8_t mac[6] = {};
  int mtu = 1500;
  int maxQueuePairs = 1;
  int worker = 0;
  L2Switch* sw = nullptr;  // null for blk devices
  // A virtio-blk device (blk_device.h) uses the same queues, memory and counters; its request
  // queues are vq[0, blk->numQueues). Owned (the engine deletes it with the device).
  BlkDevice* blk = nullptr;

  uint64_t features = 0;
  int hdrLen = 10;
  bool mrg = false;

  Virtqueue vq[kMaxQueues];
  std::unique_ptr<MemTable> mem;  // never null; swapped only by the owner under every RX lock
  DirtyLog log;                   // SET_LOG_BASE; swapped and switched like mem
  QueueCounters* ctr = nullptr;   // kMaxQueues entries
  uint64_t* portCtr = nullptr;    // kMaxQueues x kPortCountersPerQueue (counters.h)

  bool has(int bit) const noexcept { return (features >> bit) & 1; }
  // Recomputes header size, MRG_RXBUF, ring flags and default enable state (owner only,
  // under RX locks).
  void applyFeatures(uint64_t f) noexcept;
  void refreshEnabled(int q) noexcept;
};

// Reports ctx.reason as `kind`, rate-limited (≤ 1/s per queue, shared with chain errors).
void rateLimitedPost(Device& d, int q, EvKind kind, WorkerCtx& ctx) noexcept;
// Reports and rate-limits (≤ 1/s per queue) a chain error; counts nothing.
void chainError(Device& d, int q, WorkerCtx& ctx) noexcept;
// Marks the queue broken, writes its errFd, reports "queue-broken".
void queueBroken(Device& d, int q, WorkerCtx& ctx) noexcept;

// Pops up to kBurst chains from TX queue q into ctx.pkts (ctx.n good frames), returns the
// chains to the used ring and signals. Returns the number of chains consumed (work done).
int netTxBurst(Device& d, int q, WorkerCtx& ctx) noexcept;
// The frames in pktMask (ctx.pkts indices) of queue vq's burst reached their last destination.
void netTxDelivered(Virtqueue& vq, const WorkerCtx& ctx, uint32_t pktMask) noexcept;
// Publishes the burst's used entries once it is forwarded, and clears its progress record.
void netTxFinish(Device& d, int q) noexcept;
// Delivers the frames of ctx.pkts selected by mask into d's RX queue for `pair`.
// skipOffloads: the source is not a virtio device (no header checks needed beyond this).
// Delivers the frames in mask to d's RX queue of `pair`; then marks srcDone done in the source
// TX queue's progress record (src may be null), before any notification syscall.
void netDeliver(Device& d, int pair, WorkerCtx& ctx, uint32_t mask, Virtqueue* src = nullptr, uint32_t srcDone = 0) noexcept;

// Completes a NEEDS_CSUM packet in software; false when csum_start/offset do not fit.
bool softwareChecksum(Pkt& p) noexcept;

}  // namespace vhd
