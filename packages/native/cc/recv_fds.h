// recvmsg() with SCM_RIGHTS for the glue files that read vhost-user connections (socket.cc,
// inbox.cc): one parser of control messages, one shape of result for JS.
#pragma once
#include <napi.h>
#include <sys/types.h>

#include <vector>

namespace vhd {

/** fds a recvmsg() installed: closed on scope exit unless RecvResultObject() handed them to JS. */
struct ReceivedFds {
  std::vector<int> fds;
  bool truncated = false;  // MSG_CTRUNC, or more than maxFds came (the extra ones are closed)
  ReceivedFds() = default;
  ReceivedFds(const ReceivedFds&) = delete;
  ReceivedFds& operator=(const ReceivedFds&) = delete;
  ~ReceivedFds();
};

/** recvmsg(MSG_DONTWAIT | MSG_CMSG_CLOEXEC | flags) into buf, fds into *out; -1 with errno as recvmsg. */
ssize_t RecvWithFds(int fd, void* buf, size_t len, size_t maxFds, int flags, ReceivedFds* out);

/** { data, fds, fdsTruncated } for JS (RecvResult in native.ts); the fds become JS's. */
Napi::Object RecvResultObject(Napi::Env env, const char* data, size_t n, ReceivedFds* received);

}  // namespace vhd
