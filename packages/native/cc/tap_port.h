// TAP uplink of a switch: a tap fd opened with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR; frames carry a
// 12-byte virtio-net header (TUNSETVNETHDRSZ) both ways. Read by the worker owning the
// switch; written (writev, non-blocking) by whichever worker forwards to it.
#pragma once
#include <atomic>
#include <cstdint>
#include <string>

#include "net_device.h"
#include "virtqueue.h"

namespace vhd {

class L2Switch;

struct TapPort {
  int fd = -1;  // our dup, O_NONBLOCK
  L2Switch* sw = nullptr;
  PollSource pollSrc{PollSource::kTap, nullptr, -1};
  bool inEpoll = false;
  std::atomic<uint64_t> rxPackets{0}, rxBytes{0}, txPackets{0}, txBytes{0}, txDrops{0}, rxErrors{0};
  uint64_t lastErrNs = 0;
};

// Sets the vnet header size to 12 and O_NONBLOCK. false + reason on failure.
bool tapConfigure(int fd, std::string* err);
// Reads up to kBurst frames into ctx.pkts (ctx.n). Returns the frame count.
int tapRxBurst(TapPort& t, WorkerCtx& ctx) noexcept;
// Writes the frames of ctx.pkts in mask; returns how many were dropped (EAGAIN, errors).
uint64_t tapTxBurst(TapPort& t, WorkerCtx& ctx, uint32_t mask) noexcept;
// Opens /dev/net/tun as a TAP with IFF_NO_PI|IFF_VNET_HDR (test support). -1 + err on failure.
int openTap(const std::string& name, std::string* err);

}  // namespace vhd
