// Shared file mappings made ahead of need. vfe-vhostd, the HA standby, maps the guest memory
// (and dirty log, inflight area) of every session it holds a copy of while the keeper runs it,
// so a takeover maps nothing: mmap() of a file waits for the file's i_mmap lock, which a
// killed keeper's exit holds for as long as the kernel takes to tear it down (seconds on a
// host whose memory monitor walks those files), exactly when we need to take over.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vhd::premap {

struct Mapped {
  void* base = nullptr;   // what munmap() takes
  size_t len = 0;
  uint8_t* at = nullptr;  // the byte at `offset`
};

// Maps [offset, offset + size) of fd shared and read-write (page-aligned start): a mapping kept
// for the same file range is taken instead of a new one. False with errno set on failure.
bool mapShared(int fd, uint64_t offset, uint64_t size, Mapped* out) noexcept;

// Maps a range now and keeps it for mapShared(); an id (> 0) for release(), or -errno.
int64_t keep(int fd, uint64_t offset, uint64_t size) noexcept;

// Unmaps a kept mapping nobody has taken (a taken or unknown id is ignored).
void release(int64_t id) noexcept;

// Kept mappings not yet taken (tests, inspection).
size_t keptCount() noexcept;

}  // namespace vhd::premap
