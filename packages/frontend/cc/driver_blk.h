// The project's front-end driver as a virtio-blk load generator: "guest" memory (memfd), the
// driver side of one split request queue, and one thread that keeps a fixed number of 4 KiB
// requests in flight (virtio 1.2 §5.2.6: out header, data, status; three descriptors each)
// at random 4 KiB-aligned sectors, reads or writes in a chosen mix, and busy-polls the used
// ring for their completions. Its purpose is measuring a vhost-user-blk back-end, so the
// driver side does as little as it can per request: no allocation, no lock handoff, no N-API.
//
// Memory layout: the ring (ComputeRingLayout at 0), then per slot (a request in flight; at
// most queueSize / 3 of them) a 4096-byte data buffer, then per slot 32 bytes holding the
// 16-byte out header and, at +16, the status byte. Slot s always uses descriptors 3s (header,
// the head), 3s+1 (data), 3s+2 (status).
//
// Threading: the load thread and JS-thread calls share the device under mu_; the thread
// holds it for one bounded pass at a time (pop at most one ring's worth, then refill to the
// queue depth). Kicks go through the kick eventfd only when the back-end asks (EVENT_IDX
// avail_event or no VRING_USED_F_NO_NOTIFY); used-buffer notifications stay suppressed.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "driver_ring.h"

namespace vhd::drv {

constexpr uint32_t kBlkTypeIn = 0;   // VIRTIO_BLK_T_IN: read
constexpr uint32_t kBlkTypeOut = 1;  // VIRTIO_BLK_T_OUT: write
constexpr uint32_t kBlkBlockSize = 4096;
constexpr uint32_t kBlkSectorsPerBlock = kBlkBlockSize / 512;

struct BlkLoadConfig {
  uint32_t queueDepth = 1;
  /** Share of requests that are writes, 0..100. */
  uint32_t writePercent = 0;
  /** Requests go to random 4 KiB blocks of [0, sectors) (512-byte sectors). */
  uint64_t sectors = 0;
  uint64_t seed = 1;
};

struct BlkStatsC {
  uint64_t submitted = 0, completed = 0, reads = 0, writes = 0;
  /** Completed requests whose status byte was not VIRTIO_BLK_S_OK (0). */
  uint64_t errors = 0;
  /** Device misbehaviour on the ring (used id not in flight or not a chain head, impossible used idx). */
  uint64_t ringErrors = 0;
  uint64_t inFlight = 0;
  bool running = false;
  /** The ring saw an impossible used index, or a one-shot request timed out: unusable until resetRings. */
  bool broken = false;
  // Submit-to-completion latency since the last clearStats/startLoad.
  uint64_t latCount = 0, p50Ns = 0, p99Ns = 0, maxNs = 0;
};

struct BlkDriverRingInfo {
  uint64_t desc, avail, used;
  int kickFd, callFd;
};

class BlkDriver {
 public:
  struct Options {
    uint64_t memSize = 0;  // 0 = RequiredMemory(queueSize)
    uint32_t queueSize = 128;
  };
  /** Latency histogram: 1 µs buckets below this many µs; slower samples count at the max. */
  static constexpr uint32_t kLatBuckets = 65536;

  static uint64_t RequiredMemory(uint32_t queueSize);
  static uint32_t MaxQueueDepth(uint32_t queueSize) { return queueSize / 3; }
  /** Creates memory, eventfds and starts the (idle) thread; nullptr and *err on failure. */
  static std::unique_ptr<BlkDriver> Create(const Options& opts, std::string* err);
  ~BlkDriver();

  int memFd() const { return memFd_; }
  uint64_t memSize() const { return memSize_; }
  uint64_t memAddr() const { return reinterpret_cast<uint64_t>(mem_); }
  uint32_t queueSize() const { return queueSize_; }
  BlkDriverRingInfo Ring() const;

  /** Stops any load, lays the ring out again (indices 0) as after a fresh negotiation. */
  void ResetRings(uint64_t features);
  /** false and *err when the ring is broken or a load is already running. */
  bool StartLoad(const BlkLoadConfig& cfg, std::string* err);
  /** Stops submitting; requests in flight still complete (stats().inFlight goes to 0). */
  void StopLoad();
  BlkStatsC Stats();
  /** Zeroes the counters and the latency histogram (not inFlight). */
  void ClearStats();
  /**
   * One request of `type` at `sector`, outside any load (the JS thread polls for it, up to
   * timeoutMs): writes send data[0..4096), reads fill it. Returns the status byte, or -1 and
   * *err when it could not be sent or did not complete (the ring is then marked broken).
   */
  int RunOne(uint32_t type, uint64_t sector, uint8_t* data, uint32_t timeoutMs, std::string* err);
  /** Stops the thread, closes every fd, unmaps memory. Idempotent. */
  void Close();

 private:
  BlkDriver() = default;
  void ThreadMain();
  /** One submit + completion pass of the running load; returns work done. */
  uint64_t LoadPassLocked();
  /** Pops every used entry; returns how many. */
  uint64_t ReapLocked(uint64_t nowNs);
  void SubmitLocked(uint32_t slot, uint32_t type, uint64_t sector);
  uint8_t* Data(uint32_t slot) { return mem_ + dataOff_ + uint64_t(slot) * kBlkBlockSize; }
  uint8_t* Header(uint32_t slot) { return mem_ + hdrOff_ + uint64_t(slot) * 32; }
  uint64_t Rand();
  void Kick(int fd);

  int memFd_ = -1;
  uint64_t memSize_ = 0;
  uint8_t* mem_ = nullptr;
  uint32_t queueSize_ = 0;
  uint64_t dataOff_ = 0, hdrOff_ = 0;
  SplitRing ring_;
  RingLayout layout_;
  int kickFd_ = -1, callFd_ = -1, wakeFd_ = -1;
  bool broken_ = false;

  bool running_ = false;
  BlkLoadConfig cfg_;
  uint64_t rng_ = 1;
  std::vector<uint32_t> freeSlots_;     // slots not in flight
  std::vector<uint64_t> submitNs_;      // per slot
  std::vector<uint8_t> slotIsWrite_;    // per slot
  BlkStatsC st_;
  std::vector<uint32_t> latHist_;

  std::mutex mu_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  bool closed_ = false;
};

}  // namespace vhd::drv
