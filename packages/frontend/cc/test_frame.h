// Numbered test frames of the front-end driver: builder and verifier.
//
// Frame layout (Ethernet frame, without the virtio-net header; multi-byte fields big-endian):
//   0  dst MAC (6)            6  src MAC (6)           12 ethertype 0x88B5 (2)
//   14 magic 0x56484454 "VHDT" (4)                    18 streamId (4)
//   22 seq (8)                30 frame length (2)      32 checksum (4)
//   36 sender's CLOCK_MONOTONIC ns when built (8; the receiver's latency sample)
//   44 fill pattern up to the frame length, derived from (seq, offset)
// The checksum covers bytes [14, 32) and [36, len) (the timestamp too) (a Fletcher-style sum over 64-bit words,
// folded to 32 bits), so a damaged header field or payload byte is caught even when the
// pattern would still look right.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace vhd::drv {

constexpr uint32_t kFrameMagic = 0x56484454u;
constexpr uint16_t kFrameEtherType = 0x88B5;
constexpr size_t kFrameOffMagic = 14;
constexpr size_t kFrameOffStream = 18;
constexpr size_t kFrameOffSeq = 22;
constexpr size_t kFrameOffLen = 30;
constexpr size_t kFrameOffCsum = 32;
constexpr size_t kFrameOffTime = 36;
constexpr size_t kFrameOffFill = 44;
constexpr size_t kMinTestFrame = 60;
constexpr size_t kMaxTestFrame = 9000;

/** Parses "aa:bb:cc:dd:ee:ff" (hex, case-insensitive). */
bool ParseMac(const std::string& s, uint8_t out[6]);

/** Writes a complete test frame of len bytes (kMinTestFrame..kMaxTestFrame) at out. */
void BuildTestFrame(uint8_t* out, size_t len, const uint8_t dst[6], const uint8_t src[6],
                    uint32_t streamId, uint64_t seq, uint64_t txNs);

enum class FrameVerdict { kOk, kForeign, kCorrupt };

struct FrameInfo {
  uint32_t streamId = 0;
  uint64_t seq = 0;
  uint64_t txNs = 0;
  /** For kCorrupt: which check failed ("short", "ethertype", "length", "checksum", "pattern"). */
  const char* problem = "";
};

/** Classifies a received Ethernet frame: no magic = foreign; any mismatch = corrupt. */
FrameVerdict CheckTestFrame(const uint8_t* p, size_t len, FrameInfo* info);

}  // namespace vhd::drv
