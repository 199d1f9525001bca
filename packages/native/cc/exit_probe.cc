// ExitProbe: is a process past the point of no return, seen from /proc, on a thread of its
// own. A SIGKILLed process stops running user code at once, but the kernel may take seconds
// to tear its memory down (exit_mmap waits for the i_mmap lock of every shared file it maps,
// and host memory monitors such as DAMON walk those files' reverse maps), and it closes its
// fds only after that. /proc shows the decision long before: every thread has PF_EXITING set
// (or is a zombie) from the moment it begins to exit, and an exiting thread never returns to
// user space.
//
// vfe-vhostd watches its keeper this way every 20 ms. Done from JS (a timer and a file read
// per probe) that cost 1.2 % of a core on this VM, more than the whole idle pair should; here
// it is one pread of an fd kept open and one poll timeout per probe, and JS hears of it once,
// through an eventfd it watches (FdWatcher).
#include <dirent.h>
#include <fcntl.h>
#include <napi.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

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
  Napi::Env env = info.Env();
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(env, std::string(who) + ": pid must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || std::trunc(v) != v || v < 1 || v > INT_MAX)
    throw Napi::RangeError::New(env, std::string(who) + ": pid must be an integer >= 1");
  return (int32_t)v;
}

// processFate(pid): one probe, for the rare one-off question (a takeover waiting for locks).
Napi::Value ProcessFate(const Napi::CallbackInfo& info) {
  int pid = pidArg(info, 0, "processFate");
  int fd = openStat(pid);
  int fate = probe(pid, fd);
  if (fd >= 0) close(fd);
  return Napi::String::New(info.Env(), fateName(fate));
}

class ExitProbe : public Napi::ObjectWrap<ExitProbe> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ExitProbe",
                       {InstanceAccessor<&ExitProbe::Fd>("fd"), InstanceMethod<&ExitProbe::FateOf>("fate"),
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
    statFd_ = openStat(pid_);  // may fail: the process is gone already, the first probe says so
    thread_ = std::thread([this] { Run(); });
  }

  ~ExitProbe() override { Release(); }

 private:
  void Run() {
    for (;;) {
      int fate = probe(pid_, statFd_);
      if (fate != kAlive) {
        fate_.store(fate, std::memory_order_release);
        uint64_t one = 1;
        ssize_t r = write(readyFd_, &one, sizeof one);
        (void)r;
        return;
      }
      struct pollfd p {stopFd_, POLLIN, 0};
      int n = poll(&p, 1, intervalMs_);
      if (n > 0 || (n < 0 && errno != EINTR)) return;  // close() asked, or poll itself failed
    }
  }

  Napi::Value Fd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), readyFd_); }
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
      uint64_t one = 1;
      ssize_t r = write(stopFd_, &one, sizeof one);
      (void)r;
      thread_.join();
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
  std::thread thread_;
};

}  // namespace

void InitExitProbe(Napi::Env env, Napi::Object exports) {
  exports.Set("ExitProbe", ExitProbe::Define(env));
  exports.Set("processFate", Napi::Function::New(env, ProcessFate, "processFate"));
}
