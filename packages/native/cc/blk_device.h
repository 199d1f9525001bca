// virtio-blk device datapath (virtio 1.2 §5.2) over split virtqueues. The owner worker walks
// each request chain (header first and device-readable, data, status byte last and
// device-writable), validates it completely, and either completes it at once (bad request:
// IOERR or UNSUPP; GET_ID; null backing) or queues it on the device's io_uring (blk_io.h).
// Completions are published in avail order: a request finished early waits for the ones
// before it, so used->idx in guest memory always says exactly how many requests, counted from
// the ring's start, are done. Whoever runs the ring next (after a GET_VRING_BASE, a restart or
// an HA takeover) resumes at used->idx and re-executes only requests that were never
// completed; none is completed twice. Nothing is allocated per request and nothing crosses
// into JS: every ring position has a preallocated slot.
#pragma once
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blk_inflight.h"
#include "blk_io.h"
#include "net_device.h"

namespace vhd {

constexpr int VIRTIO_BLK_F_SIZE_MAX = 1;
constexpr int VIRTIO_BLK_F_SEG_MAX = 2;
constexpr int VIRTIO_BLK_F_RO = 5;
constexpr int VIRTIO_BLK_F_BLK_SIZE = 6;
constexpr int VIRTIO_BLK_F_FLUSH = 9;
constexpr int VIRTIO_BLK_F_TOPOLOGY = 10;
constexpr int VIRTIO_BLK_F_CONFIG_WCE = 11;
constexpr int VIRTIO_BLK_F_MQ = 12;
constexpr int VIRTIO_BLK_F_DISCARD = 13;
constexpr int VIRTIO_BLK_F_WRITE_ZEROES = 14;

constexpr uint32_t VIRTIO_BLK_T_IN = 0;
constexpr uint32_t VIRTIO_BLK_T_OUT = 1;
constexpr uint32_t VIRTIO_BLK_T_FLUSH = 4;
constexpr uint32_t VIRTIO_BLK_T_GET_ID = 8;
constexpr uint32_t VIRTIO_BLK_T_DISCARD = 11;
constexpr uint32_t VIRTIO_BLK_T_WRITE_ZEROES = 13;
constexpr uint8_t VIRTIO_BLK_S_OK = 0;
constexpr uint8_t VIRTIO_BLK_S_IOERR = 1;
constexpr uint8_t VIRTIO_BLK_S_UNSUPP = 2;
constexpr uint32_t VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

// Limits the device advertises (config space, written by the TS model from the same numbers:
// packages/runtime/src/session/blk_model.ts) and enforces on every request.
constexpr uint32_t kBlkSegMax = 126;             // data descriptors per request (SEG_MAX)
constexpr uint32_t kBlkSizeMax = 1u << 20;       // bytes per data descriptor (SIZE_MAX)
constexpr uint32_t kBlkMaxChain = kBlkSegMax + 2;  // descriptors per request: header, data, status
constexpr int kBlkMaxIov = 128;                  // host segments per request
constexpr uint32_t kBlkMaxSlots = 256;           // requests in flight per queue
constexpr uint32_t kBlkMaxDiscardSectors = 1u << 22;  // 2 GiB per discard / write-zeroes
constexpr uint32_t kBlkMaxDiscardSeg = 1;        // ranges per discard / write-zeroes request
constexpr uint32_t kBlkSectorSize = 512;
constexpr int kBlkIdBytes = 20;

enum class BlkOp : uint8_t { kNone, kRead, kWrite, kFlush, kFallocate };
enum class SlotState : uint8_t { kFree, kInflight, kDone };

// One ring position's request (slot = avail position & mask).
struct BlkSlot {
  SlotState state;
  BlkOp op;
  uint8_t status;
  bool useDirect;
  bool hint;             // a discard: EOPNOTSUPP from the backing is not an error
  uint16_t head;
  uint32_t usedLen;      // bytes the device wrote into the chain (data in + status)
  uint8_t* statusPtr;    // inside guest memory, checked when the request was taken
  uint64_t off;          // byte offset in the backing
  uint64_t left;         // read/write: bytes still to transfer; fallocate: length
  uint64_t bytes;        // data bytes (counters)
  int mode;              // fallocate mode
  int iovFirst, iovEnd;  // data segments still to transfer: iov[iovFirst, iovEnd)
  struct iovec iov[kBlkMaxIov];
};

struct BlkParams {
  int fd = -1;           // backing file or block device (dup'ed); -1: null backing
  bool direct = false;   // also open it O_DIRECT and use that for reads and writes
  bool readonly = false;
  uint64_t nullBytes = 0;  // size of the null backing
  int numQueues = 1;
  char serial[kBlkIdBytes] = {};
};

// A drain waits this long for the backing (JS thread, in short steps between which the worker
// serves every other device); what is still with the backing then is abandoned (blkAbandon).
constexpr int kBlkDrainWaitMs = 500;

struct BlkDevice {
  int fd = -1, directFd = -1;
  bool null = false, readonly = false;
  bool writeback = true;   // CONFIG_WCE: false = write-through (every write RWF_DSYNC)
  uint64_t capacity = 0;   // in 512-byte sectors
  uint32_t logicalBlock = 512, physicalBlock = 4096;
  int numQueues = 1;
  char serial[kBlkIdBytes] = {};
  IoRing io;
  PollSource ioSrc{PollSource::kBlkIo, nullptr, -1};
  bool ioInEpoll = false;
  BlkSlot* slots[kMaxQueues] = {};  // owner worker only (swapped in by startQueue)
  uint32_t slotMask[kMaxQueues] = {};
  InflightArea inflight;            // INFLIGHT_SHMFD (owner worker; swapped in by the engine)
  // Requests abandoned by a stop whose drain ran out of time stay with the kernel: their
  // operations may still read or write the guest memory they point into. Until every one of
  // them has come back (completed or cancelled, its completion then ignored: the slot array
  // has a new generation), the queue takes nothing new (a request taken again must not race
  // the old one) and the slot arrays and memory tables they use stay allocated and mapped.
  // Owner worker only.
  uint32_t slotGen[kMaxQueues] = {};       // generation of slots[q] (in every op's user data)
  uint32_t abandonedOps[kMaxQueues] = {};  // operations of retired slot arrays still in the kernel
  uint32_t abandonedTotal = 0;
  bool hold[kMaxQueues] = {};              // a drain is in progress: take nothing new
  std::vector<BlkSlot*> retiredSlots;
  std::vector<std::unique_ptr<MemTable>> retiredMem;
  ~BlkDevice();
};

// Dups the backing, reopens it O_DIRECT if asked, finds its size and sets up the io_uring.
// Returns "" or why the device cannot be created (b is then unusable).
std::string blkOpen(BlkDevice& b, const BlkParams& p);
// A slot array for a ring of `ringSize` entries (JS thread, before startQueue's command).
BlkSlot* blkAllocSlots(uint32_t ringSize, uint32_t* mask);
void blkFreeSlots(BlkSlot* s);

// Worker: reaps completions, takes new requests from every active queue, submits. Returns the
// work done (requests taken + completions).
int blkPoll(Device& d, WorkerCtx& ctx) noexcept;
// Worker: completions are waiting (the idle check before sleeping).
bool blkBusy(Device& d) noexcept;
// Worker: queue q takes new requests (no drain holds it, no abandoned operation is out).
bool blkTakes(const Device& d, int q) noexcept;
// True while operations are with the kernel (submitted, not completed).
inline bool blkWaiting(Device& d) noexcept { return d.blk->io.inFlight() > 0; }
// Worker, one step of a drain of queue q (q < 0: every queue): holds new requests back,
// submits, reaps and publishes what completed; returns the requests still in flight.
uint32_t blkDrainStep(Device& d, int q, WorkerCtx& ctx) noexcept;
// Worker: gives up on the requests still in flight on queue q (q < 0: every queue): cancels
// their operations (IORING_OP_ASYNC_CANCEL), retires their slots (see BlkDevice), rewinds the
// queue to its used index (they are taken again, by whoever runs the ring next, once the
// kernel gave every one back) and releases the drain's hold. Returns the requests abandoned.
uint32_t blkAbandon(Device& d, int q) noexcept;
// Worker: a removed device's I/O is still with the kernel: reap (ignoring) its completions.
// True once nothing is left, and the device may be deleted.
bool blkQuiet(Device& d) noexcept;
// Requests taken from queue q and not completed yet.
uint32_t blkInflight(const Device& d, int q) noexcept;

}  // namespace vhd
