// The fake guest of every harness (see fuzz_guest.h).
#include "fuzz_guest.h"

#include <sys/mman.h>
#include <unistd.h>

#include <string>

namespace fuzz {

int makeMemfd(const char* name, uint64_t bytes) {
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || ftruncate(fd, (off_t)bytes) != 0) fail("memfd_create/ftruncate");
  return fd;
}

bool skipping(const char* what) {
  static const std::string list = [] {
    const char* e = getenv("VHOSTD_FUZZ_SKIP");
    return std::string(",") + (e ? e : "") + ",";
  }();
  return list.find(std::string(",") + what + ",") != std::string::npos;
}

GuardedHole::GuardedHole(size_t len, size_t after) : len_(len), after_(after) {
  const size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  void* r = mmap(nullptr, pg + len + after, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) fail("mmap of guard reservation");
  hole_ = static_cast<uint8_t*>(r) + pg;
  munmap(hole_, len);
}

GuardedHole::~GuardedHole() {
  const size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  munmap(hole_ - pg, pg);
  munmap(hole_ + len_, after_);
}

Guest::Guest() : mem_(std::make_unique<vhd::MemTable>()) {
  const uint64_t uva[kRegions] = {kUva0, kUva1};
  for (int i = 0; i < kRegions; i++) {
    int fd = makeMemfd("fuzz-guest", kRegionBytes);
    guards_[i] = std::make_unique<GuardedHole>(kRegionBytes);
    std::string err;
    auto t = mem_->withAdded(vhd::RegionSpec{fd, kRegionBytes * (uint64_t)i, kRegionBytes, uva[i], 0}, &err);
    if (!t) fail(err.c_str());
    mem_ = std::move(t);
    close(fd);  // the mapping keeps the memory
    host_[i] = mem_->regions().back().host;
    if (host_[i] != guards_[i]->hole())
      fprintf(stderr, "fuzz guest: region %d not between guard pages; overruns are caught by the checks only\n", i);
  }
}

Guest& Guest::get() {
  static Guest* g = new Guest();  // never destroyed: harness processes exit with it mapped
  return *g;
}

void Guest::load(const uint8_t* d, size_t n) {
  for (int i = 0; i < kRegions; i++) {
    size_t off = (size_t)kRegionBytes * (size_t)i;
    size_t take = n > off ? n - off : 0;
    if (take > kRegionBytes) take = kRegionBytes;
    if (take) memcpy(host_[i], d + off, take);
    memset(host_[i] + take, 0, kRegionBytes - take);
  }
}

bool Guest::inside(const void* p, size_t len) const {
  const uint8_t* b = static_cast<const uint8_t*>(p);
  for (int i = 0; i < kRegions; i++) {
    if (b >= host_[i] && b < host_[i] + kRegionBytes) return len <= (size_t)(host_[i] + kRegionBytes - b);
  }
  return false;
}

}  // namespace fuzz
