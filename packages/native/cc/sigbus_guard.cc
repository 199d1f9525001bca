// SIGBUS guard (see sigbus_guard.h). Everything the handler touches is a lock-free atomic in
// static storage, and it calls only mmap, write, sigaction and raise (all async-signal-safe).
#include "sigbus_guard.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <mutex>
#include <new>

namespace vhd {

void MemFault::describe(char* out, size_t len) noexcept {
  uint64_t a = addr.load(std::memory_order_relaxed), host = regionHost.load(std::memory_order_relaxed);
  uint64_t gpa = regionGpa.load(std::memory_order_relaxed), size = regionSize.load(std::memory_order_relaxed);
  switch (static_cast<MapKind>(kind.load(std::memory_order_relaxed))) {
    case MapKind::kDirtyLog:
      snprintf(out, len, "dirty log of 0x%" PRIx64 " bytes shrank under us (SIGBUS at log byte 0x%" PRIx64
               "); the device's queues are stopped until the front-end sends a new log (SET_LOG_BASE)",
               size, a - host);
      break;
    case MapKind::kInflight:
      snprintf(out, len, "inflight area of 0x%" PRIx64 " bytes shrank under us (SIGBUS at area byte 0x%" PRIx64
               "); the device's queues are stopped until the front-end reconnects with a new area",
               size, a - host);
      break;
    default:
      if (a >= host && a - host < size)
        snprintf(out, len, "guest memory region 0x%" PRIx64 "+0x%" PRIx64 " shrank under us (SIGBUS at guest 0x%" PRIx64
                 "); the device's queues are stopped until the front-end sends a new memory table",
                 gpa, size, gpa + (a - host));
      else
        snprintf(out, len, "guest memory region 0x%" PRIx64 "+0x%" PRIx64 " shrank under us (SIGBUS at host 0x%" PRIx64
                 "); the device's queues are stopped until the front-end sends a new memory table",
                 gpa, size, a);
  }
  recorded.store(false, std::memory_order_release);
}

namespace sigbus {
namespace {

static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uintptr_t>::is_always_lock_free &&
                  std::atomic<int>::is_always_lock_free && std::atomic<bool>::is_always_lock_free &&
                  std::atomic<MemFault*>::is_always_lock_free,
              "the handler may only use lock-free atomics");

// state = generation << 2 | phase. Fields are written only in kWriting; the generation bumps on
// every claim, so a handler that read LIVE(g) before and after reading the fields knows they
// belong together (a slot reused meanwhile has another generation: no ABA).
enum : uint64_t { kFree = 0, kWriting = 1, kLive = 2, kDying = 3 };

struct Slot {
  std::atomic<uint64_t> state{0};
  std::atomic<uintptr_t> base{0};
  std::atomic<uintptr_t> len{0};
  std::atomic<uintptr_t> host{0};
  std::atomic<uint64_t> gpa{0}, size{0};
  std::atomic<MemFault*> fault{nullptr};
  std::atomic<bool> faulted{false};
  std::atomic<uint8_t> kind{0};
};

// Chunks are published once (release) and never freed: the handler may read any chunk whose
// pointer it loaded, at any time. Only add() allocates, under gGrow.
std::atomic<Slot*> gChunks[kMaxChunks];
std::mutex gGrow;
std::atomic<int> gHigh{0};      // slots [0, gHigh) may be live; the handler scans only those
std::atomic<int> gInflight{0};  // handlers between their first and last look at the registry
std::atomic<int> gLive{0};
std::atomic<bool> gInstalled{false};
struct sigaction gOld;          // written once before the handler is installed
uintptr_t gPage = 4096;

inline uint64_t phase(uint64_t st) { return st & 3; }

// The slot of a handle, or nullptr when its chunk does not exist (yet).
inline Slot* slotAt(int i) noexcept {
  Slot* c = gChunks[i / kChunkSlots].load(std::memory_order_acquire);
  return c ? &c[i % kChunkSlots] : nullptr;
}

void* zeroPages(uintptr_t at, uintptr_t len) noexcept {
  return mmap(reinterpret_cast<void*>(at), (size_t)len, PROT_READ | PROT_WRITE,
              MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
}

// True when `a` was guest memory and now reads as zeros.
bool handleGuest(uintptr_t a) noexcept {
  gInflight.fetch_add(1, std::memory_order_seq_cst);  // pairs with remove(): see there
  bool done = false;
  int n = gHigh.load(std::memory_order_acquire);
  for (int i = 0; i < n && !done; i++) {
    Slot* sp = slotAt(i);
    if (!sp) { i += kChunkSlots - 1 - i % kChunkSlots; continue; }  // not allocated: skip its chunk
    Slot& s = *sp;
    uint64_t st = s.state.load(std::memory_order_seq_cst);
    if (phase(st) != kLive) continue;
    uintptr_t base = s.base.load(std::memory_order_relaxed), len = s.len.load(std::memory_order_relaxed);
    if (a - base >= len) continue;  // unsigned: also false when a < base
    uintptr_t host = s.host.load(std::memory_order_relaxed);
    uint64_t gpa = s.gpa.load(std::memory_order_relaxed), size = s.size.load(std::memory_order_relaxed);
    MemFault* f = s.fault.load(std::memory_order_relaxed);
    uint8_t kind = s.kind.load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (s.state.load(std::memory_order_relaxed) != st) continue;  // changed under us: not a stable entry
    // The faulting page is past the file's new end, and so is every page after it: replace
    // them all at once (one fault instead of one per page). Pages before it may still be
    // backed; if not, they fault and are replaced in turn. hugetlbfs only splits at huge page
    // boundaries, so fall back to the whole mapping.
    uintptr_t page = a & ~(gPage - 1);
    if (zeroPages(page, base + len - page) == MAP_FAILED && zeroPages(base, len) == MAP_FAILED) break;
    s.faulted.store(true, std::memory_order_relaxed);
    if (f) {
      if (!f->recorded.exchange(true, std::memory_order_acq_rel)) {
        f->addr.store(a, std::memory_order_relaxed);
        f->regionGpa.store(gpa, std::memory_order_relaxed);
        f->regionSize.store(size, std::memory_order_relaxed);
        f->regionHost.store(host, std::memory_order_relaxed);
        f->kind.store(kind, std::memory_order_relaxed);
      }
      f->hits.fetch_add(1, std::memory_order_release);
      int fd = f->wakeFd.load(std::memory_order_relaxed);
      if (fd >= 0) {
        uint64_t one = 1;
        ssize_t r = write(fd, &one, sizeof one);
        (void)r;
      }
    }
    done = true;
  }
  gInflight.fetch_sub(1, std::memory_order_seq_cst);
  return done;
}

// Not ours: behave as if we had never installed a handler.
void forward(int sig, siginfo_t* si, void* uc) noexcept {
  bool sent = !si || si->si_code <= 0;  // kill()/tgkill()/sigqueue(): nothing repeats on return
  if (gOld.sa_flags & SA_SIGINFO) {
    if (gOld.sa_sigaction) { gOld.sa_sigaction(sig, si, uc); return; }
  } else if (gOld.sa_handler == SIG_IGN) {
    if (sent) return;  // a fault cannot be ignored: fall through to the default action
  } else if (gOld.sa_handler != SIG_DFL) {
    gOld.sa_handler(sig);
    return;
  }
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(SIGBUS, &dfl, nullptr);
  // A fault repeats when we return and now kills the process with SIGBUS (and a core); a sent
  // signal is re-raised (blocked until we return, then fatal).
  if (sent) raise(sig);
}

void onSigbus(int sig, siginfo_t* si, void* uc) {
  int savedErrno = errno;  // the interrupted code may be between a syscall and its errno check
  if (si && si->si_code > 0 && handleGuest(reinterpret_cast<uintptr_t>(si->si_addr))) {
    errno = savedErrno;
    return;  // the faulting access repeats on zero pages
  }
  errno = savedErrno;
  forward(sig, si, uc);
}

}  // namespace

std::string install() {
  static std::once_flag once;
  static std::string err;
  std::call_once(once, [] {
    long p = sysconf(_SC_PAGESIZE);
    if (p > 0) gPage = (uintptr_t)p;
    if (sigaction(SIGBUS, nullptr, &gOld) != 0) { err = std::string("sigaction(SIGBUS): ") + strerror(errno); return; }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = onSigbus;
    // SA_ONSTACK: use an alternate stack where a thread set one up (Node's main thread may);
    // workers do not need one: they fault a few frames deep in memcpy on an 8 MiB stack and
    // the handler needs well under a KiB.
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, nullptr) != 0) { err = std::string("sigaction(SIGBUS): ") + strerror(errno); return; }
    gInstalled.store(true);
  });
  return err;
}

bool installed() noexcept { return gInstalled.load(); }

// Lowest index that may be free (a hint: add() starts there, remove() lowers it), so that
// registering thousands of mappings (an HA takeover of every VF) is not quadratic.
std::atomic<int> gFreeHint{0};

// Claims a free slot in [begin, end) or returns -1.
static int claim(int begin, int end, uint64_t* mine) noexcept {
  for (int i = begin; i < end; i++) {
    Slot* sp = slotAt(i);
    if (!sp) { i += kChunkSlots - 1 - i % kChunkSlots; continue; }
    uint64_t st = sp->state.load(std::memory_order_relaxed);
    if (phase(st) != kFree) continue;
    uint64_t m = (((st >> 2) + 1) << 2) | kWriting;
    if (!sp->state.compare_exchange_strong(st, m, std::memory_order_acq_rel)) continue;
    *mine = m;
    return i;
  }
  return -1;
}

int add(void* base, size_t len, uint8_t* host, uint64_t gpa, uint64_t size, MemFault* fault, MapKind kind) noexcept {
  uint64_t mine = 0;
  int hint = gFreeHint.load(std::memory_order_relaxed);
  int i = claim(hint, kMaxSlots, &mine);
  if (i < 0) i = claim(0, hint, &mine);
  if (i < 0) {
    // Every allocated slot is in use: allocate the next chunk (once, by whoever gets here first).
    std::lock_guard<std::mutex> g(gGrow);
    i = claim(0, kMaxSlots, &mine);  // another add may have grown it meanwhile
    if (i < 0) {
      int c = 0;
      while (c < kMaxChunks && gChunks[c].load(std::memory_order_relaxed)) c++;
      if (c == kMaxChunks) return -1;
      Slot* chunk = new (std::nothrow) Slot[kChunkSlots];
      if (!chunk) return -1;
      gChunks[c].store(chunk, std::memory_order_release);
      i = claim(c * kChunkSlots, kMaxSlots, &mine);
      if (i < 0) return -1;
    }
  }
  gFreeHint.store(i + 1, std::memory_order_relaxed);
  Slot& s = *slotAt(i);
  s.base.store(reinterpret_cast<uintptr_t>(base), std::memory_order_relaxed);
  s.len.store(len, std::memory_order_relaxed);
  s.host.store(reinterpret_cast<uintptr_t>(host), std::memory_order_relaxed);
  s.gpa.store(gpa, std::memory_order_relaxed);
  s.size.store(size, std::memory_order_relaxed);
  s.fault.store(fault, std::memory_order_relaxed);
  s.faulted.store(false, std::memory_order_relaxed);
  s.kind.store(static_cast<uint8_t>(kind), std::memory_order_relaxed);
  int h = gHigh.load(std::memory_order_relaxed);
  while (h < i + 1 && !gHigh.compare_exchange_weak(h, i + 1, std::memory_order_acq_rel)) {
  }
  s.state.store((mine & ~(uint64_t)3) | kLive, std::memory_order_seq_cst);  // publishes the fields
  gLive.fetch_add(1, std::memory_order_relaxed);
  return i;
}

void remove(int handle) noexcept {
  if (handle < 0 || handle >= kMaxSlots || !slotAt(handle)) return;
  Slot& s = *slotAt(handle);
  uint64_t st = s.state.load(std::memory_order_relaxed);
  s.state.store((st & ~(uint64_t)3) | kDying, std::memory_order_seq_cst);
  // Dekker with handleGuest (both seq_cst): a handler that entered before the store above is
  // counted in gInflight and we wait for it; one entering after sees kDying. Only then may the
  // caller munmap, so a late handler can never MAP_FIXED over whatever reuses the range.
  while (gInflight.load(std::memory_order_seq_cst) != 0) sched_yield();
  s.state.store((st & ~(uint64_t)3) | kFree, std::memory_order_release);
  gLive.fetch_sub(1, std::memory_order_relaxed);
  int h = gFreeHint.load(std::memory_order_relaxed);
  while (handle < h && !gFreeHint.compare_exchange_weak(h, handle, std::memory_order_relaxed)) {
  }
}

bool faulted(int handle) noexcept {
  if (handle < 0 || handle >= kMaxSlots) return false;
  Slot* s = slotAt(handle);
  return s && s->faulted.load(std::memory_order_relaxed);
}

int liveCount() noexcept { return gLive.load(std::memory_order_relaxed); }

}  // namespace sigbus
}  // namespace vhd
