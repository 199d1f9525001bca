// libFuzzer target: virtio-blk request queues (blkPoll: avail ring, the request chain walk
// with indirect tables, header/data/status parsing and every request type's checks, in-order
// completion, inflight marking, dirty logging), on a null backing and on a 1 MiB memfd
// backing through the device's real io_uring.
//
// Input: ring config of request queue 0 (fuzz_net.h; bits 0 INDIRECT, 1 EVENT_IDX, 4 LOG_ALL
// apply), u8 device bits (0 memfd backing, 1 read-only, 2 inflight area), then guest memory
// from gpa 0.
#include <poll.h>
#include <unistd.h>

#include <string>

#include "../cc/blk_device.h"
#include "fuzz_net.h"

using namespace vhd;

namespace {

BlkDevice& device(bool memfdBacking) {
  static BlkDevice* devs[2] = {};
  BlkDevice*& b = devs[memfdBacking ? 1 : 0];
  if (!b) {
    b = new BlkDevice();
    BlkParams p;
    p.numQueues = 1;
    memcpy(p.serial, "fuzz-serial-0123456789", sizeof p.serial);
    if (memfdBacking) p.fd = fuzz::makeMemfd("fuzz-backing", 1 << 20);
    else p.nullBytes = 1 << 20;
    std::string err = blkOpen(*b, p);
    if (!err.empty()) fuzz::fail(err.c_str());
    if (p.fd >= 0) close(p.fd);  // blkOpen dup'ed it
  }
  return *b;
}

// Sleeps until the ring posts a completion (its eventfd), at most `ms`, as the worker's epoll does.
void waitCompletions(IoRing& io, int ms) {
  pollfd p{io.eventFd(), POLLIN, 0};
  if (poll(&p, 1, ms) == 1) {
    uint64_t n;
    ssize_t r = read(io.eventFd(), &n, sizeof n);
    (void)r;
  }
}

void checkSlots(const BlkDevice& b) {
  const fuzz::Guest& g = fuzz::Guest::get();
  for (uint32_t i = 0; i <= b.slotMask[0]; i++) {
    const BlkSlot& s = b.slots[0][i];
    if (s.state == SlotState::kFree) continue;
    FUZZ_CHECK(s.statusPtr && g.inside(s.statusPtr, 1), "status byte outside guest memory");
    if (s.state == SlotState::kInflight && (s.op == BlkOp::kRead || s.op == BlkOp::kWrite)) {
      FUZZ_CHECK(s.iovFirst >= 0 && s.iovFirst <= s.iovEnd && s.iovEnd <= kBlkMaxIov, "data segment range");
      FUZZ_CHECK(g.iovInside(s.iov + s.iovFirst, s.iovEnd - s.iovFirst), "data segment outside guest memory");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  fuzz::RingConfig rc = fuzz::readRing(in);
  uint8_t devBits = in.u8();
  fuzz::Guest::get().load(in.rest(), in.left());

  BlkDevice& b = device(devBits & 1);
  b.readonly = (devBits & 2) != 0;
  fuzz::NetRig rig(fuzz::featuresOf(rc.bits & (1 | 2 | 16)));
  rig.d.blk = &b;
  if (!rig.start(0, rc.setup)) return 0;
  Virtqueue& vq = rig.d.vq[0];
  b.slots[0] = blkAllocSlots(vq.size, &b.slotMask[0]);
  if (devBits & 4) {
    int fd = fuzz::makeMemfd("fuzz-inflight", inflightQueueBytes(vq.size));
    uint32_t pending = 0;
    std::string err = b.inflight.map(fd, inflightQueueBytes(vq.size), 0, 1, vq.size, true, &pending, std::make_shared<MemFault>());
    close(fd);
    if (!err.empty()) fuzz::fail(err.c_str());
    inflightRestart(b.inflight, 0, vq.lastAvail);
  }
  const uint16_t usedStart = vq.usedIdx, availStart = vq.lastAvail;
  WorkerCtx& ctx = fuzz::workerCtx();
  for (int round = 0; round < 64; round++) {
    int work = blkPoll(rig.d, ctx);
    checkSlots(b);
    if (blkWaiting(rig.d)) waitCompletions(b.io, 10);
    else if (work == 0) break;
  }
  FUZZ_CHECK(!blkWaiting(rig.d), "io_uring operations still in flight after the rounds");
  FUZZ_CHECK(blkInflight(rig.d, 0) == 0 || vq.broken, "requests taken and never completed");
  FUZZ_CHECK((uint16_t)(vq.usedIdx - usedStart) == (uint16_t)(vq.lastAvail - availStart) || vq.broken,
             "used entries differ from requests taken");
  b.inflight.unmap();
  blkFreeSlots(b.slots[0]);
  b.slots[0] = nullptr;
  return 0;
}
