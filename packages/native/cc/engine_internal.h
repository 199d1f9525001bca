// What the two halves of the engine (engine_worker.cc, engine_commands.cc) share: fd
// helpers and the few device checks both the worker loop and the commands make.
#pragma once
#include <fcntl.h>
#include <unistd.h>

#include "engine.h"

namespace vhd {

inline int dupFd(int fd) { return fd < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 3); }
inline void closeFd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

inline bool txActive(const Virtqueue& v) { return v.running && v.enabled && !v.broken; }

// The SIGBUS guard turned part of this device's guest memory into zero pages (its front-end
// shrank the file): stop every queue of the device (errFds written) and report it once.
// Owner worker only; RX locks keep deliverers out while the queues change.
void failOnMemFault(Device& d, EventSink& ev) noexcept;  // engine_worker.cc

}  // namespace vhd
