// Numbered test frames: see test_frame.h for the layout.
#include "test_frame.h"

#include <cstring>

namespace vhd::drv {
namespace {

inline void PutBe16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v >> 8); p[1] = uint8_t(v); }
inline void PutBe32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = uint8_t(v >> (24 - 8 * i));
}
inline void PutBe64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = uint8_t(v >> (56 - 8 * i));
}
inline uint16_t GetBe16(const uint8_t* p) { return uint16_t((p[0] << 8) | p[1]); }
inline uint32_t GetBe32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
inline uint64_t GetBe64(const uint8_t* p) { return (uint64_t(GetBe32(p)) << 32) | GetBe32(p + 4); }

constexpr uint64_t kSeqMul = 0x9E3779B97F4A7C15ull;
constexpr uint64_t kOffStep = 0xC2B2AE3D27D4EB4Full;

// Fletcher-style running sum over 64-bit little-endian words; a tail is zero-padded.
struct Sum {
  uint64_t a = 0x6A09E667F3BCC909ull, b = 0;
  void Feed(const uint8_t* p, size_t n) {
    uint64_t la = a, lb = b;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      la += w;
      lb += la;
    }
    if (i < n) {
      uint64_t w = 0;
      std::memcpy(&w, p + i, n - i);
      la += w;
      lb += la;
    }
    a = la;
    b = lb;
  }
  uint32_t Fold() const {
    uint64_t x = a ^ (b * 0xFF51AFD7ED558CCDull);
    x ^= x >> 29;
    return uint32_t(x ^ (x >> 32));
  }
};

uint32_t FrameChecksum(const uint8_t* f, size_t len) {
  Sum s;
  s.Feed(f + kFrameOffMagic, kFrameOffCsum - kFrameOffMagic);
  s.Feed(f + kFrameOffTime, len - kFrameOffTime);
  return s.Fold();
}

void WriteFill(uint8_t* f, size_t len, uint64_t seq) {
  uint64_t base = (seq + 1) * kSeqMul, acc = 0;
  size_t o = kFrameOffFill;
  for (; o + 8 <= len; o += 8, acc += kOffStep) {
    uint64_t w = base ^ acc;
    std::memcpy(f + o, &w, 8);
  }
  if (o < len) {
    uint64_t w = base ^ acc;
    std::memcpy(f + o, &w, len - o);
  }
}

bool FillMatches(const uint8_t* f, size_t len, uint64_t seq) {
  uint64_t base = (seq + 1) * kSeqMul, acc = 0, diff = 0;
  size_t o = kFrameOffFill;
  for (; o + 8 <= len; o += 8, acc += kOffStep) {
    uint64_t w;
    std::memcpy(&w, f + o, 8);
    diff |= w ^ (base ^ acc);
  }
  if (o < len) {
    uint64_t want = base ^ acc, got = 0;
    std::memcpy(&got, f + o, len - o);
    uint64_t mask = (1ull << (8 * (len - o))) - 1;  // len - o is 1..7 here
    diff |= (got ^ want) & mask;
  }
  return diff == 0;
}

int HexVal(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool ParseMac(const std::string& s, uint8_t out[6]) {
  if (s.size() != 17) return false;
  for (int i = 0; i < 6; i++) {
    int hi = HexVal(s[3 * i]), lo = HexVal(s[3 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    if (i < 5 && s[3 * i + 2] != ':') return false;
    out[i] = uint8_t(hi * 16 + lo);
  }
  return true;
}

void BuildTestFrame(uint8_t* f, size_t len, const uint8_t dst[6], const uint8_t src[6],
                    uint32_t streamId, uint64_t seq, uint64_t txNs) {
  std::memcpy(f, dst, 6);
  std::memcpy(f + 6, src, 6);
  PutBe16(f + 12, kFrameEtherType);
  PutBe32(f + kFrameOffMagic, kFrameMagic);
  PutBe32(f + kFrameOffStream, streamId);
  PutBe64(f + kFrameOffSeq, seq);
  PutBe16(f + kFrameOffLen, uint16_t(len));
  PutBe64(f + kFrameOffTime, txNs);
  WriteFill(f, len, seq);
  PutBe32(f + kFrameOffCsum, FrameChecksum(f, len));
}

FrameVerdict CheckTestFrame(const uint8_t* f, size_t len, FrameInfo* info) {
  if (len < kFrameOffMagic + 4 || GetBe32(f + kFrameOffMagic) != kFrameMagic) return FrameVerdict::kForeign;
  if (len < kFrameOffFill) {
    info->problem = "short";
    return FrameVerdict::kCorrupt;
  }
  info->streamId = GetBe32(f + kFrameOffStream);
  info->seq = GetBe64(f + kFrameOffSeq);
  info->txNs = GetBe64(f + kFrameOffTime);
  if (GetBe16(f + 12) != kFrameEtherType) {
    info->problem = "ethertype";
    return FrameVerdict::kCorrupt;
  }
  if (GetBe16(f + kFrameOffLen) != len) {
    info->problem = "length";
    return FrameVerdict::kCorrupt;
  }
  if (GetBe32(f + kFrameOffCsum) != FrameChecksum(f, len)) {
    info->problem = "checksum";
    return FrameVerdict::kCorrupt;
  }
  if (!FillMatches(f, len, info->seq)) {
    info->problem = "pattern";
    return FrameVerdict::kCorrupt;
  }
  info->problem = "";
  return FrameVerdict::kOk;
}

}  // namespace vhd::drv
