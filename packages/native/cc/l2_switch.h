// Learning L2 switch, one per PF: FDB (MAC -> port) with aging and moves on relearn, and
// burst forwarding (unicast to the learned port, flood otherwise, never back out of the
// ingress port). Ports are device ids; kUplinkPort is the TAP uplink.
//
// Port security (Linux SR-IOV style, see docs/operations.md "Port security"): every VF port
// has a MAC of its own, pinned in the FDB to it: the operator's (vf -a --mac), or the VF's
// default one until the first source MAC the port sends locks the port to that one. A pinned
// MAC never moves to another port and never ages. With spoofchk (the default) a VF's frame
// whose source is not the port's MAC is dropped and counted (kSpoofed); `trust` (or spoofchk
// off) lifts that: such a port's frames with another port's MAC are forwarded, never learned.
// Every port owns at most `limit` FDB entries: invented sources cannot fill the table.
#pragma once
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "net_device.h"
#include "virtqueue.h"

namespace vhd {

struct TapPort;

constexpr int kUplinkPort = -1;
constexpr int kFdbSize = 4096;  // power of two
constexpr uint64_t kFdbAgingNs = 300ull * 1000000000ull;
// Entries a port may own: an untrusted VF its MAC and a few more (spoofchk off: a guest
// bridging a handful of MACs); a trusted VF a router's worth; the uplink half the table.
constexpr int kFdbLimitVf = 8;
constexpr int kFdbLimitTrusted = 256;
constexpr int kFdbLimitUplink = kFdbSize / 2;

struct FdbSlot {
  uint64_t key;  // 0 = empty, else mac | 1<<48
  int32_t port;
  uint8_t pinned;   // a port's own MAC: never moves, never ages
  uint8_t counted;  // counts towards its port's limit (a live entry)
  uint64_t seenNs;
};

// What the control plane sets per VF port (under the switch lock).
struct PortConfig {
  bool spoofchk = true;
  bool trust = false;
  // The VF's MAC: the operator's when adminMac, else the default the port holds until a
  // first learned source locks it.
  uint64_t macKey = 0;
  bool adminMac = false;
  // A lock learned earlier (another process's engine, carried by the HA mirror); 0 = none.
  uint64_t lockKey = 0;
  // Post EvKind::kPortLocked when the port locks to a learned MAC (the control plane records it).
  bool reportLock = false;
};

struct PortState {
  PortConfig cfg;
  uint64_t lockKey = 0;  // the MAC the port is locked to (its admin MAC, or the first learned)
  int limit = kFdbLimitVf;
  int learned = 0;  // entries with counted set
  uint64_t lastSweepNs = 0;
};

class L2Switch {
 public:
  L2Switch(int id, int maxDevices, int worker);

  int id;
  int worker;  // polls the uplink
  Spinlock lock;  // FDB, members, uplink pointer, port states; held once per burst
  std::vector<Device*> members;
  std::vector<int> slotOf;  // devId -> index in members, or -1
  TapPort* uplink = nullptr;

  // Control path (caller holds `lock`).
  void addMember(Device* d);
  void removeMember(Device* d);
  void purgePort(int port) noexcept;
  // (Re)configures a member's port security: its learned entries are forgotten and its MAC
  // (or lock) pinned. "" or why not (an operator-set MAC that is another port's).
  std::string configurePort(int port, const PortConfig& c, uint64_t now);
  const PortState& portState(int port) const { return port == kUplinkPort ? up_ : ports_[port]; }
  // Whether a frame from `port` with this source would pass port security (SEND_RARP's check):
  // "" or the reason.
  std::string admits(int port, const uint8_t* srcMac) const;

  struct Entry {
    uint8_t mac[6];
    int port;
    uint64_t ageNs;
    bool pinned;
  };
  void dump(uint64_t nowNs, std::vector<Entry>* out);  // caller holds lock

  // Datapath: forwards ctx.pkts[0..ctx.n) that entered on srcPort (devId or kUplinkPort).
  // srcDev/srcQueue: where to count uplink write drops and port-security drops (may be null).
  void forward(int srcPort, int pair, WorkerCtx& ctx, Device* srcDev, int srcQueue) noexcept;

 private:
  enum class Admit { kLearned, kNotLearned, kDropped };
  PortState& state(int port) noexcept { return port == kUplinkPort ? up_ : ports_[port]; }
  // Port security and learning for one source address (caller holds lock).
  Admit admit(uint64_t key, int port, uint64_t now, bool* lockedNow) noexcept;
  Admit learn(uint64_t key, int port, uint64_t now) noexcept;
  FdbSlot* find(uint64_t key) noexcept;
  bool pin(uint64_t key, int port, uint64_t now) noexcept;
  void unpin(uint64_t key, int port) noexcept;
  void sweepAged(int port, uint64_t now) noexcept;
  bool lookup(uint64_t key, uint64_t now, int* port) const noexcept;
  FdbSlot fdb_[kFdbSize] = {};
  std::vector<PortState> ports_;  // by devId
  PortState up_;
};

inline uint64_t macKey(const uint8_t* m) noexcept {
  return ((uint64_t)m[0] << 40 | (uint64_t)m[1] << 32 | (uint64_t)m[2] << 24 | (uint64_t)m[3] << 16 |
          (uint64_t)m[4] << 8 | (uint64_t)m[5]) |
         (1ull << 48);
}
// The I/G bit of the first octet: a group (multicast/broadcast) address.
inline bool groupKey(uint64_t key) noexcept { return (key >> 40) & 1; }
constexpr uint64_t kZeroMacKey = 1ull << 48;

}  // namespace vhd
