// The datapath engine: worker threads (adaptive polling over kick fds, TAP fds and a command
// eventfd), the synchronous command channel used by the N-API glue, the device / switch
// registry and the event ring delivered to JS. All methods except post() are called from the
// JS thread; per-queue state is only touched by the owning worker.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "blk_device.h"
#include "counters.h"
#include "crash_attr.h"
#include "guest_memory.h"
#include "l2_switch.h"
#include "net_device.h"
#include "tap_port.h"

namespace vhd {

struct EngineConfig {
  int workers = 1;
  int maxDevices = 1024;
  int pollUs = 200;
  // A file (on tmpfs) holding the counters and TX progress records, shared by every process
  // that may run these devices (the HA pair); -1: private memory.
  int sharedFd = -1;
  // Which daemon this engine belongs to, for crash attribution (crash_attr.h): 0 the keeper
  // (vfe-vhostd-ha), 1 vfe-vhostd (and standalone).
  int crashRole = 1;
};

struct EventRec {
  int devId;
  int queue;
  EvKind kind;
  char reason[224];
};

// Fixed ring of events (no allocation on post). `notify` is called (at most once while
// undelivered) to schedule a drain on the JS thread.
class EventQueue {
 public:
  static constexpr int kCap = 256;
  bool push(int devId, int queue, EvKind kind, const char* reason) noexcept;  // false if full
  bool pop(EventRec* out) noexcept;
  std::atomic<bool> notifyPending{false};
  uint64_t dropped = 0;

 private:
  Spinlock lock_;
  EventRec ring_[kCap];
  uint32_t head_ = 0, tail_ = 0;
};

struct Cmd {
  std::function<void()> fn;
  bool started = false;
  bool done = false;
};

struct Worker {
  int idx = 0;
  std::thread thr;
  int epfd = -1;
  int cmdFd = -1;
  PollSource cmdSrc{PollSource::kCommand, nullptr, -1};
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<Cmd>> cmds;
  std::atomic<int> pendingCmds{0};
  std::atomic<bool> stop{false};
  std::vector<Device*> devs;            // worker thread only
  // Removed blk devices whose abandoned I/O is still with the kernel: deleted (memory unmapped)
  // by the worker once it has all come back (worker thread only).
  std::vector<Device*> retiring;
  std::vector<L2Switch*> uplinkSwitches;   // worker thread only
  bool ioWaiting = false;                  // worker thread only: a blk device has I/O with the kernel (last pollOnce)
  std::unique_ptr<WorkerCtx> ctx;
  std::vector<void*> dstPtr;
  std::vector<uint32_t> dstMask;
};

struct QueueStart {
  QueueSetup setup;
  int kickFd, callFd, errFd;  // caller's fds (dup'ed by the engine)
};

struct BlkInfo {
  uint64_t capacity;  // 512-byte sectors
  uint32_t logicalBlock, physicalBlock;
};

struct UplinkStats {
  uint64_t rxPackets, rxBytes, txPackets, txBytes, txDrops, rxErrors;
  bool attached;
};

class Engine : public EventSink {
 public:
  explicit Engine(const EngineConfig& cfg);
  ~Engine() override;
  // Allocates counters and starts the workers; "" or an error.
  std::string start();
  void close();
  bool closed() const { return closed_; }

  // Signals the JS side that events are waiting (set by the glue; must not block).
  std::function<void()> notify;
  EventQueue& events() { return *events_; }
  std::shared_ptr<EventQueue> eventsShared() { return events_; }
  void post(int devId, int queue, EvKind kind, const char* reason) noexcept override;

  const EngineConfig& config() const { return cfg_; }
  uint64_t* counters() const { return counters_; }
  size_t countersBytes() const { return countersBytes_; }
  // Crash attribution region (after the counters in the same mapping) and the JS thread's slot.
  crash::Region* crashRegion() const { return attr_; }
  size_t crashRegionBytes() const { return crash::regionBytes(cfg_.maxDevices); }

  bool hasSwitch(int id) const { return switches_.count(id) != 0; }
  bool hasDevice(int devId) const { return devId >= 0 && devId < cfg_.maxDevices && devs_[devId] != nullptr; }
  int devicePairs(int devId) const { return devs_[devId]->maxQueuePairs; }
  // Queues a front-end may address: 2 per pair (net), the request queues (blk).
  int deviceQueues(int devId) const;

  // Every method below returns "" on success or the reason it failed.
  std::string addSwitch(int id);
  std::string removeSwitch(int id);
  std::string setUplink(int id, int tapFd);
  std::string fdb(int id, std::vector<L2Switch::Entry>* out);
  std::string uplinkStats(int id, UplinkStats* out);

  std::string addNetDevice(int devId, int switchId, const uint8_t mac[6], int mtu, int maxQueuePairs, bool keepCounters = false,
                           const PortConfig& port = PortConfig{});
  // Port security of a net device's switch port (l2_switch.h); its learned entries are forgotten.
  std::string setPortSecurity(int devId, const PortConfig& port);
  std::string portState(int devId, PortState* out);
  // A virtio-blk device on a backing file / block device (or null): see blk_device.h.
  std::string addBlkDevice(int devId, const BlkParams& p, bool keepCounters, BlkInfo* info);
  // CONFIG_WCE: write-back (true) or write-through.
  std::string setBlkWriteback(int devId, bool on);
  std::string removeDevice(int devId);
  std::string setFeatures(int devId, uint64_t features);
  // SET_LOG_BASE: maps size bytes of fd at offset as the device's dirty log (fd < 0: none).
  std::string setDirtyLog(int devId, int fd, uint64_t size, uint64_t offset);
  // INFLIGHT_SHMFD: maps a blk device's inflight area (fd < 0: none). fresh: just created by
  // us; else checked and pending[q] = requests still marked per queue.
  std::string setBlkInflight(int devId, int fd, uint64_t size, uint64_t offset, uint32_t numQueues, uint32_t queueSize,
                             bool fresh, uint32_t* pending);
  std::string setMemTable(int devId, const std::vector<RegionSpec>& regions);
  std::string addMemRegion(int devId, const RegionSpec& region);
  std::string removeMemRegion(int devId, uint64_t gpa, uint64_t size, uint64_t uva);
  // *resumedAt: where the ring resumes; *usedInMemory: the used index the ring held then.
  std::string startQueue(int devId, int q, const QueueStart& qs, uint16_t* resumedAt = nullptr, uint16_t* usedInMemory = nullptr);
  std::string stopQueue(int devId, int q, uint16_t* lastAvail);
  std::string setQueueEnabled(int devId, int q, bool en);
  std::string setQueueCall(int devId, int q, int callFd);
  std::string kickAll(int devId);
  // One used-buffer notification on a running queue, nothing processed (a resumed ring's nudge).
  std::string signalQueue(int devId, int q);
  // Where a running queue stands now (the next avail index it will take); -1 when it does not
  // run. Read without a round trip to the worker: a relaxed load of a field only it writes.
  int queueLastAvail(int devId, int q) const noexcept;
  // Sends one frame into a net device's switch as if the device had sent it (SEND_RARP after a
  // migration: the switch learns the MAC on this port and floods the announcement).
  std::string injectFrame(int devId, const uint8_t* frame, uint32_t len);
  // While held, workers run commands but poll no queue and yield the CPU: an HA adoption starts
  // every ring of every VF in one go (commands would otherwise queue behind a backlog burst).
  void hold(bool on) noexcept { held_.store(on, std::memory_order_release); }

 private:
  Worker& initDevice(Device* d, int devId, bool keepCounters);
  // Runs fn on worker w between bursts and waits for it (bounded wait while not started).
  std::string run(int w, const std::function<void()>& fn);
  // Grace period: every worker has finished the burst it was in.
  void syncAll();
  std::string swapMem(Device* d, std::unique_ptr<MemTable> t);
  void stopQueueOnWorker(Worker& w, Device* d, int q) noexcept;
  // Waits (JS thread, at most kBlkDrainWaitMs, in short steps that leave the worker to its
  // other devices) until the requests in flight on blk queue q (q < 0: all) completed; new
  // requests are held back meanwhile. Returns the requests still in flight (the command that
  // follows abandons them: blkAbandon).
  uint32_t drainBlk(Device* d, int q);
  // Worker: abandons what a drain left on queue q (q < 0: all), reporting it; `broken`: the
  // queues that lost requests stop with an error (they keep running otherwise: a stop).
  void abandonBlk(Device* d, int q, bool broken, const char* when) noexcept;
  void workerMain(Worker& w);
  int pollOnce(Worker& w, WorkerCtx& ctx) noexcept;
  static std::string testCrashMagic();
  [[gnu::noinline, gnu::cold]] void testCrashOnFrame(const Device& d, const WorkerCtx& ctx) noexcept;

  EngineConfig cfg_;
  bool started_ = false, closed_ = false;
  uint64_t* counters_ = nullptr;
  size_t countersBytes_ = 0;
  size_t mapBytes_ = 0;  // counters, then (page-aligned) the crash attribution region
  crash::Region* attr_ = nullptr;
  // VHOSTD_TEST_CRASH_ON_FRAME (test-only): a TX frame carrying these bytes aborts the process.
  std::string testPoison_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<bool> held_{false};
  std::vector<Device*> devs_;
  std::map<int, std::unique_ptr<L2Switch>> switches_;
  int rrDev_ = 0, rrSwitch_ = 0;
  std::shared_ptr<EventQueue> events_;
};

uint64_t monoNs() noexcept;

}  // namespace vhd
