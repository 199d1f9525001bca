// Learning L2 switch, one per PF: FDB (MAC -> port) with aging and moves on relearn, and
// burst forwarding (unicast to the learned port, flood otherwise, never back out of the
// ingress port). Ports are device ids; kUplinkPort is the TAP uplink.
#pragma once
#include <atomic>
#include <cstdint>
#include <vector>

#include "net_device.h"
#include "virtqueue.h"

namespace vhd {

struct TapPort;

constexpr int kUplinkPort = -1;
constexpr int kFdbSize = 4096;  // power of two
constexpr uint64_t kFdbAgingNs = 300ull * 1000000000ull;

struct FdbSlot {
  uint64_t key;  // 0 = empty, else mac | 1<<48
  int32_t port;
  uint64_t seenNs;
};

class L2Switch {
 public:
  L2Switch(int id, int maxDevices, int worker);

  int id;
  int worker;  // polls the uplink
  Spinlock lock;  // FDB, members, uplink pointer; held once per burst
  std::vector<NetDevice*> members;
  std::vector<int> slotOf;  // devId -> index in members, or -1
  TapPort* uplink = nullptr;

  // Control path (caller holds `lock`).
  void addMember(NetDevice* d);
  void removeMember(NetDevice* d);
  void purgePort(int port) noexcept;

  struct Entry {
    uint8_t mac[6];
    int port;
    uint64_t ageNs;
  };
  void dump(uint64_t nowNs, std::vector<Entry>* out);  // caller holds lock

  // Datapath: forwards ctx.pkts[0..ctx.n) that entered on srcPort (devId or kUplinkPort).
  // srcDev/srcQueue: where to count uplink write drops (may be null).
  void forward(int srcPort, int pair, WorkerCtx& ctx, NetDevice* srcDev, int srcQueue) noexcept;

 private:
  void learn(uint64_t key, int port, uint64_t now) noexcept;
  bool lookup(uint64_t key, uint64_t now, int* port) const noexcept;
  FdbSlot fdb_[kFdbSize] = {};
};

inline uint64_t macKey(const uint8_t* m) noexcept {
  return ((uint64_t)m[0] << 40 | (uint64_t)m[1] << 32 | (uint64_t)m[2] << 24 | (uint64_t)m[3] << 16 |
          (uint64_t)m[4] << 8 | (uint64_t)m[5]) |
         (1ull << 48);
}

}  // namespace vhd
