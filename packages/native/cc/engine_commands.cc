// Engine, the commands: switches, devices, memory tables and queues, as the JS thread asks for
// them (engine_napi.cc); each runs on the owning worker through run() (engine_worker.cc).
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

// ---------------------------------------------------------------------------- switches

std::string Engine::addSwitch(int id) {
  if (switches_.count(id)) return "switch " + std::to_string(id) + " already exists";
  int w = rrSwitch_++ % cfg_.workers;
  switches_[id] = std::make_unique<L2Switch>(id, cfg_.maxDevices, w);
  return "";
}

std::string Engine::removeSwitch(int id) {
  auto it = switches_.find(id);
  if (it == switches_.end()) return "switch " + std::to_string(id) + " does not exist";
  if (!it->second->members.empty())
    return "switch " + std::to_string(id) + " still has " + std::to_string(it->second->members.size()) + " devices";
  std::string e = setUplink(id, -1);
  if (!e.empty()) return e;
  switches_.erase(it);
  return "";
}

std::string Engine::setUplink(int id, int tapFd) {
  auto it = switches_.find(id);
  if (it == switches_.end()) return "switch " + std::to_string(id) + " does not exist";
  L2Switch* sw = it->second.get();
  TapPort* nt = nullptr;
  if (tapFd >= 0) {
    int fd = dupFd(tapFd);
    if (fd < 0) return std::string("dup of tap fd failed: ") + strerror(errno);
    std::string err;
    if (!tapConfigure(fd, &err)) { ::close(fd); return err; }
    nt = new TapPort();
    nt->fd = fd;
    nt->sw = sw;
    nt->pollSrc.owner = sw;
  }
  TapPort* old = sw->uplink;
  Worker& w = *workers_[sw->worker];
  std::string err = run(sw->worker, [&] {
    if (old && old->inEpoll) epoll_ctl(w.epfd, EPOLL_CTL_DEL, old->fd, nullptr);
    {
      SpinGuard g(sw->lock);
      sw->uplink = nt;
      if (old) sw->purgePort(kUplinkPort);
    }
    auto& us = w.uplinkSwitches;
    for (auto i = us.begin(); i != us.end(); ++i)
      if (*i == sw) { us.erase(i); break; }
    if (nt) {
      struct epoll_event ev {};
      ev.events = EPOLLIN;
      ev.data.ptr = &nt->pollSrc;
      nt->inEpoll = epoll_ctl(w.epfd, EPOLL_CTL_ADD, nt->fd, &ev) == 0;
      us.push_back(sw);
    }
  });
  if (!err.empty()) {
    if (nt) { ::close(nt->fd); delete nt; }
    return err;
  }
  if (old) {
    syncAll();  // no worker is still writing to the old tap
    ::close(old->fd);
    delete old;
  }
  return "";
}

std::string Engine::fdb(int id, std::vector<L2Switch::Entry>* out) {
  auto it = switches_.find(id);
  if (it == switches_.end()) return "switch " + std::to_string(id) + " does not exist";
  SpinGuard g(it->second->lock);
  it->second->dump(monoNs(), out);
  return "";
}

std::string Engine::uplinkStats(int id, UplinkStats* out) {
  auto it = switches_.find(id);
  if (it == switches_.end()) return "switch " + std::to_string(id) + " does not exist";
  TapPort* t = it->second->uplink;  // only this thread replaces it
  *out = UplinkStats{};
  if (!t) return "";
  out->attached = true;
  out->rxPackets = t->rxPackets.load();
  out->rxBytes = t->rxBytes.load();
  out->txPackets = t->txPackets.load();
  out->txBytes = t->txBytes.load();
  out->txDrops = t->txDrops.load();
  out->rxErrors = t->rxErrors.load();
  return "";
}

// ---------------------------------------------------------------------------- devices

std::string Engine::addNetDevice(int devId, int switchId, const uint8_t mac[6], int mtu, int maxQueuePairs, bool keepCounters,
                                 const PortConfig& port) {
  if (devs_[devId]) return "device " + std::to_string(devId) + " already exists";
  auto it = switches_.find(switchId);
  if (it == switches_.end()) return "switch " + std::to_string(switchId) + " does not exist";
  auto* d = new Device();
  d->devId = devId;
  d->switchId = switchId;
  memcpy(d->mac, mac, 6);
  d->mtu = mtu;
  d->maxQueuePairs = maxQueuePairs;
  d->sw = it->second.get();
  {
    PortConfig pc = port;
    if (!pc.macKey) pc.macKey = macKey(mac);
    SpinGuard g(d->sw->lock);
    std::string err = d->sw->configurePort(devId, pc, monoNs());
    if (!err.empty()) {
      d->sw->purgePort(devId);
      delete d;
      return err;
    }
  }
  Worker& w = initDevice(d, devId, keepCounters);
  std::string err = run(d->worker, [&] { w.devs.push_back(d); });
  if (!err.empty()) {
    SpinGuard g(d->sw->lock);
    d->sw->purgePort(devId);
    delete d;
    return err;
  }
  {
    SpinGuard g(d->sw->lock);
    d->sw->addMember(d);
  }
  devs_[devId] = d;
  return "";
}

std::string Engine::setPortSecurity(int devId, const PortConfig& port) {
  Device* d = devs_[devId];
  if (!d->sw) return "device " + std::to_string(devId) + " is not a net device";
  SpinGuard g(d->sw->lock);
  return d->sw->configurePort(devId, port, monoNs());
}

std::string Engine::portState(int devId, PortState* out) {
  Device* d = devs_[devId];
  if (!d->sw) return "device " + std::to_string(devId) + " is not a net device";
  SpinGuard g(d->sw->lock);
  *out = d->sw->portState(devId);
  return "";
}

// What every device needs before its owner worker adopts it: memory table, counters (kept: a
// takeover continues the dead runner's counts), queues wired to them and the dirty log, an
// owner (round robin) whose command fd a memory fault wakes even when it sleeps.
Worker& Engine::initDevice(Device* d, int devId, bool keepCounters) {
  d->mem = std::make_unique<MemTable>();
  d->ctr = reinterpret_cast<QueueCounters*>(counters_) + (size_t)devId * kMaxQueues;
  d->portCtr = reinterpret_cast<uint64_t*>(reinterpret_cast<QueueCounters*>(counters_) + (size_t)cfg_.maxDevices * kMaxQueues) +
               (size_t)devId * kMaxQueues * kPortCountersPerQueue;
  if (!keepCounters)
    for (int i = 0; i < kMaxQueues * kPortCountersPerQueue; i++) __atomic_store_n(&d->portCtr[i], 0, __ATOMIC_RELAXED);
  for (int q = 0; q < kMaxQueues; q++) {
    if (!keepCounters) d->ctr[q].reset();
    d->vq[q].ctr = &d->ctr[q];
    d->vq[q].dlog = &d->log;
    d->vq[q].pollSrc = PollSource{PollSource::kKick, d, q};
  }
  d->applyFeatures(0);
  d->worker = rrDev_++ % cfg_.workers;
  Worker& w = *workers_[d->worker];
  d->mem->fault().devId = devId;
  d->mem->fault().wakeFd.store(w.cmdFd);
  return w;
}

std::string Engine::addBlkDevice(int devId, const BlkParams& p, bool keepCounters, BlkInfo* info) {
  if (devs_[devId]) return "device " + std::to_string(devId) + " already exists";
  if (p.numQueues < 1 || p.numQueues > kMaxQueues) return "numQueues " + std::to_string(p.numQueues) + " is out of range";
  auto* b = new BlkDevice();
  std::string err = blkOpen(*b, p);
  if (!err.empty()) { delete b; return err; }
  auto* d = new Device();
  d->devId = devId;
  d->maxQueuePairs = (p.numQueues + 1) / 2;
  d->blk = b;
  b->ioSrc.owner = d;
  Worker& w = initDevice(d, devId, keepCounters);
  err = run(d->worker, [&] {
    struct epoll_event ev {};
    ev.events = EPOLLIN;
    ev.data.ptr = &b->ioSrc;
    b->ioInEpoll = epoll_ctl(w.epfd, EPOLL_CTL_ADD, b->io.eventFd(), &ev) == 0;
    w.devs.push_back(d);
  });
  if (!err.empty()) { delete b; delete d; return err; }
  devs_[devId] = d;
  if (info) {
    info->capacity = b->capacity;
    info->logicalBlock = b->logicalBlock;
    info->physicalBlock = b->physicalBlock;
  }
  return "";
}

std::string Engine::setBlkInflight(int devId, int fd, uint64_t size, uint64_t offset, uint32_t numQueues, uint32_t queueSize,
                                   bool fresh, uint32_t* pending) {
  Device* d = devs_[devId];
  if (!d->blk) return "device " + std::to_string(devId) + " is not a blk device";
  InflightArea area;
  if (fd >= 0) {
    std::string e = area.map(fd, size, offset, numQueues, queueSize, fresh, pending, d->mem->faultShared());
    if (!e.empty()) return e;
  }
  // Requests in flight were marked in the old area: let them finish there first.
  drainBlk(d, -1);
  return run(d->worker, [&] {
    abandonBlk(d, -1, true, "at an inflight area change");
    d->blk->inflight.swap(area);
    // A ring already running with another size than the new area's queues: stop it (its
    // heads could not all be tracked), the others go on.
    for (int q = 0; q < d->blk->numQueues; q++) {
      Virtqueue& v = d->vq[q];
      if (!v.running || v.broken || !d->blk->inflight.queue(q) || v.size == d->blk->inflight.queueSize()) continue;
      v.markBroken();
      char msg[160];
      snprintf(msg, sizeof msg, "ring size %u differs from the inflight area's queue size %u", v.size, d->blk->inflight.queueSize());
      post(d->devId, q, EvKind::kQueueBroken, msg);
    }
  });  // `area` now holds the old one and unmaps it here
}

std::string Engine::setBlkWriteback(int devId, bool on) {
  Device* d = devs_[devId];
  if (!d->blk) return "device " + std::to_string(devId) + " is not a blk device";
  return run(d->worker, [&] { d->blk->writeback = on; });
}

int Engine::deviceQueues(int devId) const {
  const Device* d = devs_[devId];
  return d->blk ? d->blk->numQueues : 2 * d->maxQueuePairs;
}

uint32_t Engine::drainBlk(Device* d, int q) {
  if (!d->blk || (q >= 0 && (q >= d->blk->numQueues || !d->vq[q].running))) return 0;
  Worker& w = *workers_[d->worker];
  const uint64_t deadline = monoNs() + (uint64_t)kBlkDrainWaitMs * 1000000ull;
  uint32_t left = 0;
  bool slow = false;
  for (;;) {
    if (!run(d->worker, [&] {
          left = blkDrainStep(*d, q, *w.ctx);
          slow = d->blk->abandonedTotal > 0;
        }).empty())
      return left;
    // A backing that still holds requests abandoned earlier gets no more waiting until it has
    // answered: a disconnect stops every queue in turn, and the JS thread must not wait for
    // each of them (HA heartbeats, every other VF's control plane).
    if (left == 0 || slow || monoNs() > deadline) return left;
    usleep(1000);
  }
}

void Engine::abandonBlk(Device* d, int q, bool broken, const char* when) noexcept {
  if (!d->blk) return;
  const int first = q < 0 ? 0 : q, end = q < 0 ? d->blk->numQueues : q + 1;
  for (int i = first; i < end; i++) {
    uint32_t n = blkAbandon(*d, i);
    if (!n) continue;
    char msg[224];
    snprintf(msg, sizeof msg,
             "%u request(s) still with the backing after %d ms %s: %s without them; they run again from the used index once "
             "the backing has answered",
             n, kBlkDrainWaitMs, when, broken ? "the queue stops" : "stopped");
    if (broken && d->vq[i].running && !d->vq[i].broken) d->vq[i].markBroken();
    post(d->devId, i, broken ? EvKind::kQueueBroken : EvKind::kRingError, msg);
  }
}

void Engine::stopQueueOnWorker(Worker& w, Device* d, int q) noexcept {
  Virtqueue& v = d->vq[q];
  // What a drain (drainBlk, before this command) left: given up, the memory it uses kept.
  if (d->blk && q < d->blk->numQueues) abandonBlk(d, q, false, "at a ring stop");
  bool rx = (q % 2) == 0;
  if (rx) v.lock.lock();
  __atomic_store_n(&v.running, false, __ATOMIC_RELEASE);
  if (v.inEpoll) {
    epoll_ctl(w.epfd, EPOLL_CTL_DEL, v.kickFd, nullptr);
    v.inEpoll = false;
  }
  closeFd(v.kickFd);
  v.unmapRings();
  if (rx) v.lock.unlock();
}

std::string Engine::removeDevice(int devId) {
  Device* d = devs_[devId];
  Worker& w = *workers_[d->worker];
  drainBlk(d, -1);
  bool retiring = false;  // the worker deletes it once its I/O is back
  std::string err = run(d->worker, [&] {
    for (int q = 0; q < kMaxQueues; q++) stopQueueOnWorker(w, d, q);
    if (d->blk && (d->blk->abandonedTotal > 0 || d->blk->io.inFlight() > 0)) {
      retiring = true;
      w.retiring.push_back(d);  // its io_uring's eventfd stays in epoll: completions wake us
    } else if (d->blk && d->blk->ioInEpoll) {
      epoll_ctl(w.epfd, EPOLL_CTL_DEL, d->blk->io.eventFd(), nullptr);
      d->blk->ioInEpoll = false;
    }
    for (auto i = w.devs.begin(); i != w.devs.end(); ++i)
      if (*i == d) { w.devs.erase(i); break; }
  });
  if (!err.empty()) return err;
  if (d->sw) {
    SpinGuard g(d->sw->lock);
    d->sw->removeMember(d);
  }
  syncAll();  // no deliverer still holds a pointer to d
  devs_[devId] = nullptr;
  for (auto& v : d->vq) {
    closeFd(v.callFd);
    closeFd(v.errFd);
  }
  if (retiring) return "";
  delete d->blk;
  delete d;  // unmaps its memory
  return "";
}

std::string Engine::setFeatures(int devId, uint64_t features) {
  Device* d = devs_[devId];
  return run(d->worker, [&] {
    for (int q = 0; q < kMaxQueues; q += 2) d->vq[q].lock.lock();
    d->applyFeatures(features);
    for (int q = 0; q < kMaxQueues; q += 2) d->vq[q].lock.unlock();
  });
}

std::string Engine::setDirtyLog(int devId, int fd, uint64_t size, uint64_t offset) {
  Device* d = devs_[devId];
  DirtyLog fresh;
  std::string err;
  if (fd >= 0 && !fresh.map(fd, size, offset, d->mem->faultShared(), &err)) return err;
  // Every writer holds an RX lock or is the owner: under all of them nobody is mid-write.
  err = run(d->worker, [&] {
    for (int q = 0; q < kMaxQueues; q += 2) d->vq[q].lock.lock();
    d->log.swap(fresh);
    for (int q = 0; q < kMaxQueues; q += 2) d->vq[q].lock.unlock();
  });
  return err;  // `fresh` now holds the old log and unmaps it here
}

std::string Engine::swapMem(Device* d, std::unique_ptr<MemTable> t) {
  // Requests in flight use the old table's mappings: let them finish first.
  drainBlk(d, -1);
  std::string err = run(d->worker, [&] {
    abandonBlk(d, -1, true, "at a memory table change");
    if (d->mem->fault().pending()) failOnMemFault(*d, *this);  // report it against the old table
    for (int q = 0; q < kMaxQueues; q += 2) d->vq[q].lock.lock();
    std::swap(d->mem, t);  // t now holds the old table
    for (int q = 0; q < kMaxQueues; q++) {
      Virtqueue& v = d->vq[q];
      if (!v.running) continue;
      char reason[200];
      if (!v.remap(*d->mem, reason, sizeof reason)) {
        v.unmapRings();
        __atomic_store_n(&v.running, false, __ATOMIC_RELEASE);
        v.markBroken();
        char msg[256];
        snprintf(msg, sizeof msg, "after memory table change: %s", reason);
        post(d->devId, q, EvKind::kRingError, msg);
      }
    }
    for (int q = 0; q < kMaxQueues; q += 2) d->vq[q].lock.unlock();
    // Abandoned operations may still point into the old table: keep it until they are back.
    if (d->blk && d->blk->abandonedTotal > 0) d->blk->retiredMem.push_back(std::move(t));
  });
  // t (the old table, unless retired above) is destroyed here, after the swap: nobody can
  // reach it any more.
  return err;
}

std::string Engine::setMemTable(int devId, const std::vector<RegionSpec>& regions) {
  Device* d = devs_[devId];
  auto t = d->mem->emptyLike();  // keeps the device's fault record
  for (const RegionSpec& r : regions) {
    std::string err;
    auto n = t->withAdded(r, &err);
    if (!n) return err;
    t = std::move(n);
  }
  return swapMem(d, std::move(t));
}

std::string Engine::addMemRegion(int devId, const RegionSpec& region) {
  Device* d = devs_[devId];
  std::string err;
  auto t = d->mem->withAdded(region, &err);  // JS thread: only the JS thread swaps d->mem
  if (!t) return err;
  return swapMem(d, std::move(t));
}

std::string Engine::removeMemRegion(int devId, uint64_t gpa, uint64_t size, uint64_t uva) {
  Device* d = devs_[devId];
  std::string err;
  auto t = d->mem->withRemoved(gpa, size, uva, &err);
  if (!t) return err;
  return swapMem(d, std::move(t));
}

std::string Engine::startQueue(int devId, int q, const QueueStart& qs, uint16_t* resumedAt, uint16_t* usedInMemory) {
  Device* d = devs_[devId];
  Worker& w = *workers_[d->worker];
  int kick = dupFd(qs.kickFd), call = dupFd(qs.callFd), errfd = dupFd(qs.errFd);
  if ((qs.kickFd >= 0 && kick < 0) || (qs.callFd >= 0 && call < 0) || (qs.errFd >= 0 && errfd < 0)) {
    std::string e = std::string("dup of queue fd failed: ") + strerror(errno);
    closeFd(kick); closeFd(call); closeFd(errfd);
    return e;
  }
  // A blk queue's request slots, allocated here (not on the worker) and swapped in below.
  BlkSlot* slots = nullptr;
  uint32_t slotMask = 0;
  if (d->blk) {
    if (q >= d->blk->numQueues) {
      closeFd(kick); closeFd(call); closeFd(errfd);
      return "queue " + std::to_string(q) + " is beyond the device's " + std::to_string(d->blk->numQueues) + " request queues";
    }
    slots = blkAllocSlots(qs.setup.size ? qs.setup.size : 1, &slotMask);
    if (!slots) { closeFd(kick); closeFd(call); closeFd(errfd); return "out of memory for request slots"; }
  }
  std::string result;
  drainBlk(d, q);  // a running ring is stopped first
  std::string err = run(d->worker, [&] {
    Virtqueue& v = d->vq[q];
    stopQueueOnWorker(w, d, q);
    if (d->blk) {  // drained by the stop: the old slots are idle
      std::swap(d->blk->slots[q], slots);
      std::swap(d->blk->slotMask[q], slotMask);
    }
    if (d->mem->fault().pending()) failOnMemFault(*d, *this);
    bool rx = (q % 2) == 0;
    if (rx) v.lock.lock();
    char reason[200];
    const Region* shrunk = d->mem->faultedRegion();
    if (shrunk) {  // its rings would run on our zero pages: insist on a new memory table
      snprintf(reason, sizeof reason, "guest memory region 0x%" PRIx64 " shrank under us earlier; send a new memory table",
               shrunk->gpa);
      result = std::string("queue ") + std::to_string(q) + ": " + reason;
    } else if (d->log.faulted()) {  // what we write would not be logged: the migration would lose it
      result = "queue " + std::to_string(q) + ": the dirty log shrank under us earlier; send a new log (SET_LOG_BASE)";
    } else if (d->blk && d->blk->inflight.faulted()) {  // its tracking would be our zero pages
      result = "queue " + std::to_string(q) + ": the inflight area shrank under us earlier; reconnect with a new area";
    } else if (d->blk && d->blk->inflight.queue(q) && qs.setup.size != d->blk->inflight.queueSize()) {
      // Heads index the area's table, which has queueSize entries: a ring of another size
      // would need entries the area does not have (or leave some never tracked).
      result = "queue " + std::to_string(q) + ": ring size " + std::to_string(qs.setup.size) +
               " differs from the inflight area's queue size " + std::to_string(d->blk->inflight.queueSize());
    } else if (!v.mapRings(*d->mem, qs.setup, reason, sizeof reason)) {
      result = std::string("queue ") + std::to_string(q) + ": " + reason;
    } else {
      if (d->blk) inflightRestart(d->blk->inflight, q, v.usedIdx);
      if (resumedAt) *resumedAt = v.lastAvail;
      if (usedInMemory) *usedInMemory = v.usedIdxInMemory();  // mapRings wrote nothing there
      v.configured = true;
      v.kickFd = kick;
      kick = -1;
      std::swap(v.callFd, call);
      std::swap(v.errFd, errfd);
      v.broken = false;
      v.lastEventNs = 0;
      v.suppressedEvents = 0;
      v.disableNotify();
      __atomic_store_n(&v.running, true, __ATOMIC_RELEASE);
      if ((d->blk || !rx) && v.kickFd >= 0) {
        struct epoll_event ev {};
        ev.events = EPOLLIN;
        ev.data.ptr = &v.pollSrc;
        v.inEpoll = epoll_ctl(w.epfd, EPOLL_CTL_ADD, v.kickFd, &ev) == 0;
      }
    }
    if (rx) v.lock.unlock();
  });
  closeFd(kick);
  closeFd(call);   // the replaced fds (or ours, on failure)
  closeFd(errfd);
  blkFreeSlots(slots);  // the replaced ones (or the unused new ones when the command never ran)
  return err.empty() ? result : err;
}

std::string Engine::stopQueue(int devId, int q, uint16_t* lastAvail) {
  Device* d = devs_[devId];
  Worker& w = *workers_[d->worker];
  drainBlk(d, q);
  return run(d->worker, [&] {
    Virtqueue& v = d->vq[q];
    stopQueueOnWorker(w, d, q);
    *lastAvail = v.configured ? v.lastAvail : 0;
  });
}

int Engine::queueLastAvail(int devId, int q) const noexcept {
  const Device* d = devs_[devId];
  const Virtqueue& v = d->vq[q];
  if (!__atomic_load_n(&v.running, __ATOMIC_ACQUIRE)) return -1;
  return __atomic_load_n(&v.lastAvail, __ATOMIC_RELAXED);
}

std::string Engine::setQueueEnabled(int devId, int q, bool en) {
  Device* d = devs_[devId];
  return run(d->worker, [&] {
    Virtqueue& v = d->vq[q];
    bool rx = (q % 2) == 0;
    if (rx) v.lock.lock();
    v.enabledState = en ? 1 : 0;
    d->refreshEnabled(q);
    if (rx) v.lock.unlock();
  });
}

std::string Engine::setQueueCall(int devId, int q, int callFd) {
  Device* d = devs_[devId];
  int call = dupFd(callFd);
  if (callFd >= 0 && call < 0) return std::string("dup of call fd failed: ") + strerror(errno);
  std::string err = run(d->worker, [&] {
    Virtqueue& v = d->vq[q];
    bool rx = (q % 2) == 0;
    if (rx) v.lock.lock();
    std::swap(v.callFd, call);
    // A running ring signals its new call fd once. A front-end that swaps fds without waiting
    // for us (SET_VRING_CALL has no reply) may never read what we signalled on the old one:
    // QEMU starts a ring on its "masked" notifier, discards that notifier's events, then sends
    // the guest's. A call lost there leaves EVENT_IDX waiting for an index we have passed, and
    // the guest hears nothing until it looks by itself (seconds). A spurious interrupt is
    // harmless.
    if (v.running) v.signal();
    if (rx) v.lock.unlock();
  });
  closeFd(call);
  return err;
}

std::string Engine::injectFrame(int devId, const uint8_t* frame, uint32_t len) {
  Device* d = devs_[devId];
  if (!d->sw) return "device " + std::to_string(devId) + " is not a net device";
  if (len < 14 || len > kMaxFrame) return "frame of " + std::to_string(len) + " bytes";
  {
    SpinGuard g(d->sw->lock);
    std::string why = d->sw->admits(devId, frame + 6);
    if (!why.empty()) return why;
  }
  Worker& w = *workers_[d->worker];
  return run(d->worker, [&] {
    WorkerCtx& ctx = *w.ctx;  // free between polling passes, which is when commands run
    ctx.nowNs = monoNs();
    Pkt& p = ctx.pkts[0];
    memset(p.hdr, 0, sizeof p.hdr);
    p.len = len;
    p.data = ctx.bufs;
    memcpy(p.data, frame, len);
    p.csumDone = false;
    ctx.n = 1;
    d->sw->forward(d->devId, 0, ctx, nullptr, 0);  // no source queue: no progress record
    ctx.n = 0;
  });
}

std::string Engine::signalQueue(int devId, int q) {
  Device* d = devs_[devId];
  return run(d->worker, [&] {
    Virtqueue& v = d->vq[q];
    bool rx = !d->blk && (q % 2) == 0;
    if (rx) v.lock.lock();
    if (v.running) v.signal();
    if (rx) v.lock.unlock();
  });
}

std::string Engine::kickAll(int devId) {
  Device* d = devs_[devId];
  Worker& w = *workers_[d->worker];
  return run(d->worker, [&] {
    WorkerCtx& ctx = *w.ctx;
    ctx.nowNs = monoNs();
    if (d->blk) {
      blkPoll(*d, ctx);
      for (int q = 0; q < d->blk->numQueues; q++)
        if (d->vq[q].running) d->vq[q].signal();
      return;
    }
    for (int p = 0; p < d->maxQueuePairs; p++) {
      int q = 2 * p + 1;
      if (txActive(d->vq[q]) && netTxBurst(*d, q, ctx)) {
        d->sw->forward(d->devId, p, ctx, d, q);
        netTxFinish(*d, q);
      }
    }
    for (int q = 0; q < 2 * d->maxQueuePairs; q++) {
      Virtqueue& v = d->vq[q];
      bool rx = (q % 2) == 0;
      if (rx) v.lock.lock();
      if (v.running) v.signal();
      if (rx) v.lock.unlock();
    }
  });
}

}  // namespace vhd
