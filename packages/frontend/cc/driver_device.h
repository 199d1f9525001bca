// The project's own vhost-user front-end driver: "guest" memory, the driver side of the
// split virtqueues of a virtio-net device, and one thread that sends numbered test frames
// and verifies every received one (test_frame.h). Like DPDK virtio-user, guest physical
// address == this process's virtual address of the memfd mapping.
//
// Memory layout: the rings of queue 0, 1, ... (queue 2i = RX of pair i, 2i+1 = TX), each
// 4096-aligned (ComputeRingLayout), then per queue `size` packet buffers (RX 10 KiB, TX
// 9216 B), buffer i belonging to descriptor i. The rest of memory is free for tests.
//
// Threading: the driver thread and JS-thread calls share the device under mu_; the driver
// thread never throws and holds mu_ only for one bounded polling pass at a time.
//
// Receive verification, per pair and streamId (the receiver of a stream expects seq 0 first):
//   seq == expected            ok, expected = seq + 1
//   seq >  expected            rxLost += seq - expected (those seqs are remembered in a
//                              4096-entry window), expected = seq + 1
//   seq <  expected            if seq is in the window and was counted lost: rxLost -= 1,
//                              rxReordered += 1 (late, not lost); otherwise rxDuplicated += 1
//   bad length/checksum/pattern/ethertype   rxCorrupted (sequence state untouched)
//   no magic                   rxForeign
// rxLost is therefore the net number of frames still missing. A late frame more than 4096
// seqs behind counts as a duplicate, the frame it replaces stays lost.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "driver_ring.h"

namespace vhd::drv {

struct DriverStatsC {
  uint64_t txPackets = 0, txBytes = 0, txRingFull = 0;
  uint64_t rxPackets = 0, rxBytes = 0, rxForeign = 0, rxLost = 0, rxDuplicated = 0;
  uint64_t rxCorrupted = 0, rxReordered = 0, rxMaxGapUs = 0;
  /** Device misbehaviour seen on the pair's rings (bad used id/len/idx, bad num_buffers). */
  uint64_t ringErrors = 0;
  /** Receive passes that found every posted buffer used: the device had none for a while (a
   *  frame arriving then is the device's to drop; this driver was too slow, not the device). */
  uint64_t rxRingEmptied = 0;
};

/** One-way latency (the sender's timestamp in the frame to its verification), since startRx. */
struct DriverLatencyC {
  uint64_t count = 0;
  uint64_t p50Ns = 0, p90Ns = 0, p99Ns = 0, p999Ns = 0, maxNs = 0;
};

struct TxConfig {
  uint8_t dst[6];
  uint8_t src[6];
  uint32_t frameSize = 64;
  uint64_t count = 0;   // 0 = unlimited
  double ratePps = 0;   // 0 = as fast as possible
  uint32_t streamId = 0;
};

struct DriverRingInfo {
  uint64_t desc, avail, used;
  int kickFd, callFd;
};

class DriverDevice {
 public:
  struct Options {
    uint64_t memSize = 64ull << 20;
    uint32_t queuePairs = 1;
    uint32_t queueSize = 256;
    uint64_t features = 0;
  };
  static constexpr uint32_t kRxBufSize = 10240;
  static constexpr uint32_t kTxBufSize = 9216;

  /** Bytes of memory needed for rings and buffers (the minimum memSize). */
  static uint64_t RequiredMemory(uint32_t queuePairs, uint32_t queueSize);
  /** Creates memory, eventfds and starts the thread; nullptr and *err on failure. */
  static std::unique_ptr<DriverDevice> Create(const Options& opts, std::string* err);
  ~DriverDevice();

  int memFd() const { return memFd_; }
  uint64_t memSize() const { return memSize_; }
  uint64_t memAddr() const { return reinterpret_cast<uint64_t>(mem_); }
  uint32_t numQueues() const { return uint32_t(queues_.size()); }
  uint32_t queuePairs() const { return uint32_t(queues_.size() / 2); }

  DriverRingInfo Ring(uint32_t q) const;
  void ResetRings(uint64_t features);
  void StartTx(uint32_t pair, const TxConfig& cfg);
  void StopTx(uint32_t pair);
  void StartRx(uint32_t pair);
  void StopRx(uint32_t pair);
  DriverStatsC Stats(uint32_t pair);
  DriverLatencyC Latency(uint32_t pair);
  static constexpr uint32_t kLatBuckets = 8192;
  /** addr is an address of this process (== guest address); false when out of bounds. */
  bool WriteMem(uint64_t addr, const void* data, size_t len);
  bool ReadMem(uint64_t addr, void* out, size_t len);
  /** Stops the thread, closes every fd, unmaps memory. Idempotent. */
  void Close();

 private:
  struct Queue {
    SplitRing ring;
    RingLayout layout;
    uint64_t bufOff = 0;
    uint32_t bufSize = 0;
    int kickFd = -1, callFd = -1;
    bool broken = false;
  };
  struct StreamRx {
    uint64_t expected = 0;
    uint64_t lostBits[64] = {};  // window of 4096 seqs below expected: 1 = counted lost
  };
  struct Pair {
    DriverStatsC st;
    bool txActive = false;
    TxConfig tx;
    uint64_t txSent = 0;  // frames sent since startTx
    double tokens = 0;
    uint64_t lastRefillNs = 0;
    std::unordered_map<uint32_t, uint64_t> nextSeq;  // per streamId, survives startTx
    bool rxActive = false;
    std::unordered_map<uint32_t, StreamRx> streams;
    uint64_t lastRxNs = 0;
    // Latency samples in 1 µs buckets below kLatBuckets µs (allocated at first sample), above in
    // latOver; latMaxNs is exact.
    std::vector<uint32_t> latHist;
    uint64_t latOver = 0, latMaxNs = 0, latCount = 0;
    // MRG_RXBUF reassembly of a frame spanning several buffers.
    std::vector<uint8_t> asmBuf;
    size_t asmLen = 0;
    uint32_t asmRemaining = 0;
    bool asmOverflow = false;
  };

  DriverDevice() = default;
  void ThreadMain();
  /** One polling pass over every queue; returns work done; *waitNs = when TX wants to run. */
  uint64_t PassLocked(uint64_t nowNs, uint64_t* waitNs);
  uint64_t TxPass(uint32_t pair, uint64_t nowNs, uint64_t* waitNs);
  uint64_t RxPass(uint32_t pair, uint64_t nowNs);
  void RxBuffer(Pair& p, uint32_t queue, uint16_t id, uint32_t len, uint64_t nowNs);
  void DeliverFrame(Pair& p, const uint8_t* frame, size_t len, uint64_t nowNs);
  void PostRxBuffers(uint32_t queue);
  void Kick(int fd);
  void Wake();
  void SetFeaturesLocked(uint64_t features);

  int memFd_ = -1;
  uint64_t memSize_ = 0;
  uint8_t* mem_ = nullptr;
  uint32_t queueSize_ = 0;
  uint32_t hdrLen_ = 12;
  bool mrgRxbuf_ = false;
  bool eventIdx_ = false;
  std::vector<Queue> queues_;
  std::vector<Pair> pairs_;
  int wakeFd_ = -1;
  std::mutex mu_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  bool closed_ = false;
};

}  // namespace vhd::drv
