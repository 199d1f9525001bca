// The keeper's exit beacon: a small shared file holding one robust futex word, owned by a
// thread of the keeper that does nothing else. When that thread dies, for whatever reason,
// the kernel walks its robust list at the start of do_exit's mm release, before the slow
// address-space teardown and before any fd is closed, sets FUTEX_OWNER_DIED in the word and
// wakes a waiter. So vfe-vhostd hears of a killed keeper at once, without waking up every
// 20 ms to look at /proc (exit_probe.cc waits on it; exit_beacon.cc arms it).
#pragma once

#include <cstdint>

namespace exit_beacon {

constexpr char kMagic[8] = {'V', 'H', 'B', 'E', 'A', 'C', 'O', 'N'};
constexpr uint32_t kVersion = 1;

// The file's layout (kFileSize bytes, the rest zero). Written once before the rename that
// publishes it; only `word` changes afterwards (the owner's tid, then the kernel's bits).
struct Layout {
  char magic[8];
  uint32_t version;
  int32_t pid;      // the process whose thread owns the word
  uint32_t word;    // FUTEX_TID_MASK: owner tid; FUTEX_OWNER_DIED / FUTEX_WAITERS: the kernel's
  uint32_t pad[11];
};
static_assert(sizeof(Layout) == 64, "beacon layout");
constexpr long kFileSize = 64;

}  // namespace exit_beacon
