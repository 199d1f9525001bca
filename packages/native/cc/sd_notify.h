// The address of a notify socket ($NOTIFY_SOCKET, sd_notify(3)): shared by sd_notify.cc and
// the test addon's listener that plays systemd's side (test_support/notify_listener.cc).
#pragma once
#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <cstring>
#include <string>

namespace vhd {

/** A notification is a handful of short assignments; systemd itself reads at most a few KiB. */
constexpr size_t kMaxNotifyState = 4096;
/** fds on one notification (Linux's SCM_MAX_FD). */
constexpr size_t kMaxNotifyFds = 253;

/** Fills addr from a $NOTIFY_SOCKET-style name: "/path" or "@abstract". Returns the address
 *  length, or 0 when the name is unusable (relative, empty, too long). */
inline socklen_t FillNotifyAddr(const std::string& name, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (name.size() < 2 || (name[0] != '/' && name[0] != '@')) return 0;
  if (name.size() > sizeof(addr->sun_path) - (name[0] == '/' ? 1 : 0)) return 0;
  std::memcpy(addr->sun_path, name.data(), name.size());
  if (name[0] == '@') {
    addr->sun_path[0] = '\0';  // abstract: the length, not a terminator, delimits the name
    return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
  }
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + 1);
}

}  // namespace vhd
