// Guest memory: the regions a front-end shares with us (vhost-user memory table), mapped
// with mmap(MAP_SHARED), and translation of guest-physical (GPA) and front-end virtual (UVA)
// addresses to host pointers. Every translation is overflow-safe: a range is accepted only
// when all of it lies inside mapped memory.
#pragma once
#include <sys/uio.h>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sigbus_guard.h"

namespace vhd {

constexpr int kMaxMemRegions = 64;

struct RegionSpec {
  int fd;
  uint64_t gpa;
  uint64_t size;
  uint64_t uva;
  uint64_t mmapOffset;
};

// One mmap of one fd; shared by successive tables (add/remove region keeps the others).
// Registered with the SIGBUS guard for as long as it is mapped.
struct Mapping {
  void* base = nullptr;
  size_t len = 0;
  int guard = -1;                   // sigbus registry handle
  std::shared_ptr<MemFault> fault;  // outlives the registration (the handler writes to it)
  ~Mapping();
  // The front-end shrank the file: (part of) this mapping is anonymous zero pages now.
  bool faulted() const noexcept { return sigbus::faulted(guard); }
};

struct Region {
  uint64_t gpa;
  uint64_t size;
  uint64_t uva;
  uint64_t mmapOffset;
  uint8_t* host;
  std::shared_ptr<Mapping> map;
};

// An immutable table. A device swaps whole tables (see Device::swapMem); the old one is
// destroyed (munmap of mappings no longer referenced) only once no deliverer can touch it.
class MemTable {
 public:
  // A device's first table creates its fault record; every table derived from it (withAdded,
  // withRemoved, emptyLike) shares it, so the engine checks one flag per device.
  MemTable() : fault_(std::make_shared<MemFault>()) {}
  explicit MemTable(std::shared_ptr<MemFault> f) : fault_(std::move(f)) {}
  std::unique_ptr<MemTable> emptyLike() const { return std::make_unique<MemTable>(fault_); }
  MemFault& fault() const noexcept { return *fault_; }
  const std::shared_ptr<MemFault>& faultShared() const noexcept { return fault_; }
  // The first region whose mapping the SIGBUS guard replaced, or nullptr.
  const Region* faultedRegion() const noexcept;

  // Maps spec and returns a new table = this table's regions + spec. nullptr + err on failure.
  std::unique_ptr<MemTable> withAdded(const RegionSpec& spec, std::string* err) const;
  // New table without the region matching gpa/size/uva; nullptr + err if none matches.
  std::unique_ptr<MemTable> withRemoved(uint64_t gpa, uint64_t size, uint64_t uva, std::string* err) const;

  // Host pointer for [gpa, gpa+len) when it lies entirely in one region, else nullptr.
  // Inline: the datapath translates every descriptor.
  uint8_t* gpaToHost(uint64_t gpa, uint64_t len) const noexcept {
    for (const Region& r : regions_) {
      if (gpa < r.gpa) continue;
      uint64_t off = gpa - r.gpa;
      if (off >= r.size) continue;
      if (len > r.size - off) return nullptr;  // starts here but runs past the end
      return r.host + off;
    }
    return nullptr;
  }
  uint8_t* uvaToHost(uint64_t uva, uint64_t len) const noexcept;
  // Translates [gpa, gpa+len) that may span regions into at most maxIov segments.
  // Returns the number of segments, -1 when some byte is outside guest memory, -2 when more
  // than maxIov segments would be needed.
  // Inline for the usual case (the range in one region); a range across regions is split
  // out of line.
  int gpaToIov(uint64_t gpa, uint64_t len, struct iovec* iov, int maxIov) const noexcept {
    if (len > 0 && maxIov > 0) {
      if (uint8_t* h = gpaToHost(gpa, len)) {
        iov->iov_base = h;
        iov->iov_len = (size_t)len;
        return 1;
      }
    }
    return gpaToIovSplit(gpa, len, iov, maxIov);
  }
  int gpaToIovSplit(uint64_t gpa, uint64_t len, struct iovec* iov, int maxIov) const noexcept;

  size_t regionCount() const noexcept { return regions_.size(); }
  const std::vector<Region>& regions() const noexcept { return regions_; }

 private:
  std::vector<Region> regions_;
  std::shared_ptr<MemFault> fault_;
};

}  // namespace vhd
