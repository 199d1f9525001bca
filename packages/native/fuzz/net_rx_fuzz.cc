// libFuzzer target: the RX path of a virtio-net queue (netDeliver: offload header rules,
// software checksum, receive chains with and without MRG_RXBUF, indirect tables, scatter
// across segments and regions, dirty logging) for frames with arbitrary virtio-net headers.
//
// Input: ring config of RX queue 0 (fuzz_net.h), u8 frame count (1..32), per frame 12 header
// bytes and a u16 length, u32 mask of the frames delivered first (the others follow in a
// second burst), then guest memory from gpa 0.
#include "fuzz_net.h"

#include <cstdlib>

using namespace vhd;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static uint8_t* frames = static_cast<uint8_t*>(malloc((size_t)kBurst * kFrameStride));
  fuzz::Input in(data, size);
  fuzz::RingConfig rc = fuzz::readRing(in);
  int n = 1 + in.u8() % kBurst;
  WorkerCtx& ctx = fuzz::workerCtx();
  for (int k = 0; k < n; k++) {
    Pkt& p = ctx.pkts[k];
    for (int i = 0; i < kNetHdrMax; i++) p.hdr[i] = in.u8();
    p.len = in.u16();
    p.data = frames + (size_t)k * kFrameStride;
    memset(p.data, 0x40 + k, p.len);
    p.csumDone = false;
    p.csumOrig = 0;
  }
  ctx.n = n;
  uint32_t all = n >= 32 ? 0xffffffffu : ((1u << n) - 1);
  uint32_t first = in.u32() & all;
  fuzz::Guest::get().load(in.rest(), in.left());

  fuzz::NetRig rig(fuzz::featuresOf(rc.bits));
  if (!rig.start(0, rc.setup)) return 0;
  Virtqueue& vq = rig.d.vq[0];
  const uint16_t usedStart = vq.usedIdx, availStart = vq.lastAvail, postedStart = vq.availIdx();
  netDeliver(rig.d, 0, ctx, first ? first : all);
  if (first && (all & ~first)) netDeliver(rig.d, 0, ctx, all & ~first);
  FUZZ_CHECK(vq.broken || (uint16_t)(vq.usedIdx - usedStart) == (uint16_t)(vq.lastAvail - availStart),
             "used entries differ from receive chains consumed");
  // At most a ring's worth, unless avail->idx moved during delivery: a guest may post more while
  // the device works (here only by laying a receive buffer over its own avail ring, so that the
  // frame's bytes rewrite avail->idx); consuming those is correct, and bounded by the burst.
  FUZZ_CHECK(vq.availIdx() != postedStart || (uint16_t)(vq.usedIdx - usedStart) <= vq.size,
             "more used entries than the ring holds");
  return 0;
}
