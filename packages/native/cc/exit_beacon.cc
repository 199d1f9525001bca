// armExitBeacon(path): the keeper's side of exit_beacon.h. One thread of this process owns
// the beacon's futex word through its robust list and then sleeps with every signal blocked,
// so it runs no code until the process dies, and then the kernel reports its death in the
// word first thing (see the header). The file is written under a temporary name and renamed
// over `path`, so a reader sees either the previous keeper's beacon or this one, complete.
#include <fcntl.h>
#include <linux/futex.h>
#include <napi.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <string>
#include <thread>

#include "exit_beacon.h"
#include "napi_util.h"

namespace {

// One beacon per process: the robust list lives as long as the owner thread, i.e. forever.
std::atomic<bool> armed{false};
exit_beacon::Layout* beacon = nullptr;
struct robust_list_head listHead;
struct robust_list listEntry;
std::atomic<int> ownerState{0};  // 0 arming, 1 armed, -errno failed

void Owner() {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);  // process signals go to other threads; SIGKILL still ends us
  uint32_t tid = (uint32_t)syscall(SYS_gettid);
  __atomic_store_n(&beacon->word, tid, __ATOMIC_RELEASE);
  // Replaces glibc's list for this thread only, which never takes a robust pthread mutex.
  listHead.list.next = &listEntry;
  listEntry.next = &listHead.list;
  listHead.futex_offset = (long)((char*)&beacon->word - (char*)&listEntry);
  listHead.list_op_pending = nullptr;
  if (syscall(SYS_set_robust_list, &listHead, sizeof listHead) != 0) {
    ownerState.store(-errno);
    return;
  }
  ownerState.store(1);
  for (;;) pause();  // every signal blocked: returns never
}

Napi::Value ArmExitBeacon(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = vhd::napi::StringArg(info, 0, "armExitBeacon: path");
  if (path.empty() || path[0] != '/' || path.size() > PATH_MAX - 32 || path.find('\0') != std::string::npos)
    throw Napi::RangeError::New(env, "armExitBeacon: path must be absolute and shorter than PATH_MAX");
  if (armed.exchange(true)) throw Napi::Error::New(env, "armExitBeacon: this process has armed its beacon already");
  auto fail = [&](const std::string& what, int err) {
    armed.store(false);
    return Napi::Error::New(env, "armExitBeacon: " + what + ": " + strerror(err));
  };
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  unlink(tmp.c_str());
  int fd = open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) throw fail("create " + tmp, errno);
  void* map = MAP_FAILED;
  if (ftruncate(fd, exit_beacon::kFileSize) == 0) map = mmap(nullptr, exit_beacon::kFileSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int err = errno;
  close(fd);
  if (map == MAP_FAILED) {
    unlink(tmp.c_str());
    throw fail("map " + tmp, err);
  }
  beacon = static_cast<exit_beacon::Layout*>(map);
  memcpy(beacon->magic, exit_beacon::kMagic, sizeof beacon->magic);
  beacon->version = exit_beacon::kVersion;
  beacon->pid = getpid();
  std::thread(Owner).detach();
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (ownerState.load() == 0 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::microseconds(50));
  int state = ownerState.load();
  if (state != 1) {
    // The owner thread (if it ever runs) keeps the mapping; the file is simply not published.
    unlink(tmp.c_str());
    throw Napi::Error::New(env, std::string("armExitBeacon: owner thread: ") + (state == 0 ? "did not start in 2 s" : strerror(-state)));
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    unlink(tmp.c_str());
    throw Napi::Error::New(env, "armExitBeacon: publish " + path + ": " + strerror(err));
  }
  return Napi::Number::New(env, (double)__atomic_load_n(&beacon->word, __ATOMIC_ACQUIRE));
}

}  // namespace

void InitExitBeacon(Napi::Env env, Napi::Object exports) {
  exports.Set("armExitBeacon", Napi::Function::New(env, ArmExitBeacon, "armExitBeacon"));
}
