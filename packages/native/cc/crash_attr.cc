// Crash attribution (see crash_attr.h). The handler uses only async-signal-safe calls
// (gettid, getpid, clock_gettime, sigaction, raise) and lock-free atomics on memory that stays
// mapped while a region is attached.
#include "crash_attr.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace vhd {
namespace crash {

Slot gSpareSlot{};

namespace {

constexpr int kMaxRegions = 16;
constexpr size_t kAltStack = 64 * 1024;
const int kSignals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS};

struct Reg {
  std::atomic<Region*> r{nullptr};
  std::atomic<int> role{0};
};
Reg gRegs[kMaxRegions];
struct sigaction gOld[65];  // written once, before our handler is installed
std::atomic<uint64_t> gSeq{0};
std::mutex gRegMu;  // attach/detach only (never the handler)

inline uint64_t ld(const uint64_t& v) { return __atomic_load_n(&v, __ATOMIC_RELAXED); }
inline void st(uint64_t& v, uint64_t x) { __atomic_store_n(&v, x, __ATOMIC_RELAXED); }
inline uint64_t tidNow() { return (uint64_t)syscall(SYS_gettid); }

uint64_t nowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000ull;
}

size_t ledgerOffset() { return (sizeof(Header) + sizeof(Area) * kRoles + 63) & ~(size_t)63; }

uint64_t tagOf(Region* r, uint64_t devPlus1) {
  if (devPlus1 == 0 || devPlus1 - 1 >= ld(r->hdr.maxDevices)) return 0;
  return __atomic_load_n(&r->ledger()[devPlus1 - 1].tag, __ATOMIC_RELAXED);
}

// Writes one record in every attached region (the crashing thread's slot, or `forced`).
void record(int sig, const siginfo_t* si, uint64_t flags0, uint64_t forced) noexcept {
  const uint64_t tid = tidNow(), pid = (uint64_t)getpid(), at = nowMs();
  for (Reg& g : gRegs) {
    Region* r = g.r.load(std::memory_order_acquire);
    if (!r) continue;
    int role = g.role.load(std::memory_order_relaxed);
    if (role < 0 || role >= kRoles) continue;
    Area& a = r->areas[role];
    int slot = -1;
    for (int s = 0; s < kSlots; s++)
      if (ld(a.slots[s].tid) == tid) { slot = s; break; }
    uint64_t flags = flags0, serve = 0, peer = 0;
    if (flags & kRecExternal) {
      serve = ld(a.slots[0].serve);
    } else if (slot >= 0) {
      serve = ld(a.slots[slot].serve);
      peer = ld(a.slots[slot].peer);
      if (serve & kCommand) {
        serve = ld(a.slots[0].serve);
        flags |= kRecCommand;
      }
    }
    if (forced) serve = forced;
    serve &= 0xffffffffu;
    peer &= 0xffffffffu;
    for (Record& rec : a.rec) {
      uint64_t free = 0;
      if (!__atomic_compare_exchange_n(&rec.seq, &free, kWriting, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) continue;
      st(rec.pid, pid);
      st(rec.tid, tid);
      rec.sig = sig;
      rec.code = si ? si->si_code : 0;
      rec.slot = slot;
      st(rec.serve, serve);
      st(rec.peer, peer);
      st(rec.serveTag, tagOf(r, serve));
      st(rec.peerTag, tagOf(r, peer));
      st(rec.atMs, at);
      st(rec.flags, flags);
      uint64_t seq = gSeq.fetch_add(1, std::memory_order_relaxed) + 1;
      __atomic_store_n(&rec.seq, seq, __ATOMIC_RELEASE);
      break;
    }
  }
}

// True once nothing but the default action is left for `sig` (the process dies on return).
bool dying(int sig) noexcept {
  struct sigaction cur;
  if (sigaction(sig, nullptr, &cur) != 0) return true;
  return !(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == SIG_DFL;
}

void onFatal(int sig, siginfo_t* si, void* uc) {
  int savedErrno = errno;
  const bool sent = !si || si->si_code <= 0;  // kill()/tgkill()/raise()/abort()
  const bool external = sent && si && si->si_pid != getpid();
  // Another process's SIGSEGV is not a crash of ours; its SIGABRT is the watchdog's.
  const bool attribute = !external || sig == SIGABRT;
  const uint64_t flags = external ? kRecExternal : 0;
  const struct sigaction& old = gOld[sig];
  if (old.sa_flags & SA_SIGINFO ? old.sa_sigaction != nullptr : (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN)) {
    // A handler installed before ours (V8's WebAssembly trap handler for SIGSEGV, the SIGBUS
    // guard when it came first): it may handle the signal. One that gives up resets the
    // disposition to the default and returns, so the fault (or its raise) kills us on return.
    if (old.sa_flags & SA_SIGINFO) old.sa_sigaction(sig, si, uc);
    else old.sa_handler(sig);
    if (attribute && dying(sig)) record(sig, si, flags, 0);
    errno = savedErrno;
    return;
  }
  if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_IGN && sent) {
    errno = savedErrno;
    return;  // ignored before us; a fault cannot be ignored and falls through
  }
  if (attribute) record(sig, si, flags, 0);
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
  if (sent) raise(sig);  // blocked until we return, then fatal; a fault repeats and is fatal
  errno = savedErrno;
}

void altStack() noexcept {
  stack_t cur;
  if (sigaltstack(nullptr, &cur) == 0 && !(cur.ss_flags & SS_DISABLE)) return;  // has one
  void* p = mmap(nullptr, kAltStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return;
  stack_t ss{};
  ss.ss_sp = p;
  ss.ss_size = kAltStack;
  if (sigaltstack(&ss, nullptr) != 0) munmap(p, kAltStack);
}

// Guest RAM is shared anonymous memory (memfd) in both daemons: keep it out of core dumps.
void trimCoreDumps() noexcept {
  int fd = open("/proc/self/coredump_filter", O_RDWR | O_CLOEXEC);
  if (fd < 0) return;
  char buf[32] = {};
  ssize_t n = read(fd, buf, sizeof buf - 1);
  if (n > 0) {
    unsigned long v = strtoul(buf, nullptr, 16);
    unsigned long nv = v & ~(0x2ul | 0x40ul);  // anonymous shared, shared huge pages
    if (nv != v) {
      int len = snprintf(buf, sizeof buf, "0x%lx", nv);
      if (pwrite(fd, buf, (size_t)len, 0) < 0) { /* best effort */ }
    }
  }
  close(fd);
}

}  // namespace

size_t regionBytes(int maxDevices) noexcept { return ledgerOffset() + sizeof(LedgerEntry) * (size_t)maxDevices; }

std::string install() {
  static std::once_flag once;
  static std::string err;
  std::call_once(once, [] {
    for (int sig : kSignals) {
      if (sigaction(sig, nullptr, &gOld[sig]) != 0) { err = std::string("sigaction: ") + strerror(errno); return; }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = onFatal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int sig : kSignals) {
      if (sigaction(sig, &sa, nullptr) != 0) { err = std::string("sigaction: ") + strerror(errno); return; }
    }
    trimCoreDumps();
  });
  return err;
}

Slot* attach(Region* r, int role, int maxDevices) noexcept {
  if (role < 0 || role >= kRoles) role = kRoles - 1;
  Header& h = r->hdr;
  if (__atomic_load_n(&h.magic, __ATOMIC_ACQUIRE) != kMagic || h.version != 1 || h.maxDevices != (uint64_t)maxDevices ||
      h.ledgerOffset != ledgerOffset()) {
    // New (or laid out by another build): start afresh.
    memset(static_cast<void*>(r), 0, regionBytes(maxDevices));
    h.version = 1;
    h.maxDevices = (uint64_t)maxDevices;
    h.ledgerOffset = ledgerOffset();
    __atomic_store_n(&h.magic, kMagic, __ATOMIC_RELEASE);
  }
  Area& a = r->areas[role];
  for (Slot& s : a.slots) {
    st(s.tid, 0);
    st(s.serve, 0);
    st(s.peer, 0);
  }
  st(a.pid, (uint64_t)getpid());
  st(a.startMs, nowMs());
  st(a.slots[0].tid, tidNow());
  altStack();  // the JS thread's, if Node gave it none
  std::lock_guard<std::mutex> g(gRegMu);
  for (Reg& reg : gRegs) {
    if (reg.r.load(std::memory_order_relaxed)) continue;
    reg.role.store(role, std::memory_order_relaxed);
    reg.r.store(r, std::memory_order_release);
    break;
  }
  return &a.slots[0];
}

void detach(Region* r) noexcept {
  std::lock_guard<std::mutex> g(gRegMu);
  for (Reg& reg : gRegs)
    if (reg.r.load(std::memory_order_relaxed) == r) reg.r.store(nullptr, std::memory_order_release);
}

static thread_local void* tAltStack = nullptr;

Slot* enterThread(Region* r, int role, int idx) noexcept {
  if (!r || role < 0 || role >= kRoles || idx < 0 || idx >= kMaxWorkers) return &gSpareSlot;
  Slot* s = &r->areas[role].slots[1 + idx];
  st(s->serve, 0);
  st(s->peer, 0);
  st(s->tid, tidNow());
  stack_t cur;
  if (sigaltstack(nullptr, &cur) == 0 && (cur.ss_flags & SS_DISABLE)) {
    void* p = mmap(nullptr, kAltStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
      stack_t ss{};
      ss.ss_sp = p;
      ss.ss_size = kAltStack;
      if (sigaltstack(&ss, nullptr) == 0) tAltStack = p;
      else munmap(p, kAltStack);
    }
  }
  return s;
}

void leaveThread(Slot* s) noexcept {
  if (s && s != &gSpareSlot) {
    st(s->serve, 0);
    st(s->peer, 0);
    st(s->tid, 0);
  }
  if (tAltStack) {
    stack_t ss{};
    ss.ss_flags = SS_DISABLE;
    if (sigaltstack(&ss, nullptr) == 0) munmap(tAltStack, kAltStack);
    tAltStack = nullptr;
  }
}

int claim(Region* r, Claimed* out, int max) noexcept {
  int n = 0;
  for (int role = 0; role < kRoles && n < max; role++) {
    for (Record& rec : r->areas[role].rec) {
      if (n >= max) break;
      uint64_t seq = __atomic_load_n(&rec.seq, __ATOMIC_ACQUIRE);
      if (seq == 0 || seq == kWriting) continue;
      Claimed c;
      c.role = role;
      c.rec.seq = seq;
      c.rec.pid = ld(rec.pid);
      c.rec.tid = ld(rec.tid);
      c.rec.sig = (int64_t)ld(reinterpret_cast<uint64_t&>(rec.sig));
      c.rec.code = (int64_t)ld(reinterpret_cast<uint64_t&>(rec.code));
      c.rec.slot = (int64_t)ld(reinterpret_cast<uint64_t&>(rec.slot));
      c.rec.serve = ld(rec.serve);
      c.rec.peer = ld(rec.peer);
      c.rec.serveTag = ld(rec.serveTag);
      c.rec.peerTag = ld(rec.peerTag);
      c.rec.atMs = ld(rec.atMs);
      c.rec.flags = ld(rec.flags);
      // Exactly one claimant gets it (the peer daemon may be looking at the same moment).
      if (__atomic_compare_exchange_n(&rec.seq, &seq, 0, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) out[n++] = c;
    }
  }
  return n;
}

void noteException(uint64_t devPlus1) noexcept { record(0, nullptr, kRecJsException, devPlus1); }

}  // namespace crash
}  // namespace vhd
