// libFuzzer target: the blk inflight area a front-end hands back (SET_INFLIGHT_FD after our
// restart): InflightArea::map's checks of every field, then the worker's marking
// (inflightTake / inflightDone / inflightPublished / inflightRestart) interleaved with writes
// the front-end makes to the shared area meanwhile, as it may at any time.
//
// Input: u8 queues (1..4), u8 queue size log2 (1..256), i8 size error (in 16-byte units; 0 =
// the size the spec gives), u8 offset in pages; the area's bytes; then ops of 4 bytes each:
// u8 kind, u8 queue, u16 value (kind 0 take head, 1 done head, 2 published used_idx,
// 3 restart at used_idx, 4 the front-end writes the next u16 at byte `value` of the area).
#include <sys/mman.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "../cc/blk_inflight.h"
#include "fuzz_guest.h"

using namespace vhd;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  uint32_t nq = 1 + in.u8() % 4;
  uint32_t qsize = 1u << (in.u8() % 9);
  int sizeErr = (int8_t)in.u8();
  uint64_t offset = (uint64_t)(in.u8() % 4) * 4096;
  const uint64_t per = inflightQueueBytes(qsize);
  const uint64_t want = per * nq;
  uint64_t areaBytes = (uint64_t)((int64_t)want + 16 * sizeErr);
  if ((int64_t)areaBytes <= 0) areaBytes = 16;
  int fd = fuzz::makeMemfd("fuzz-inflight", offset + want);
  {
    // The area as the front-end left it.
    uint64_t n = in.left() < want ? in.left() : want;
    if (pwrite(fd, in.rest(), n, (off_t)offset) != (ssize_t)n) fuzz::fail("pwrite");
    in.skip(want);
  }
  uint32_t modelPending[4] = {};
  bool modelOk = true;
  for (uint32_t q = 0; q < nq; q++) {
    InflightQueue h;
    if (pread(fd, &h, sizeof h, (off_t)(offset + per * q)) != (ssize_t)sizeof h) fuzz::fail("pread");
    bool fresh = h.version == 0 && h.descNum == 0;
    if (!fresh && (h.version != kInflightVersion || h.descNum != qsize)) modelOk = false;
    for (uint32_t i = 0; i < qsize && modelOk; i++) {
      InflightDesc dsc;
      if (pread(fd, &dsc, sizeof dsc, (off_t)(offset + per * q + sizeof h + sizeof dsc * i)) != (ssize_t)sizeof dsc) fuzz::fail("pread");
      if (dsc.inflight > 1) modelOk = false;
      modelPending[q] += dsc.inflight;
    }
  }
  // Place the mapping between guard pages: a write past the area faults. The guard after it
  // covers all that a 16-bit head can index from any queue (16 + 16 * 0xffff bytes). The
  // kernel puts a mapping in the highest gap it fits: while that is not our hole, the attempt
  // stays mapped (filling that gap) and we map again. Small areas still often land elsewhere
  // (one-page gaps abound): then an overrun may hit another mapping unseen, so a known
  // overrun crashes in most runs, not all (the campaign found item 1 within seconds anyway).
  const size_t pg = 4096;
  fuzz::GuardedHole guards((size_t)((offset % pg + areaBytes + pg - 1) & ~(pg - 1)), 2u << 20);
  constexpr int kTries = 8;
  InflightArea tries[kTries];  // after guards: unmapped before they go
  InflightArea* area = nullptr;
  uint32_t pending[64] = {};
  std::string err;
  for (int i = 0; i < kTries && !area; i++) {
    err = tries[i].map(fd, areaBytes, offset, nq, qsize, false, pending, std::make_shared<MemFault>());
    if (!err.empty() || reinterpret_cast<uint8_t*>(tries[i].queue(0)) == guards.hole() + offset % pg) area = &tries[i];
  }
  for (InflightArea& t : tries)
    if (&t != area) t.unmap();
  if (!area) {
    static bool warned = false;
    if (!warned) fprintf(stderr, "fuzz inflight: area not between guard pages; overruns may go unseen\n");
    warned = true;
    err = tries[0].map(fd, areaBytes, offset, nq, qsize, false, pending, std::make_shared<MemFault>());
    area = &tries[0];
  }
  close(fd);
  if (areaBytes != want) {
    FUZZ_CHECK(!err.empty(), "an area of the wrong size was accepted");
    return 0;
  }
  FUZZ_CHECK(err.empty() == modelOk, "inflight area accepted/refused unlike the spec's rules");
  if (!err.empty()) return 0;
  for (uint32_t q = 0; q < nq; q++) FUZZ_CHECK(pending[q] == modelPending[q], "pending count differs from the flags set");
  uint8_t* base = reinterpret_cast<uint8_t*>(area->queue(0));
  for (int ops = 0; ops < 256 && in.left() >= 4; ops++) {
    uint8_t kind = in.u8();
    int q = in.u8() % 5;  // 4: no such queue
    uint16_t v = in.u16();
    switch (kind % 5) {
      case 0: inflightTake(*area, q, v); break;
      case 1: inflightDone(*area, q, v); break;
      case 2: inflightPublished(*area, q, v); break;
      case 3: inflightRestart(*area, q, v); break;
      case 4: {
        uint16_t w = in.u16();
        uint64_t at = v % (want - 1);
        // Known bug (issue 17 item 1, fixed elsewhere): a rewritten desc_num is trusted.
        if (fuzz::skipping("inflight-header-writes") && at % per < sizeof(InflightQueue)) break;
        memcpy(base + at, &w, 2);
        break;
      }
    }
  }
  return 0;
}
