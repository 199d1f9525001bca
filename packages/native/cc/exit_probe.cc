// ExitProbe: is a process past the point of no return, seen from /proc, on a thread of its
// own. A SIGKILLed process stops running user code at once, but the kernel may take seconds
// to tear its memory down (exit_mmap waits for the i_mmap lock of every shared file it maps,
// and host memory monitors such as DAMON walk those files' reverse maps), and it closes its
// fds only after that. /proc shows the decision long before: every thread has PF_EXITING set
// (or is a zombie) from the moment it begins to exit, and an exiting thread never returns to
// user space.
//
// vfe-vhostd watches its keeper this way. Given the keeper's exit beacon (exit_beacon.h), the
// probe's thread sleeps on the beacon's robust futex and looks at /proc only once the kernel
// reports the owner thread dead: no wake-up at all while the keeper lives (on this VM each
// wake-up costs ~80 µs, so polling every 20 ms alone was ~0.4-0.6 % of a core). Without a
// usable beacon (an older keeper, a file that does not check out) it polls /proc every
// intervalMs: one pread of an fd kept open and one poll timeout per probe. Either way JS hears
// of it once, through an eventfd it watches (FdWatcher).
#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <napi.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "exit_beacon.h"
#include "napi_util.h"

namespace {

constexpr unsigned kPfExiting = 0x4;  // task->flags bit set as a thread begins do_exit

enum Fate { kAlive = 0, kExiting = 1, kGone = 2 };
const char* fateName(int f) { return f == kExiting ? "exiting" : f == kGone ? "gone" : "alive"; }

// State letter and flags of one stat file's text; false when it does not parse.
// "pid (comm) state ppid pgrp session tty_nr tpgid flags ...": comm may hold anything, even ")".
bool parseStat(const char* text, char* state, unsigned* flags) {
  const char* close = strrchr(text, ')');
  if (!close || close[1] != ' ' || !close[2]) return false;
  *state = close[2];
  const char* p = close + 3;
  for (int field = 0; field < 6; field++) {  // ppid pgrp session tty_nr tpgid, then flags
    p = strchr(p, ' ');
    if (!p) return false;
    p++;
  }
  *flags = (unsigned)strtoul(p, nullptr, 10);
  return true;
}

bool exitingStat(const char* text) {
  char state;
  unsigned flags;
  if (!parseStat(text, &state, &flags)) return false;
  return state == 'Z' || state == 'X' || (flags & kPfExiting) != 0;
}

// Reads a whole small file at offset 0; -1 when it cannot be read (the task is gone).
ssize_t readAt0(int fd, char* buf, size_t len) {
  ssize_t n = pread(fd, buf, len - 1, 0);
  if (n < 0) return -1;
  buf[n] = 0;
  return n;
}

// Every thread but the leader, which the caller looked at already.
int threadsFate(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", pid);
  DIR* dir = opendir(path);
  if (!dir) return kGone;
  int fate = kExiting;
  while (struct dirent* e = readdir(dir)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    char file[320], buf[1024];
    snprintf(file, sizeof file, "/proc/%d/task/%s/stat", pid, e->d_name);
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;  // that thread is gone
    ssize_t n = readAt0(fd, buf, sizeof buf);
    close(fd);
    if (n > 0 && !exitingStat(buf)) {
      fate = kAlive;  // a thread still finishing a system call: not yet
      break;
    }
  }
  closedir(dir);
  return fate;
}

// statFd: /proc/<pid>/stat, open. Its reads fail once the process is reaped.
int probe(int pid, int statFd) {
  char buf[1024];
  if (statFd < 0 || readAt0(statFd, buf, sizeof buf) <= 0) return kGone;
  if (!exitingStat(buf)) return kAlive;
  return threadsFate(pid);
}

int openStat(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  return open(path, O_RDONLY | O_CLOEXEC);
}

int32_t pidArg(const Napi::CallbackInfo& info, size_t i, const char* who) {
  return (int32_t)vhd::napi::IntArgAtLeast(info, i, std::string(who) + ": pid", 1, INT_MAX);
}

// processFate(pid): one probe, for the rare one-off question (a takeover waiting for locks).
Napi::Value ProcessFate(const Napi::CallbackInfo& info) {
  int pid = pidArg(info, 0, "processFate");
  int fd = openStat(pid);
  int fate = probe(pid, fd);
  if (fd >= 0) close(fd);
  return Napi::String::New(info.Env(), fateName(fate));
}

// Maps the beacon at `path` if it is the live beacon of `pid`: a regular file of ours, the
// right size and magic, naming pid, its word owned by a thread of pid. Else nullptr and why.
exit_beacon::Layout* openBeacon(const std::string& path, int pid, uint32_t* tid, std::string* why) {
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    *why = std::string("open: ") + strerror(errno);
    return nullptr;
  }
  struct stat st;
  void* map = MAP_FAILED;
  if (fstat(fd, &st) != 0) *why = std::string("stat: ") + strerror(errno);
  else if (!S_ISREG(st.st_mode) || st.st_uid != geteuid()) *why = "not a regular file of this user";
  else if (st.st_size != exit_beacon::kFileSize) *why = "size " + std::to_string((long long)st.st_size) + " is not " + std::to_string(exit_beacon::kFileSize);
  else if ((map = mmap(nullptr, exit_beacon::kFileSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED)
    *why = std::string("map: ") + strerror(errno);
  close(fd);
  if (map == MAP_FAILED) return nullptr;
  auto* b = static_cast<exit_beacon::Layout*>(map);
  uint32_t word = __atomic_load_n(&b->word, __ATOMIC_ACQUIRE);
  *tid = word & FUTEX_TID_MASK;
  char task[64];
  snprintf(task, sizeof task, "/proc/%d/task/%u", pid, *tid);
  if (memcmp(b->magic, exit_beacon::kMagic, sizeof b->magic) != 0 || b->version != exit_beacon::kVersion) *why = "not a beacon of this version";
  else if (b->pid != pid) *why = "the beacon of pid " + std::to_string(b->pid) + ", not " + std::to_string(pid);
  else if (*tid == 0 || (word & FUTEX_OWNER_DIED) != 0) *why = "its owner is dead";
  else if (access(task, F_OK) != 0) *why = "its owner " + std::to_string(*tid) + " is not a thread of " + std::to_string(pid);
  else return b;
  munmap(map, exit_beacon::kFileSize);
  return nullptr;
}

class ExitProbe : public Napi::ObjectWrap<ExitProbe> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ExitProbe",
                       {InstanceAccessor<&ExitProbe::Fd>("fd"), InstanceAccessor<&ExitProbe::Mode>("mode"),
                        InstanceAccessor<&ExitProbe::BeaconError>("beaconError"), InstanceMethod<&ExitProbe::FateOf>("fate"),
                        InstanceMethod<&ExitProbe::Close>("close")});
  }

  explicit ExitProbe(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ExitProbe>(info) {
    Napi::Env env = info.Env();
    pid_ = pidArg(info, 0, "ExitProbe");
    if (info.Length() < 2 || !info[1].IsNumber()) throw Napi::TypeError::New(env, "ExitProbe: intervalMs must be a number");
    double ms = info[1].As<Napi::Number>().DoubleValue();
    if (!std::isfinite(ms) || ms < 1 || ms > 60000) throw Napi::RangeError::New(env, "ExitProbe: intervalMs must be 1..60000");
    intervalMs_ = (int)ms;
    readyFd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    stopFd_ = eventfd(0, EFD_CLOEXEC);
    if (readyFd_ < 0 || stopFd_ < 0) {
      int err = errno;
      Release();
      throw Napi::Error::New(env, std::string("ExitProbe: eventfd: ") + strerror(err));
    }
    if (info.Length() > 2 && !info[2].IsUndefined()) {
      if (!info[2].IsString()) {
        Release();
        throw Napi::TypeError::New(env, "ExitProbe: beaconPath must be a string");
      }
      beacon_ = openBeacon(info[2].As<Napi::String>().Utf8Value(), pid_, &tid_, &beaconError_);
    }
    statFd_ = openStat(pid_);  // may fail: the process is gone already, the first probe says so
    thread_ = std::thread([this] { Run(); });
  }

  ~ExitProbe() override { Release(); }

 private:
  void Run() {
    // With a beacon, /proc is read only after the owner died, and then every millisecond until
    // every thread of the keeper is on its way out (one may still finish a burst or a syscall).
    if (beacon_ && !WaitForOwnerDeath()) {
      done_.store(true);
      return;
    }
    int everyMs = beacon_ && !futexFailed_.load() ? 1 : intervalMs_;
    for (;;) {
      int fate = probe(pid_, statFd_);
      if (fate != kAlive) {
        fate_.store(fate, std::memory_order_release);
        uint64_t one = 1;
        ssize_t r = write(readyFd_, &one, sizeof one);
        (void)r;
        break;
      }
      struct pollfd p {stopFd_, POLLIN, 0};
      int n = poll(&p, 1, everyMs);
      if (n > 0 || (n < 0 && errno != EINTR)) break;  // close() asked, or poll itself failed
    }
    done_.store(true);
  }

  // Sleeps on the beacon's word; true once its owner is dead, false when close() asked.
  bool WaitForOwnerDeath() {
    uint32_t* word = &beacon_->word;
    for (;;) {
      if (stop_.load(std::memory_order_acquire)) return false;
      uint32_t v = __atomic_load_n(word, __ATOMIC_ACQUIRE);
      if ((v & FUTEX_OWNER_DIED) != 0 || (v & FUTEX_TID_MASK) != tid_) return true;
      if ((v & FUTEX_WAITERS) == 0) {  // the kernel wakes a waiter only if this bit is set
        __atomic_compare_exchange_n(word, &v, v | FUTEX_WAITERS, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
        continue;
      }
      // Woken, EAGAIN (the word moved) or EINTR: look again. Anything else would spin: poll instead.
      if (syscall(SYS_futex, word, FUTEX_WAIT, v, nullptr, nullptr, 0) != 0 && errno != EAGAIN && errno != EINTR) {
        futexFailed_.store(true);
        return true;
      }
    }
  }

  Napi::Value Fd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), readyFd_); }
  Napi::Value Mode(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), beacon_ && !futexFailed_.load() ? "beacon" : "poll");
  }
  Napi::Value BeaconError(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), beaconError_); }
  Napi::Value FateOf(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), fateName(fate_.load(std::memory_order_acquire)));
  }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Release();
    return info.Env().Undefined();
  }

  // Stop the thread, then close its fds (the caller stops its FdWatcher on fd first).
  void Release() {
    if (thread_.joinable()) {
      stop_.store(true, std::memory_order_release);
      uint64_t one = 1;
      ssize_t r = write(stopFd_, &one, sizeof one);
      (void)r;
      // A wake sent just before the thread goes to sleep on the word would be lost: repeat it
      // until the thread is out.
      while (beacon_ && !done_.load()) {
        syscall(SYS_futex, &beacon_->word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
      thread_.join();
    }
    if (beacon_) {
      munmap(beacon_, exit_beacon::kFileSize);
      beacon_ = nullptr;
    }
    for (int* fd : {&readyFd_, &stopFd_, &statFd_})
      if (*fd >= 0) {
        close(*fd);
        *fd = -1;
      }
  }

  int pid_ = 0;
  int intervalMs_ = 20;
  int readyFd_ = -1, stopFd_ = -1, statFd_ = -1;
  std::atomic<int> fate_{kAlive};
  std::atomic<bool> stop_{false};
  std::atomic<bool> done_{false};
  std::atomic<bool> futexFailed_{false};  // FUTEX_WAIT refused: the thread polls /proc instead
  exit_beacon::Layout* beacon_ = nullptr;
  uint32_t tid_ = 0;
  std::string beaconError_;
  std::thread thread_;
};

}  // namespace

void InitExitProbe(Napi::Env env, Napi::Object exports) {
  exports.Set("ExitProbe", ExitProbe::Define(env));
  exports.Set("processFate", Napi::Function::New(env, ProcessFate, "processFate"));
}
