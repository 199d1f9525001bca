// Shared file mappings made ahead of need (see premap.h).
#include "premap.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace vhd::premap {

namespace {

struct Kept {
  int64_t id;
  dev_t dev;
  ino_t ino;
  uint64_t start;
  size_t len;
  void* base;
  bool populating;  // the populate thread works on it: nobody unmaps it until that is done
};

std::mutex mu;
std::condition_variable populated;  // a Kept's populating went false
std::vector<Kept> kept;
int64_t nextId = 1;
std::deque<int64_t> toPopulate;      // ids, in the order they were kept
bool populateThreadUp = false;

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
    std::unique_lock<std::mutex> g(mu);
    for (size_t i = 0; i < kept.size(); i++) {
      const Kept& k = kept[i];
      if (k.dev == st.st_dev && k.ino == st.st_ino && k.start == start && k.len == len) {
        // Taken mid-populate: wait (the taker may unmap it; the thread must be done with it).
        // Either way `i` may have moved: look it up again.
        int64_t id = k.id;
        populated.wait(g, [&] {
          for (const Kept& x : kept) if (x.id == id) return !x.populating;
          return true;
        });
        i = kept.size();
        for (size_t j = 0; j < kept.size(); j++) if (kept[j].id == id) i = j;
        if (i == kept.size()) break;  // released meanwhile: map anew below
        const Kept& taken = kept[i];
        out->base = taken.base;
        out->len = len;
        out->at = static_cast<uint8_t*>(taken.base) + (offset - start);
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
static void populateResident(void* base, size_t len) noexcept {
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  const size_t pages = (len + page - 1) / page;
  std::vector<unsigned char> vec(pages);
  if (mincore(base, len, vec.data()) != 0) return;
  size_t i = 0;
  while (i < pages) {
    if (!(vec[i] & 1)) { i++; continue; }
    size_t j = i;
    while (j < pages && (vec[j] & 1)) j++;
    madvise(static_cast<uint8_t*>(base) + i * page, (j - i) * page, MADV_POPULATE_WRITE);  // best effort
    i = j;
  }
}

// One thread populates kept mappings in the background, so keep() costs an mmap() and not a
// walk of a whole guest's memory on the caller's thread (vfe-vhostd's event loop).
static void populateLoop() noexcept {
  std::unique_lock<std::mutex> g(mu);
  while (!toPopulate.empty()) {
    int64_t id = toPopulate.front();
    toPopulate.pop_front();
    Kept* k = nullptr;
    for (Kept& x : kept) if (x.id == id) k = &x;
    if (!k) continue;  // taken or released before its turn
    k->populating = true;
    void* base = k->base;
    size_t len = k->len;
    g.unlock();
    populateResident(base, len);
    g.lock();
    for (Kept& x : kept) if (x.id == id) x.populating = false;
    populated.notify_all();
  }
  populateThreadUp = false;
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
  std::lock_guard<std::mutex> g(mu);
  int64_t id = nextId++;
  kept.push_back(Kept{id, st.st_dev, st.st_ino, start, len, m, false});
  toPopulate.push_back(id);
  if (!populateThreadUp) {
    try {
      std::thread(populateLoop).detach();
      populateThreadUp = true;
    } catch (...) {
      toPopulate.clear();  // no thread: the mapping is kept unpopulated (faults on first touch)
    }
  }
  return id;
}

void release(int64_t id) noexcept {
  void* base = nullptr;
  size_t len = 0;
  {
    std::unique_lock<std::mutex> g(mu);
    populated.wait(g, [&] {
      for (const Kept& x : kept) if (x.id == id) return !x.populating;
      return true;
    });
    for (size_t i = 0; i < kept.size(); i++) {
      if (kept[i].id != id) continue;
      base = kept[i].base;
      len = kept[i].len;
      kept.erase(kept.begin() + (long)i);
      break;
    }
  }
  if (base) munmap(base, len);
}

size_t keptCount() noexcept {
  std::lock_guard<std::mutex> g(mu);
  return kept.size();
}

}  // namespace vhd::premap
