// What every harness shares: a reader over the fuzz input, and a fake guest whose memory is
// a real MemTable (memfd regions mapped by MemTable::withAdded, exactly as a front-end's
// SET_MEM_TABLE is), so the walk code runs as in production on bytes the input chose.
//
// Layout of the guest (fixed, so seeds can point at it):
//   region 0: gpa 0x00000..0x10000, front-end VA kUva0 + gpa
//   region 1: gpa 0x10000..0x20000 (adjacent in gpa: a buffer may span both, and is then
//             split into two segments), front-end VA kUva1 + (gpa - 0x10000); the two VA
//             ranges are not adjacent, so a ring can never span them.
// Each region is mapped between two PROT_NONE pages where the kernel lets us place it there,
// so a read or write past a region's end faults at once (ASan does not see into mmap'd
// memory); every harness also checks each segment the code under test returns against the
// regions (inside()), which catches what a guard page cannot (a pointer into the other region).
#pragma once
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "../cc/guest_memory.h"

namespace fuzz {

constexpr uint64_t kRegionBytes = 0x10000;
constexpr int kRegions = 2;
constexpr uint64_t kGuestBytes = kRegionBytes * kRegions;
constexpr uint64_t kUva0 = 0x7f0000000000ull;
constexpr uint64_t kUva1 = 0x7f0000200000ull;

// Little-endian reader; reads past the end give zeros (so every input is valid).
class Input {
 public:
  Input(const uint8_t* d, size_t n) : d_(d), n_(n) {}
  uint8_t u8() { return pos_ < n_ ? d_[pos_++] : 0; }
  uint16_t u16() { return (uint16_t)(u8() | u8() << 8); }
  uint32_t u32() { return (uint32_t)u16() | (uint32_t)u16() << 16; }
  uint64_t u64() { return (uint64_t)u32() | (uint64_t)u32() << 32; }
  size_t left() const { return n_ - pos_; }
  bool done() const { return pos_ >= n_; }
  const uint8_t* rest() const { return d_ + pos_; }
  void skip(size_t k) { pos_ = k > left() ? n_ : pos_ + k; }

 private:
  const uint8_t* d_;
  size_t n_;
  size_t pos_ = 0;
};

// A harness's own check failed: print why and abort (libFuzzer records the input as a crash).
[[noreturn]] inline void fail(const char* what) {
  fprintf(stderr, "fuzz oracle: %s\n", what);
  abort();
}
// Whether VHOSTD_FUZZ_SKIP (comma-separated) names `what`: a campaign's way to step around
// a known bug that another change is fixing (see fuzz/crashes/KNOWN), so the rest of the
// target is still explored meanwhile. Replays never set it.
bool skipping(const char* what);

#define FUZZ_CHECK(cond, what) \
  do {                         \
    if (!(cond)) ::fuzz::fail(what); \
  } while (0)

// Leaves a hole of `len` bytes (page multiple) between two PROT_NONE pages: the kernel places
// the next mapping of that size in the highest hole that fits, which is usually this one, so
// an overrun of that mapping faults. `after`: bytes of guard after the hole (a page unless
// an overrun could jump further). The guard pages go with the object.
class GuardedHole {
 public:
  explicit GuardedHole(size_t len, size_t after = 4096);
  ~GuardedHole();
  GuardedHole(const GuardedHole&) = delete;
  GuardedHole& operator=(const GuardedHole&) = delete;
  uint8_t* hole() const { return hole_; }

 private:
  uint8_t* hole_;
  size_t len_, after_;
};

class Guest {
 public:
  // Maps the regions once per process (a harness reuses them for every input).
  static Guest& get();

  // A fresh table over the same mappings (a device owns its table).
  std::unique_ptr<vhd::MemTable> table() const { return std::make_unique<vhd::MemTable>(*mem_); }
  const vhd::MemTable& mem() const { return *mem_; }
  // Zeroes guest memory and copies `n` bytes of the input to gpa 0 onwards.
  void load(const uint8_t* d, size_t n);
  uint8_t* host(uint64_t gpa) const { return host_[gpa / kRegionBytes] + gpa % kRegionBytes; }
  // Whether [p, p+len) lies inside one region.
  bool inside(const void* p, size_t len) const;
  bool iovInside(const struct iovec* iov, int n) const {
    for (int i = 0; i < n; i++)
      if (!inside(iov[i].iov_base, iov[i].iov_len)) return false;
    return true;
  }

 private:
  Guest();
  std::unique_ptr<GuardedHole> guards_[kRegions];
  std::unique_ptr<vhd::MemTable> mem_;
  uint8_t* host_[kRegions] = {};
};

// A memfd of `bytes` (zeroed), for logs, inflight areas and backings; aborts on failure.
int makeMemfd(const char* name, uint64_t bytes);

}  // namespace fuzz
