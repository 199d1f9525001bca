// Inflight I/O tracking (see blk_inflight.h).
#include "blk_inflight.h"
#include "premap.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include "counters.h"  // kMaxQueues

namespace vhd {

std::string InflightArea::map(int fd, uint64_t size, uint64_t offset, uint32_t numQueues, uint32_t queueSize, bool fresh,
                              uint32_t* pending, std::shared_ptr<MemFault> fault) {
  if (numQueues < 1 || numQueues > (uint32_t)kMaxQueues || numQueues > 64) return "inflight num_queues " + std::to_string(numQueues) + " is out of range";
  if (queueSize < 1 || queueSize > 32768 || (queueSize & (queueSize - 1))) return "inflight queue_size " + std::to_string(queueSize) + " is not a power of two up to 32768";
  const uint64_t per = inflightQueueBytes(queueSize);
  if (size != per * numQueues) return "inflight area is " + std::to_string(size) + " bytes, " + std::to_string(per * numQueues) + " expected";
  // Our own area (GET_INFLIGHT_FD): the front-end gets this fd and could shrink it under us.
  // Sealing it makes that impossible (the SIGBUS guard below covers areas it hands us).
  if (fresh && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
    return std::string("inflight area: sealing our memfd failed: ") + strerror(errno);
  struct stat st;
  if (fstat(fd, &st) != 0) return "inflight fd: fstat failed";
  if (offset > UINT64_MAX - size || offset + size > (uint64_t)st.st_size) return "inflight area is not inside its " + std::to_string(st.st_size) + "-byte file";
  premap::Mapped pm;
  if (!premap::mapShared(fd, offset, size, &pm)) return "inflight mmap failed";
  void* m = pm.base;
  const size_t len = pm.len;
  uint8_t* base = pm.at;
  // Before the first touch: the file may already be shorter than fstat said a moment ago.
  int guard = sigbus::add(m, len, base, 0, size, fault.get(), MapKind::kInflight);
  if (guard < 0) {
    munmap(m, len);
    return "inflight area cannot be put under the SIGBUS guard (" + std::to_string(sigbus::liveCount()) + " mappings registered)";
  }
  auto drop = [&] {
    sigbus::remove(guard);
    munmap(m, len);
  };
  uint64_t maxCounter = 0;
  for (uint32_t q = 0; q < numQueues; q++) {
    auto* iq = reinterpret_cast<InflightQueue*>(base + per * q);
    if (fresh) {
      iq->features = 0;
      iq->version = kInflightVersion;
      iq->descNum = (uint16_t)queueSize;  // 32768 fits
      iq->lastBatchHead = 0;
      iq->usedIdx = 0;
      pending[q] = 0;
      continue;
    }
    // Handed back by the front-end: its contents are as untrusted as anything else it sends.
    // A never-used queue region is all zeros (version 0): nothing in flight.
    if (iq->version == 0 && iq->descNum == 0) {
      iq->version = kInflightVersion;
      iq->descNum = (uint16_t)queueSize;
    }
    const uint16_t version = iq->version, descNum = iq->descNum;  // read once: the front-end may change them
    if (version != kInflightVersion || descNum != (uint16_t)queueSize) {
      drop();
      return "inflight queue " + std::to_string(q) + ": version " + std::to_string(version) + ", " + std::to_string(descNum) + " descriptors (expected version 1, " + std::to_string(queueSize) + ")";
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < queueSize; i++) {
      uint8_t f = iq->desc[i].inflight;
      if (f > 1) {
        drop();
        return "inflight queue " + std::to_string(q) + " descriptor " + std::to_string(i) + ": flag " + std::to_string(f) + " is not 0 or 1";
      }
      if (f) n++;
      if (iq->desc[i].counter > maxCounter) maxCounter = iq->desc[i].counter;
    }
    pending[q] = n;
  }
  if (sigbus::faulted(guard)) {  // shrank while we read it: what we read was our zeros
    drop();
    return "inflight area shrank while it was being checked";
  }
  unmap();
  guard_ = guard;
  fault_ = std::move(fault);
  map_ = m;
  len_ = len;
  for (uint32_t q = 0; q < numQueues; q++) queues_[q] = reinterpret_cast<InflightQueue*>(base + per * q);
  numQueues_ = numQueues;
  queueSize_ = queueSize;
  counter_ = maxCounter;
  return "";
}

void InflightArea::unmap() noexcept {
  sigbus::remove(guard_);  // first: no handler may MAP_FIXED into the range once it is unmapped
  guard_ = -1;
  fault_.reset();
  if (map_) munmap(map_, len_);
  map_ = nullptr;
  len_ = 0;
  for (auto& q : queues_) q = nullptr;
  numQueues_ = queueSize_ = 0;
}

void InflightArea::swap(InflightArea& o) noexcept {
  std::swap(map_, o.map_);
  std::swap(len_, o.len_);
  std::swap(queues_, o.queues_);
  std::swap(numQueues_, o.numQueues_);
  std::swap(queueSize_, o.queueSize_);
  std::swap(counter_, o.counter_);
  std::swap(guard_, o.guard_);
  std::swap(fault_, o.fault_);
}

void inflightRestart(InflightArea& a, int q, uint16_t usedIdx) noexcept {
  InflightQueue* iq = a.queue(q);
  if (!iq) return;
  const uint32_t n = a.queueSize();  // never the area's desc_num: the front-end writes it
  for (uint32_t i = 0; i < n; i++) __atomic_store_n(&iq->desc[i].inflight, (uint8_t)0, __ATOMIC_RELAXED);
  __atomic_store_n(&iq->usedIdx, usedIdx, __ATOMIC_RELEASE);
}

}  // namespace vhd
