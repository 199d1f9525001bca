// Shared file mappings made ahead of need (see premap.h).
#include "premap.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace vhd::premap {

namespace {

// A kept mapping's background populate (populateResident): release() of a mapping still being
// populated leaves the munmap to the populating thread, so it never works on a range reused.
struct Populate {
  enum : int { kRunning = 0, kDone = 1, kReleased = 2 };
  std::atomic<int> state{kRunning};
};

struct Kept {
  int64_t id;
  dev_t dev;
  ino_t ino;
  uint64_t start;
  size_t len;
  void* base;
  std::shared_ptr<Populate> pop;
};

std::mutex mu;
std::vector<Kept> kept;
int64_t nextId = 1;

// The page-aligned range every mapping of [offset, offset + size) uses.
bool aligned(uint64_t offset, uint64_t size, uint64_t* start, size_t* len) noexcept {
  const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
  *start = offset & ~(page - 1);
  uint64_t l = offset - *start + size;
  if (size == 0 || offset > UINT64_MAX - size || l < size || l > (uint64_t)SIZE_MAX) {
    errno = EINVAL;
    return false;
  }
  *len = (size_t)l;
  return true;
}

}  // namespace

bool mapShared(int fd, uint64_t offset, uint64_t size, Mapped* out) noexcept {
  uint64_t start;
  size_t len;
  if (!aligned(offset, size, &start, &len)) return false;
  struct stat st;
  if (fstat(fd, &st) == 0) {
    std::lock_guard<std::mutex> g(mu);
    for (size_t i = 0; i < kept.size(); i++) {
      const Kept& k = kept[i];
      if (k.dev == st.st_dev && k.ino == st.st_ino && k.start == start && k.len == len) {
        out->base = k.base;
        out->len = len;
        out->at = static_cast<uint8_t*>(k.base) + (offset - start);
        kept.erase(kept.begin() + (long)i);  // the caller owns (and will munmap) it now
        return true;
      }
    }
  }
  void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)start);
  if (m == MAP_FAILED) return false;
  out->base = m;
  out->len = len;
  out->at = static_cast<uint8_t*>(m) + (offset - start);
  return true;
}

// Page-table entries for the pages the file already has: a takeover's first touches then do
// not fault. A fault needs the page's lock, which the host's reclaim (DAMON pageout) can hold
// while it waits behind a dying keeper's exit (seen: 5.8 s). Holes stay holes (mincore), so
// nothing is allocated that the front-end has not.
static void populateResident(void* base, size_t len, const Populate* pop) noexcept {
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  const size_t pages = (len + page - 1) / page;
  std::vector<unsigned char> vec(pages);
  if (mincore(base, len, vec.data()) != 0) return;
  const size_t chunk = (2u << 20) / page;  // a released mapping stops within one chunk
  size_t i = 0;
  while (i < pages) {
    if (pop && pop->state.load(std::memory_order_relaxed) == Populate::kReleased) return;
    if (!(vec[i] & 1)) { i++; continue; }
    size_t j = i;
    while (j < pages && j - i < chunk && (vec[j] & 1)) j++;
    madvise(static_cast<uint8_t*>(base) + i * page, (j - i) * page, MADV_POPULATE_WRITE);  // best effort
    i = j;
  }
}

int64_t keep(int fd, uint64_t offset, uint64_t size) noexcept {
  uint64_t start;
  size_t len;
  if (!aligned(offset, size, &start, &len)) return -errno;
  struct stat st;
  if (fstat(fd, &st) != 0) return -errno;
  // Never past the file's end: touching such a page raises SIGBUS (the users check this too).
  if (S_ISREG(st.st_mode) && offset + size > (uint64_t)st.st_size) return -EINVAL;
  void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)start);
  if (m == MAP_FAILED) return -errno;
  // On a thread of its own: populating a large guest takes hundreds of ms, and the caller's
  // event loop is what notices a keeper dying (right after a hand-back, a crash-suspect VF's
  // second chance may kill it at once: issue 17).
  auto pop = std::make_shared<Populate>();
  try {
    std::thread([pop, m, len] {
      populateResident(m, len, pop.get());
      if (pop->state.exchange(Populate::kDone) == Populate::kReleased) munmap(m, len);
    }).detach();
  } catch (...) {
    populateResident(m, len, nullptr);
    pop->state.store(Populate::kDone);
  }
  std::lock_guard<std::mutex> g(mu);
  int64_t id = nextId++;
  kept.push_back(Kept{id, st.st_dev, st.st_ino, start, len, m, pop});
  return id;
}

void release(int64_t id) noexcept {
  void* base = nullptr;
  size_t len = 0;
  std::shared_ptr<Populate> pop;
  {
    std::lock_guard<std::mutex> g(mu);
    for (size_t i = 0; i < kept.size(); i++) {
      if (kept[i].id != id) continue;
      base = kept[i].base;
      len = kept[i].len;
      pop = kept[i].pop;
      kept.erase(kept.begin() + (long)i);
      break;
    }
  }
  // Still populating: its thread unmaps it when it stops (within one chunk).
  if (pop && pop->state.exchange(Populate::kReleased) == Populate::kRunning) return;
  if (base) munmap(base, len);
}

size_t keptCount() noexcept {
  std::lock_guard<std::mutex> g(mu);
  return kept.size();
}

}  // namespace vhd::premap
