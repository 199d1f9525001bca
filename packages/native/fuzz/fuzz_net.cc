// Net device rig of the harnesses (see fuzz_net.h).
#include "fuzz_net.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace fuzz {

uint64_t featuresOf(uint8_t bits) {
  uint64_t f = 0;
  if (bits & 1) f |= 1ull << vhd::VIRTIO_RING_F_INDIRECT_DESC;
  if (bits & 2) f |= 1ull << vhd::VIRTIO_RING_F_EVENT_IDX;
  if (bits & 4) f |= 1ull << vhd::VIRTIO_F_VERSION_1;
  if (bits & 8) f |= 1ull << vhd::VIRTIO_NET_F_MRG_RXBUF;
  if (bits & 16) f |= 1ull << vhd::VHOST_F_LOG_ALL;
  if (bits & 32) f |= 1ull << vhd::VIRTIO_NET_F_GUEST_CSUM;
  if (bits & 64)
    f |= (1ull << vhd::VIRTIO_NET_F_GUEST_TSO4) | (1ull << vhd::VIRTIO_NET_F_GUEST_TSO6) |
         (1ull << vhd::VIRTIO_NET_F_GUEST_UFO) | (1ull << vhd::VIRTIO_NET_F_GUEST_ECN) |
         (1ull << vhd::VIRTIO_NET_F_GUEST_USO4);
  return f;
}

vhd::QueueSetup ringLayout(uint64_t base, uint16_t size, uint64_t* end) {
  vhd::QueueSetup s{};
  s.size = size;
  uint64_t avail = base + 16ull * size;
  uint64_t used = (avail + 6 + 2ull * size + 3) & ~3ull;
  s.descAddr = kUva0 + base;
  s.availAddr = kUva0 + avail;
  s.usedAddr = kUva0 + used;
  s.logAddr = used;
  if (end) *end = (used + 6 + 8ull * size + 15) & ~15ull;
  return s;
}

RingConfig readRing(Input& in) {
  RingConfig rc{};
  rc.size = (uint16_t)(1u << (in.u8() % 9));
  rc.bits = in.u8();
  vhd::QueueSetup& s = rc.setup;
  s.size = rc.size;
  s.lastAvailIdx = in.u16();
  uint32_t d = in.u32(), a = in.u32(), u = in.u32();
  if (rc.bits & 128) {
    s.descAddr = kUva0 + d;
    s.availAddr = kUva0 + a;
    s.usedAddr = kUva0 + u;
    s.logAddr = u;  // region 0: gpa == offset from its VA
  } else {
    vhd::QueueSetup l = ringLayout(0, rc.size, nullptr);
    s.descAddr = l.descAddr, s.availAddr = l.availAddr, s.usedAddr = l.usedAddr, s.logAddr = l.logAddr;
  }
  s.logUsed = (rc.bits & 16) != 0;
  return rc;
}

void CheckingSink::post(int, int, vhd::EvKind, const char* reason) noexcept {
  FUZZ_CHECK(reason && memchr(reason, 0, sizeof(vhd::WorkerCtx::reason)) != nullptr, "event reason not terminated");
}

vhd::WorkerCtx& workerCtx() {
  static vhd::WorkerCtx* ctx = [] {
    auto* c = new vhd::WorkerCtx();
    // malloc, not mmap: ASan sees an overrun of a frame buffer.
    c->bufs = static_cast<uint8_t*>(malloc((size_t)vhd::kBurst * vhd::kFrameStride));
    c->events = new CheckingSink();
    return c;
  }();
  return *ctx;
}

// The device's dirty log: 3 bytes = 24 pages, less than the 32 pages of the guest, so marks
// past the log's end are exercised too.
static vhd::DirtyLog& sharedLog() {
  static vhd::DirtyLog* log = [] {
    auto* l = new vhd::DirtyLog();
    int fd = makeMemfd("fuzz-log", 3);
    std::string err;
    if (!l->map(fd, 3, 0, std::make_shared<vhd::MemFault>(), &err)) fail(err.c_str());
    close(fd);
    return l;
  }();
  return *log;
}

NetRig::NetRig(uint64_t features) {
  d.devId = 1;
  d.maxQueuePairs = 1;
  d.mem = Guest::get().table();
  d.ctr = ctr;
  d.log.swap(sharedLog());
  for (int q = 0; q < vhd::kMaxQueues; q++) {
    d.vq[q].ctr = &ctr[q];
    d.vq[q].dlog = &d.log;
    d.vq[q].enabledState = 1;
  }
  d.applyFeatures(features);
}

NetRig::~NetRig() { d.log.swap(sharedLog()); }

bool NetRig::start(int q, const vhd::QueueSetup& s) {
  vhd::Virtqueue& v = d.vq[q];
  char reason[256];
  reason[0] = 0;
  if (!v.mapRings(*d.mem, s, reason, sizeof reason)) {
    FUZZ_CHECK(reason[0] != 0 && memchr(reason, 0, sizeof reason), "mapRings refused without a reason");
    return false;
  }
  FUZZ_CHECK(Guest::get().inside((const void*)v.desc, 16u * v.size), "desc table outside guest memory");
  FUZZ_CHECK(Guest::get().inside((const void*)v.avail, 6u + 2u * v.size), "avail ring outside guest memory");
  FUZZ_CHECK(Guest::get().inside((const void*)v.used, 6u + 8u * v.size), "used ring outside guest memory");
  v.configured = true;
  v.running = true;
  d.refreshEnabled(q);
  return true;
}

}  // namespace fuzz
