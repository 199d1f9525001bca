// Crash attribution (issue 17, "no poison pill across HA"). Each thread of a daemon that may
// touch a device publishes, in the shared engine file, which device it is serving right now: a
// worker the device whose rings it polls (and the device it delivers frames to), the JS thread
// the VF whose vhost-user message or adoption it handles. The stores are relaxed and cost no
// syscall. A fatal signal handler (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS)
// copies the crashing thread's slot into a crash record before the process dies; whoever adopts
// the dead process's sessions claims the record and judges the devices it names (the ledger,
// kept by the TS side in the same file: packages/runtime/src/session/crash_ledger.ts).
//
// Why a handler and not just the slots: a SIGKILL (an operator, the OOM killer, the HA tests'
// kill -9) leaves slots set too, and must not count against the device that happened to be
// served at that instant. Only a death the handler saw is a crash. A signal sent by another
// process is not a crash either, except SIGABRT (systemd's watchdog): that one names what the
// JS thread was handling, since a watchdog abort means the event loop stood still.
//
// Layout, after the counters in the shared file (engine_worker.cc maps both in one go):
//   Header | Area[kRoles] | LedgerEntry[maxDevices]
// one Area per daemon role (0 the keeper vfe-vhostd-ha, 1 vfe-vhostd), so each process only
// ever writes its own slots and records, and the other one can read them after it died.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace vhd {
namespace crash {

constexpr uint64_t kMagic = 0x3176616372646876ull;  // "vhdrcav1"
constexpr int kRoles = 2;
constexpr int kMaxWorkers = 64;
constexpr int kSlots = 1 + kMaxWorkers;  // slot 0: the JS thread; 1 + w: worker w
constexpr int kRecords = 4;              // crashes of one role not yet claimed
// serve word: devId + 1 in the low 32 bits (0: none). kCommand: the worker runs a command the JS
// thread is waiting for; the crash is the JS thread's device (what it asked for).
constexpr uint64_t kCommand = 1ull << 63;
// Record flags.
constexpr uint64_t kRecJsException = 1;  // an uncaught JS exception (sig 0), not a signal
constexpr uint64_t kRecCommand = 2;      // a worker died inside a command (attributed to the JS slot)
constexpr uint64_t kRecExternal = 4;     // sent by another process (SIGABRT of the watchdog)

// One per thread, one cache line: only its thread writes it.
struct alignas(64) Slot {
  uint64_t tid;    // the thread using the slot (0: free)
  uint64_t serve;  // devId + 1 whose rings or session the thread is in (0: none), or kCommand
  uint64_t peer;   // devId + 1 the worker delivers frames to (0: none)
  uint64_t pad[5];
  inline void setServe(uint64_t v) noexcept { __atomic_store_n(&serve, v, __ATOMIC_RELAXED); }
  inline void setPeer(uint64_t v) noexcept { __atomic_store_n(&peer, v, __ATOMIC_RELAXED); }
};
static_assert(sizeof(Slot) == 64, "one cache line per slot");

// Written by the fatal-signal handler (seq last), claimed by compare-and-swap of seq to 0.
struct Record {
  uint64_t seq;  // 0: free; kWriting while the handler fills it; else a pending crash
  uint64_t pid, tid;
  int64_t sig, code;
  int64_t slot;          // the crashing thread's slot, -1: not one of ours
  uint64_t serve, peer;  // devId + 1 (0: none)
  uint64_t serveTag, peerTag;  // the ledger's tag of those devices at the time (which VF it was)
  uint64_t atMs;         // CLOCK_REALTIME
  uint64_t flags;        // kRec*
  uint64_t pad[4];
};
static_assert(sizeof(Record) == 128, "record layout");
constexpr uint64_t kWriting = ~0ull;

struct alignas(64) Area {
  uint64_t pid;      // the process using this role's area now
  uint64_t startMs;  // when it attached
  uint64_t pad[6];
  Record rec[kRecords];
  Slot slots[kSlots];
};

// Per device, kept by the TS ledger (the handler only reads `tag`): u32 tag (which VF uses the
// device id; 0 unknown), count (crashes in a row it was implicated in), flags, lastAt (unix s).
struct LedgerEntry {
  uint32_t tag, count, flags, lastAtS;
};
static_assert(sizeof(LedgerEntry) == 16, "ledger entry layout");

struct Header {
  uint64_t magic, version, maxDevices, ledgerOffset;
  uint64_t pad[4];
};

struct Region {
  Header hdr;
  Area areas[kRoles];
  // LedgerEntry ledger[maxDevices] follows
  LedgerEntry* ledger() noexcept { return reinterpret_cast<LedgerEntry*>(reinterpret_cast<uint8_t*>(this) + hdr.ledgerOffset); }
};

size_t regionBytes(int maxDevices) noexcept;

// Claimed crash (what claim() hands to JS).
struct Claimed {
  int role;
  Record rec;
};

// Installs the fatal-signal handler once per process (before the SIGBUS guard, which forwards
// the SIGBUS it does not handle to us). Also stops core dumps from including shared anonymous
// memory (the guests' RAM: a dump of it would delay the adopter by as long as it takes to
// write, and would leak guest data into a core file). "" or why not.
std::string install();

// Makes `r` (regionBytes(maxDevices) bytes, maybe shared with the peer daemon) this process's
// for `role`: lays the header out if the region is new, sets the area's pid, clears its slots
// (not its pending records) and gives slot 0 to the calling (JS) thread. The handler writes to
// every attached region. Returns the JS thread's slot.
Slot* attach(Region* r, int role, int maxDevices) noexcept;
void detach(Region* r) noexcept;
// A worker thread's slot (1 + idx), registered to the calling thread, with an alternate
// signal stack (a stack overflow still runs the handler). leaveThread() undoes both.
Slot* enterThread(Region* r, int role, int idx) noexcept;
void leaveThread(Slot* s) noexcept;
// Takes every pending record of every role (each exactly once across processes).
int claim(Region* r, Claimed* out, int max) noexcept;
// An uncaught JS exception is about to end the process: record it in every attached region,
// attributed to devId + 1 (0: whatever the JS slot holds).
void noteException(uint64_t devPlus1) noexcept;

// Where a worker's slot points when there is no region (never null: no branch in the datapath).
extern Slot gSpareSlot;

}  // namespace crash
}  // namespace vhd
