// Engine, the worker side: events, lifecycle, the command channel and the worker loop
// (adaptive polling). The commands the JS thread sends are in engine_commands.cc.
#include "engine.h"

#include "blk_device.h"
#include "engine_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>

namespace vhd {

uint64_t monoNs() noexcept {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// ---------------------------------------------------------------------------- events

bool EventQueue::push(int devId, int queue, EvKind kind, const char* reason) noexcept {
  SpinGuard g(lock_);
  if (tail_ - head_ >= (uint32_t)kCap) { dropped++; return false; }
  EventRec& e = ring_[tail_ % kCap];
  e.devId = devId;
  e.queue = queue;
  e.kind = kind;
  snprintf(e.reason, sizeof e.reason, "%s", reason);
  tail_++;
  return true;
}

bool EventQueue::pop(EventRec* out) noexcept {
  SpinGuard g(lock_);
  if (head_ == tail_) return false;
  *out = ring_[head_ % kCap];
  head_++;
  return true;
}

void Engine::post(int devId, int queue, EvKind kind, const char* reason) noexcept {
  if (!events_->push(devId, queue, kind, reason)) return;
  if (!events_->notifyPending.exchange(true)) {
    if (notify) notify();
  }
}

// ---------------------------------------------------------------------------- lifecycle

Engine::Engine(const EngineConfig& cfg) : cfg_(cfg), devs_(cfg.maxDevices, nullptr), events_(std::make_shared<EventQueue>()) {}

Engine::~Engine() { close(); }

std::string Engine::start() {
  // Guest memory can shrink under a mapping (front-end ftruncate): see sigbus_guard.h.
  // Crash attribution first: the SIGBUS guard forwards what it does not handle to it.
  std::string crashErr = crash::install();
  if (!crashErr.empty()) return crashErr;
  std::string guardErr = sigbus::install();
  if (!guardErr.empty()) return guardErr;
  countersBytes_ = (size_t)cfg_.maxDevices * kMaxQueues * (sizeof(QueueCounters) + kPortCountersPerQueue * sizeof(uint64_t));
  const size_t attrOffset = (countersBytes_ + 4095) & ~(size_t)4095;
  mapBytes_ = attrOffset + crash::regionBytes(cfg_.maxDevices);
  void* p;
  if (cfg_.sharedFd >= 0) {
    struct stat st {};
    if (fstat(cfg_.sharedFd, &st) != 0) return std::string("fstat of the shared counters file: ") + strerror(errno);
    if ((size_t)st.st_size < mapBytes_ && ftruncate(cfg_.sharedFd, (off_t)mapBytes_) != 0)
      return std::string("ftruncate of the shared counters file: ") + strerror(errno);
    p = mmap(nullptr, mapBytes_, PROT_READ | PROT_WRITE, MAP_SHARED, cfg_.sharedFd, 0);
  } else {
    p = mmap(nullptr, mapBytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  }
  if (p == MAP_FAILED) return std::string("mmap of counters failed: ") + strerror(errno);
  counters_ = static_cast<uint64_t*>(p);
  attr_ = reinterpret_cast<crash::Region*>(static_cast<uint8_t*>(p) + attrOffset);
  crash::attach(attr_, cfg_.crashRole, cfg_.maxDevices);
  testPoison_ = testCrashMagic();
  for (int i = 0; i < cfg_.workers; i++) {
    auto w = std::make_unique<Worker>();
    w->idx = i;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->cmdFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->epfd < 0 || w->cmdFd < 0) return std::string("epoll/eventfd: ") + strerror(errno);
    struct epoll_event ev {};
    ev.events = EPOLLIN;
    ev.data.ptr = &w->cmdSrc;
    epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->cmdFd, &ev);
    w->ctx = std::make_unique<WorkerCtx>();
    w->ctx->bufs = static_cast<uint8_t*>(malloc((size_t)kBurst * kFrameStride));
    if (!w->ctx->bufs) return "out of memory for burst buffers";
    w->dstPtr.assign(cfg_.maxDevices + 1, nullptr);
    w->dstMask.assign(cfg_.maxDevices + 1, 0);
    w->ctx->dstPtr = w->dstPtr.data();
    w->ctx->dstMask = w->dstMask.data();
    w->ctx->dstCap = cfg_.maxDevices;
    w->ctx->events = this;
    workers_.push_back(std::move(w));
  }
  for (auto& w : workers_) {
    Worker* wp = w.get();
    wp->thr = std::thread([this, wp] { workerMain(*wp); });
  }
  started_ = true;
  return "";
}

void Engine::close() {
  if (closed_) return;
  closed_ = true;
  for (auto& w : workers_) {
    w->stop.store(true);
    uint64_t one = 1;
    ssize_t r = write(w->cmdFd, &one, 8);
    (void)r;
  }
  for (auto& w : workers_) {
    if (w->thr.joinable()) w->thr.join();
    std::lock_guard<std::mutex> g(w->mu);
    for (auto& c : w->cmds) c->done = true;  // never run; nobody waits (JS thread is here)
    w->cmds.clear();
    // Removed devices with I/O still out: the process is going away (the kernel cancels or
    // finishes the operations when their io_uring closes).
    for (Device* d : w->retiring) {
      delete d->blk;
      delete d;
    }
    w->retiring.clear();
  }
  for (auto& d : devs_) {
    if (!d) continue;
    for (auto& v : d->vq) {
      closeFd(v.kickFd);
      closeFd(v.callFd);
      closeFd(v.errFd);
    }
    delete d->blk;  // closing its io_uring lets the kernel finish or cancel what is in flight
    delete d;
    d = nullptr;
  }
  for (auto& kv : switches_) {
    if (kv.second->uplink) {
      closeFd(kv.second->uplink->fd);
      delete kv.second->uplink;
    }
  }
  switches_.clear();
  for (auto& w : workers_) {
    closeFd(w->epfd);
    closeFd(w->cmdFd);
    if (w->ctx) free(w->ctx->bufs);
  }
  workers_.clear();
  if (attr_) crash::detach(attr_);
  attr_ = nullptr;
  if (counters_) munmap(counters_, mapBytes_);
  counters_ = nullptr;
}

// ---------------------------------------------------------------------------- commands

std::string Engine::run(int wi, const std::function<void()>& fn) {
  if (closed_) return "engine is closed";
  Worker& w = *workers_[wi];
  auto c = std::make_shared<Cmd>();
  c->fn = fn;
  {
    std::lock_guard<std::mutex> g(w.mu);
    w.cmds.push_back(c);
    w.pendingCmds.fetch_add(1, std::memory_order_release);
  }
  uint64_t one = 1;
  ssize_t r = write(w.cmdFd, &one, 8);
  (void)r;
  std::unique_lock<std::mutex> lk(w.mu);
  if (!w.cv.wait_for(lk, std::chrono::seconds(5), [&] { return c->done; })) {
    if (!c->started) {
      for (auto it = w.cmds.begin(); it != w.cmds.end(); ++it)
        if (*it == c) { w.cmds.erase(it); w.pendingCmds.fetch_sub(1); break; }
      return "datapath worker " + std::to_string(wi) + " did not respond within 5 s";
    }
    w.cv.wait(lk, [&] { return c->done; });  // running now: it finishes between bursts
  }
  return "";
}

void Engine::syncAll() {
  for (size_t i = 0; i < workers_.size(); i++) run((int)i, [] {});
}

static void drainCommands(Worker& w) {
  if (w.pendingCmds.load(std::memory_order_acquire) == 0) return;
  std::unique_lock<std::mutex> lk(w.mu);
  while (!w.cmds.empty()) {
    auto c = w.cmds.front();
    w.cmds.pop_front();
    w.pendingCmds.fetch_sub(1, std::memory_order_relaxed);
    c->started = true;
    lk.unlock();
    w.ctx->attr->setServe(crash::kCommand);  // a crash here is the JS thread's device's
    try {
      c->fn();
    } catch (...) {
      // commands report through captured state; never let anything escape the worker
    }
    w.ctx->attr->setServe(0);
    lk.lock();
    c->done = true;
    w.cv.notify_all();
  }
}

// ---------------------------------------------------------------------------- worker loop

// The queues a worker polls for driver input: a net device's TX queues, every request queue
// of a blk device.
template <typename F>
static inline void forPolled(Device* d, F&& f) {
  if (d->blk) {
    for (int q = 0; q < d->blk->numQueues; q++) f(d->vq[q]);
    return;
  }
  for (int p = 0; p < d->maxQueuePairs; p++) f(d->vq[2 * p + 1]);
}

// (engine_internal.h)
void failOnMemFault(Device& d, EventSink& ev) noexcept {
  MemFault& f = d.mem->fault();
  uint32_t hits = f.hits.load(std::memory_order_acquire);  // the fault record is complete
  char reason[224];
  f.describe(reason, sizeof reason);
  for (int q = 0; q < kMaxQueues; q += 2) d.vq[q].lock.lock();
  f.seen = hits;
  for (Virtqueue& v : d.vq)
    if (v.running && !v.broken) v.markBroken();
  for (int q = 0; q < kMaxQueues; q += 2) d.vq[q].lock.unlock();
  ev.post(d.devId, -1, EvKind::kQueueBroken, reason);
}

// VHOSTD_TEST_CRASH_ON_FRAME=<hex, 4..32 bytes>: TEST-ONLY. Read once when an engine starts;
// production units never set it. A TX frame carrying these bytes anywhere makes the worker
// abort() the process while it serves the sending device, which is how the HA tests crash a
// daemon "because of" one VF without a real bug (test/src/ha_poison.test.ts). Unset or
// malformed: nothing is armed (one predictable branch per TX burst).
std::string Engine::testCrashMagic() {
  const char* m = getenv("VHOSTD_TEST_CRASH_ON_FRAME");
  if (!m || !*m) return "";
  size_t n = strlen(m);
  std::string out;
  if (n % 2 == 0 && n >= 8 && n <= 64) {
    for (size_t i = 0; i < n; i += 2) {
      char hex[3] = {m[i], m[i + 1], 0};
      char* end = nullptr;
      long v = strtol(hex, &end, 16);
      if (end != hex + 2) { out.clear(); break; }
      out.push_back((char)v);
    }
  }
  if (out.empty()) {
    fprintf(stderr, "vhostd engine: VHOSTD_TEST_CRASH_ON_FRAME ignored: must be 4..32 bytes of hex\n");
    return "";
  }
  fprintf(stderr, "vhostd engine: TEST-ONLY VHOSTD_TEST_CRASH_ON_FRAME is set: a TX frame carrying %s aborts this process\n", m);
  return out;
}

void Engine::testCrashOnFrame(const Device& d, const WorkerCtx& ctx) noexcept {
  for (int i = 0; i < ctx.n; i++) {
    const Pkt& p = ctx.pkts[i];
    if (memmem(p.data, p.len, testPoison_.data(), testPoison_.size())) {
      char msg[160];
      int len = snprintf(msg, sizeof msg, "vhostd engine: TEST-ONLY poison frame from device %d: abort()\n", d.devId);
      ssize_t r = write(2, msg, (size_t)len);
      (void)r;
      abort();
    }
  }
}

int Engine::pollOnce(Worker& w, WorkerCtx& ctx) noexcept {
  int work = 0;
  bool ioWaiting = false;
  crash::Slot& attr = *ctx.attr;
  for (Device* d : w.devs) {
    attr.setServe((uint64_t)(d->devId + 1));  // crash attribution: one relaxed store per device
    if (d->mem->fault().pending()) failOnMemFault(*d, *this);  // one relaxed load per device
    if (d->blk) {
      work += blkPoll(*d, ctx);
      ioWaiting |= blkWaiting(*d);
      continue;
    }
    for (int p = 0; p < d->maxQueuePairs; p++) {
      int q = 2 * p + 1;
      if (!txActive(d->vq[q])) continue;
      int c = netTxBurst(*d, q, ctx);
      if (c) {
        work += c;
        if (__builtin_expect(!testPoison_.empty(), 0)) testCrashOnFrame(*d, ctx);
        d->sw->forward(d->devId, p, ctx, d, q);
        netTxFinish(*d, q);
      }
    }
  }
  attr.setServe(0);
  for (L2Switch* s : w.uplinkSwitches) {
    TapPort* t = s->uplink;
    if (!t) continue;
    int n = tapRxBurst(*t, ctx);
    if (n) {
      work += n;
      s->forward(kUplinkPort, 0, ctx, nullptr, 0);
    }
  }
  for (size_t i = 0; i < w.retiring.size();) {
    Device* d = w.retiring[i];
    if (!blkQuiet(*d)) { i++; continue; }
    if (d->blk->ioInEpoll) epoll_ctl(w.epfd, EPOLL_CTL_DEL, d->blk->io.eventFd(), nullptr);
    delete d->blk;
    delete d;  // unmaps its memory: no operation points into it any more
    w.retiring[i] = w.retiring.back();
    w.retiring.pop_back();
  }
  w.ioWaiting = ioWaiting;
  return work;
}

void Engine::workerMain(Worker& w) {
  WorkerCtx& ctx = *w.ctx;
  ctx.attr = crash::enterThread(attr_, cfg_.crashRole, w.idx);
  crash::Slot& attr = *ctx.attr;
  const uint64_t pollNs = (uint64_t)cfg_.pollUs * 1000ull;
  uint64_t lastWork = monoNs();
  struct epoll_event evs[64];
  while (!w.stop.load(std::memory_order_relaxed)) {
    drainCommands(w);
    if (held_.load(std::memory_order_acquire)) {
      usleep(20);
      lastWork = monoNs();
      continue;
    }
    ctx.nowNs = monoNs();
    if (pollOnce(w, ctx)) {
      lastWork = ctx.nowNs;
      continue;
    }
    if (ctx.nowNs - lastWork < pollNs) {
      // Waiting on blk I/O the kernel handed to its io-wq workers: give them the CPU if they
      // share ours, or spinning starves the very work we wait for (returns at once if not).
      if (w.ioWaiting) sched_yield();
      else __builtin_ia32_pause();
      continue;
    }
    // Idle long enough: ask for kicks, then re-check before sleeping (the driver may have
    // added buffers before it saw notifications enabled).
    bool pollOnly = false;
    for (Device* d : w.devs) {
      attr.setServe((uint64_t)(d->devId + 1));  // these touch guest memory too
      forPolled(d, [&](Virtqueue& v) {
        if (!txActive(v)) return;
        v.enableNotify();
        if (v.kickFd < 0) pollOnly = true;
      });
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
    bool again = w.pendingCmds.load(std::memory_order_acquire) != 0;
    for (Device* d : w.devs) {
      attr.setServe((uint64_t)(d->devId + 1));
      if (d->blk) {
        // A queue that takes nothing for now (drain, abandoned I/O) waits for its io_uring's
        // eventfd, not for the requests the driver keeps adding.
        for (int q = 0; q < d->blk->numQueues; q++)
          if (txActive(d->vq[q]) && d->vq[q].pending() != 0 && blkTakes(*d, q)) again = true;
        if (blkBusy(*d)) again = true;
        continue;
      }
      forPolled(d, [&](Virtqueue& v) {
        if (txActive(v) && v.pending() != 0) again = true;
      });
    }
    attr.setServe(0);
    if (!again) {
      int n = epoll_wait(w.epfd, evs, 64, pollOnly ? 1 : -1);
      for (int i = 0; i < n; i++) {
        PollSource* src = static_cast<PollSource*>(evs[i].data.ptr);
        if (src->kind == PollSource::kBlkIo) {
          uint64_t val = 0;
          ssize_t r = read(static_cast<Device*>(src->owner)->blk->io.eventFd(), &val, 8);  // completions: reaped by the next poll
          (void)r;
        } else if (src->kind == PollSource::kKick || src->kind == PollSource::kCommand) {
          int fd = src->kind == PollSource::kCommand ? w.cmdFd : static_cast<Device*>(src->owner)->vq[src->queue].kickFd;
          uint64_t val = 0;
          if (fd >= 0 && read(fd, &val, 8) == 8 && src->kind == PollSource::kKick) {
            Virtqueue& v = static_cast<Device*>(src->owner)->vq[src->queue];
            v.ctr->add(kKicks, val);
            v.ctr->add(kWakeups, 1);
          }
        }
      }
    }
    for (Device* d : w.devs) {
      attr.setServe((uint64_t)(d->devId + 1));
      forPolled(d, [](Virtqueue& v) {
        if (txActive(v)) v.disableNotify();
      });
    }
    attr.setServe(0);
    lastWork = monoNs();
  }
  crash::leaveThread(ctx.attr);
  ctx.attr = &crash::gSpareSlot;
}

}  // namespace vhd
