// Dirty-page log (see dirty_log.h).
#include "dirty_log.h"
#include "premap.h"

#include <string>
#include <utility>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guest_memory.h"

namespace vhd {

bool DirtyLog::map(int fd, uint64_t size, uint64_t offset, std::shared_ptr<MemFault> fault, std::string* err) noexcept {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    *err = "log fd: fstat failed";
    return false;
  }
  if (size == 0 || offset > UINT64_MAX - size || offset + size > (uint64_t)st.st_size) {
    *err = "log area " + std::to_string(offset) + "+" + std::to_string(size) + " is not inside the " + std::to_string(st.st_size) + "-byte log file";
    return false;
  }
  premap::Mapped pm;
  if (!premap::mapShared(fd, offset, size, &pm)) {
    *err = "log mmap failed";
    return false;
  }
  // The file can shrink after the size check: a fault in the log becomes zero pages and a
  // device fault (its queues stop) instead of the death of the process.
  int guard = sigbus::add(pm.base, pm.len, pm.at, 0, size, fault.get(), MapKind::kDirtyLog);
  if (guard < 0) {
    munmap(pm.base, pm.len);
    *err = "log cannot be put under the SIGBUS guard (" + std::to_string(sigbus::liveCount()) + " mappings registered)";
    return false;
  }
  unmap();
  guard_ = guard;
  fault_ = std::move(fault);
  map_ = pm.base;
  mapLen_ = pm.len;
  base_ = pm.at;
  size_ = size;
  return true;
}

void DirtyLog::unmap() noexcept {
  sigbus::remove(guard_);  // first: no handler may MAP_FIXED into the range once it is unmapped
  guard_ = -1;
  fault_.reset();
  if (map_) munmap(map_, mapLen_);
  map_ = nullptr;
  base_ = nullptr;
  mapLen_ = 0;
  size_ = 0;
}

void DirtyLog::swap(DirtyLog& o) noexcept {
  std::swap(base_, o.base_);
  std::swap(map_, o.map_);
  std::swap(mapLen_, o.mapLen_);
  std::swap(size_, o.size_);
  std::swap(guard_, o.guard_);
  std::swap(fault_, o.fault_);
}

void DirtyLog::mark(uint64_t gpa, uint64_t len) noexcept {
  if (!len || !base_) return;
  uint64_t last = gpa + len - 1;
  if (last < gpa) last = UINT64_MAX;  // wrapped: mark to the end (the page count is bounded below)
  uint64_t first = gpa >> kLogPageShift, end = last >> kLogPageShift;
  for (uint64_t p = first; p <= end; p++) {
    uint64_t byte = p >> 3;
    if (byte >= size_) {
      outOfRange_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    __atomic_fetch_or(&base_[byte], (uint8_t)(1u << (p & 7)), __ATOMIC_RELAXED);
    if (p == UINT64_MAX) break;
  }
}

void DirtyLog::markHost(const MemTable& mem, const void* host, uint64_t len) noexcept {
  const uint8_t* h = static_cast<const uint8_t*>(host);
  for (const Region& r : mem.regions()) {
    if (h >= r.host && (uint64_t)(h - r.host) < r.size) {
      uint64_t off = (uint64_t)(h - r.host);
      mark(r.gpa + off, len <= r.size - off ? len : r.size - off);
      return;
    }
  }
}

}  // namespace vhd
