// libFuzzer target: the TX path of a virtio-net queue (netTxBurst: avail ring, chain walk with
// indirect tables, header and frame gathering) and delivery of what it took into an RX queue
// of the same guest (netDeliver), as the switch forwards it.
//
// Input: ring config of TX queue 1 (fuzz_net.h), u8 RX ring size log2 (RX queue 0's rings
// packed right after the TX rings' default place, ringLayout), u8 which frames to deliver,
// then guest memory from gpa 0.
#include "fuzz_net.h"

using namespace vhd;

namespace {

// Reads every byte of a frame (a stale pointer or a short buffer faults here, not later).
uint32_t touch(const uint8_t* p, uint32_t len) {
  uint32_t s = 0;
  for (uint32_t i = 0; i < len; i++) s += p[i];
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  fuzz::RingConfig tx = fuzz::readRing(in);
  uint8_t rxLog2 = in.u8();
  uint8_t deliverSel = in.u8();
  fuzz::Guest& g = fuzz::Guest::get();
  g.load(in.rest(), in.left());

  fuzz::NetRig rig(fuzz::featuresOf(tx.bits));
  if (!rig.start(1, tx.setup)) return 0;
  uint64_t txEnd = 0;
  fuzz::ringLayout(0, tx.size, &txEnd);
  QueueSetup rx = fuzz::ringLayout(txEnd, (uint16_t)(1u << (rxLog2 % 9)), nullptr);
  rx.logUsed = tx.setup.logUsed;
  bool haveRx = rig.start(0, rx);

  WorkerCtx& ctx = fuzz::workerCtx();
  Virtqueue& vq = rig.d.vq[1];
  const uint16_t usedStart = vq.usedIdx;
  uint32_t consumedTotal = 0;
  volatile uint32_t sink = 0;
  for (int burst = 0; burst < 8; burst++) {
    int consumed = netTxBurst(rig.d, 1, ctx);
    FUZZ_CHECK(consumed >= 0 && consumed <= kBurst, "burst size");
    FUZZ_CHECK(ctx.n >= 0 && ctx.n <= consumed, "more frames than chains");
    consumedTotal += (uint32_t)consumed;
    for (int k = 0; k < ctx.n; k++) {
      const Pkt& p = ctx.pkts[k];
      FUZZ_CHECK(p.len <= kMaxFrame && p.len >= 14, "frame length out of bounds");
      const uint8_t* slot = ctx.bufs + (size_t)k * kFrameStride;
      bool inBuf = p.data >= slot && p.data + p.len <= slot + kFrameStride;
      FUZZ_CHECK(inBuf || g.inside(p.data, p.len), "frame neither in the worker buffer nor in guest memory");
      FUZZ_CHECK(p.hdr[10] == 0 && p.hdr[11] == 0, "num_buffers not cleared on TX");
      sink = sink + touch(p.data, p.len);
    }
    if (ctx.n && haveRx) {
      uint32_t mask = ctx.n >= 32 ? 0xffffffffu : ((1u << ctx.n) - 1);
      if (deliverSel & 1) mask &= 0x55555555u;
      netDeliver(rig.d, 0, ctx, mask, &vq, mask);
    }
    netTxFinish(rig.d, 1);
    if (consumed == 0) break;
  }
  FUZZ_CHECK((uint16_t)(vq.usedIdx - usedStart) == (uint16_t)consumedTotal,
             "used entries differ from chains consumed");
  return 0;
}
