// libFuzzer target: the dirty-page log (DirtyLog::map, mark, markHost), checked bit for bit
// against a model: exactly the pages of each range that the log covers are set, the first
// page past the log is counted once per range, and nothing outside the log is written.
//
// Input: u16 log bytes (1..4096), u8 offset in the log file (bytes), then ops of 17 bytes:
// u8 kind (0 mark(gpa, len); 1 markHost at guest byte gpa % guest size; 2 markHost at a host
// address outside guest memory), u64 gpa, u64 len.
#include <unistd.h>

#include <string>
#include <vector>

#include "../cc/dirty_log.h"
#include "fuzz_guest.h"

using namespace vhd;

namespace {

struct Model {
  std::vector<uint8_t> bits;
  uint64_t outOfRange = 0;
  void mark(uint64_t gpa, uint64_t len) {
    if (len == 0) return;
    uint64_t last = gpa + len - 1 < gpa ? UINT64_MAX : gpa + len - 1;
    const uint64_t pages = (uint64_t)bits.size() * 8;
    uint64_t first = gpa >> kLogPageShift, end = last >> kLogPageShift;
    if (first >= pages) { outOfRange++; return; }
    uint64_t stop = end < pages ? end : pages - 1;
    for (uint64_t p = first; p <= stop; p++) bits[p >> 3] |= (uint8_t)(1u << (p & 7));
    if (end >= pages) outOfRange++;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  uint32_t logBytes = 1 + in.u16() % 4096;
  uint32_t offset = in.u8();
  const fuzz::Guest& g = fuzz::Guest::get();
  const MemTable& mem = g.mem();
  int fd = fuzz::makeMemfd("fuzz-log", offset + logBytes);
  DirtyLog log;
  std::string err;
  {
    fuzz::GuardedHole guards((offset + logBytes + 4095) & ~4095u);
    if (!log.map(fd, logBytes, offset, std::make_shared<MemFault>(), &err)) fuzz::fail(err.c_str());
  }
  FUZZ_CHECK(log.bytes() == logBytes, "log size");
  log.on = true;
  Model m;
  m.bits.assign(logBytes, 0);
  for (int ops = 0; ops < 64 && in.left() >= 17; ops++) {
    uint8_t kind = in.u8() % 3;
    uint64_t gpa = in.u64(), len = in.u64();
    if (kind == 0) {
      log.mark(gpa, len);
      m.mark(gpa, len);
    } else if (kind == 1) {
      uint64_t at = gpa % fuzz::kGuestBytes;
      log.markHost(mem, g.host(at), len);
      uint64_t regionLeft = fuzz::kRegionBytes - at % fuzz::kRegionBytes;
      m.mark(at, len < regionLeft ? len : regionLeft);
    } else {
      static const uint8_t outside[64] = {};
      log.markHost(mem, outside + gpa % 64, len);
    }
  }
  FUZZ_CHECK(log.outOfRange() == m.outOfRange, "pages past the log counted unlike the model");
  std::vector<uint8_t> got(offset + logBytes);
  if (pread(fd, got.data(), got.size(), 0) < 0) fuzz::fail("pread");
  // The bytes before the log's offset are someone else's (the file is offset + logBytes long).
  for (uint32_t i = 0; i < offset; i++) FUZZ_CHECK(got[i] == 0, "a byte before the log was written");
  for (uint32_t i = 0; i < logBytes; i++) FUZZ_CHECK(got[offset + i] == m.bits[i], "log bits differ from the model");
  close(fd);
  return 0;
}
