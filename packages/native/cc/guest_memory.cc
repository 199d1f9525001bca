// Guest memory mapping and translation (see guest_memory.h).
#include "guest_memory.h"
#include "premap.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>

namespace vhd {

Mapping::~Mapping() {
  sigbus::remove(guard);  // first: no handler may MAP_FIXED into the range once it is unmapped
  if (base && base != MAP_FAILED) munmap(base, len);  // also drops the guard's zero pages
}

const Region* MemTable::faultedRegion() const noexcept {
  for (const Region& r : regions_)
    if (r.map->faulted()) return &r;
  return nullptr;
}

static std::string hex(uint64_t v) {
  char b[32];
  snprintf(b, sizeof b, "0x%" PRIx64, v);
  return b;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  // Both ranges are known not to wrap.
  return a < b + blen && b < a + alen;
}

std::unique_ptr<MemTable> MemTable::withAdded(const RegionSpec& s, std::string* err) const {
  if (s.fd < 0) { *err = "region fd is invalid"; return nullptr; }
  if (s.size == 0) { *err = "region size is 0"; return nullptr; }
  if (s.gpa + s.size < s.gpa) { *err = "region guest range " + hex(s.gpa) + "+" + hex(s.size) + " wraps"; return nullptr; }
  if (s.uva + s.size < s.uva) { *err = "region user range " + hex(s.uva) + "+" + hex(s.size) + " wraps"; return nullptr; }
  if (s.mmapOffset + s.size < s.mmapOffset) { *err = "region mmap offset + size wraps"; return nullptr; }
  if (regions_.size() >= (size_t)kMaxMemRegions) { *err = "too many memory regions (max 64)"; return nullptr; }
  for (const Region& r : regions_) {
    if (overlaps(r.gpa, r.size, s.gpa, s.size))
      { *err = "region " + hex(s.gpa) + "+" + hex(s.size) + " overlaps guest range of region " + hex(r.gpa); return nullptr; }
    if (overlaps(r.uva, r.size, s.uva, s.size))
      { *err = "region " + hex(s.gpa) + " user range " + hex(s.uva) + " overlaps region " + hex(r.gpa); return nullptr; }
  }
  // mmap() does not check the file's size, and touching a page past its end raises SIGBUS
  // in whichever thread copies a packet: refuse a region its fd cannot back.
  struct stat st;
  if (fstat(s.fd, &st) != 0) { *err = std::string("region fd: fstat failed: ") + strerror(errno); return nullptr; }
  if (S_ISREG(st.st_mode) && s.mmapOffset + s.size > (uint64_t)st.st_size) {
    *err = "region " + hex(s.gpa) + "+" + hex(s.size) + " at offset " + hex(s.mmapOffset) + " extends beyond its fd (" +
           hex((uint64_t)st.st_size) + " bytes)";
    return nullptr;
  }
  premap::Mapped pm;
  if (!premap::mapShared(s.fd, s.mmapOffset, s.size, &pm)) {
    *err = std::string("mmap of region ") + hex(s.gpa) + " (fd " + std::to_string(s.fd) + ", size " + hex(s.size) +
           ", offset " + hex(s.mmapOffset) + ") failed: " + strerror(errno);
    return nullptr;
  }
  void* p = pm.base;
  const size_t mapLen = pm.len;
  auto m = std::make_shared<Mapping>();
  m->base = p;
  m->len = mapLen;
  m->fault = fault_;
  // The file can still shrink after the size check above: from here on a SIGBUS in this range
  // becomes zero pages and a device fault instead of the death of the process.
  m->guard = sigbus::add(p, mapLen, pm.at, s.gpa, s.size, fault_.get());
  if (m->guard < 0) {
    *err = "region " + hex(s.gpa) + ": cannot be put under the SIGBUS guard (" + std::to_string(sigbus::liveCount()) +
           " mappings registered, at most " + std::to_string(sigbus::kMaxSlots) + ")";
    return nullptr;  // ~Mapping unmaps
  }
  auto t = std::make_unique<MemTable>(fault_);
  t->regions_ = regions_;
  t->regions_.push_back(Region{s.gpa, s.size, s.uva, s.mmapOffset, pm.at, std::move(m)});
  return t;
}

std::unique_ptr<MemTable> MemTable::withRemoved(uint64_t gpa, uint64_t size, uint64_t uva, std::string* err) const {
  auto t = std::make_unique<MemTable>(fault_);
  bool found = false;
  for (const Region& r : regions_) {
    if (!found && r.gpa == gpa && r.size == size && r.uva == uva) { found = true; continue; }
    t->regions_.push_back(r);
  }
  if (!found) { *err = "no memory region " + hex(gpa) + "+" + hex(size) + " (user " + hex(uva) + ")"; return nullptr; }
  return t;
}

uint8_t* MemTable::uvaToHost(uint64_t uva, uint64_t len) const noexcept {
  for (const Region& r : regions_) {
    if (uva < r.uva) continue;
    uint64_t off = uva - r.uva;
    if (off >= r.size) continue;
    if (len > r.size - off) return nullptr;
    return r.host + off;
  }
  return nullptr;
}

int MemTable::gpaToIovSplit(uint64_t gpa, uint64_t len, struct iovec* iov, int maxIov) const noexcept {
  int n = 0;
  while (len > 0) {
    const Region* hit = nullptr;
    uint64_t off = 0;
    for (const Region& r : regions_) {
      if (gpa < r.gpa) continue;
      off = gpa - r.gpa;
      if (off < r.size) { hit = &r; break; }
    }
    if (!hit) return -1;
    if (n >= maxIov) return -2;
    uint64_t chunk = hit->size - off;
    if (chunk > len) chunk = len;
    iov[n].iov_base = hit->host + off;
    iov[n].iov_len = (size_t)chunk;
    n++;
    len -= chunk;
    gpa += chunk;  // <= hit->gpa + hit->size, which does not wrap (checked at map time)
  }
  return n;
}

}  // namespace vhd
