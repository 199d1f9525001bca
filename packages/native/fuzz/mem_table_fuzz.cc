// libFuzzer target: guest memory tables (MemTable::withAdded / withRemoved, the swaps that
// SET_MEM_TABLE, ADD_MEM_REG and REM_MEM_REG make) and every translation (gpaToHost,
// uvaToHost, gpaToIov) plus ring placement (Virtqueue::mapRings, and remap after each swap),
// checked against a model of the table: what must be refused is refused, what must be accepted
// is, and every host range returned is inside a mapped region and readable end to end.
//
// Input: ops, each a u8 kind then its fields:
//   0 add: u64 gpa, u64 uva, u32 size, u32 mmap offset (in a 1 MiB memfd)
//   1 remove the region at u8 index (exact values: must succeed)
//   2 remove by u64 gpa, u64 size, u64 uva (must succeed iff such a region exists)
//   3 translate: u64 gpa or uva, u64 len, u8 max segments
//   4 rings: u8 size log2, u64 desc, u64 avail, u64 used (front-end VAs)
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "../cc/virtqueue.h"
#include "fuzz_guest.h"

using namespace vhd;

namespace {

constexpr uint64_t kFileBytes = 1 << 20;

struct ModelRegion {
  uint64_t gpa, size, uva;
};

bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) { return a < b + blen && b < a + alen; }

int backingFd() {
  static int fd = fuzz::makeMemfd("fuzz-memtable", kFileBytes);
  return fd;
}

// Reads the first and last byte of a host range (faults if it is not mapped).
void touch(const uint8_t* p, uint64_t len) {
  volatile uint8_t x = p[0];
  x = p[len - 1];
  (void)x;
}

// The host range [h, h+len) must lie in one region of table t.
bool inTable(const MemTable& t, const volatile void* hv, uint64_t len) {
  const uint8_t* h = (const uint8_t*)const_cast<const void*>(hv);
  for (const Region& r : t.regions())
    if (h >= r.host && (uint64_t)(h - r.host) < r.size) return len <= r.size - (uint64_t)(h - r.host);
  return false;
}

const ModelRegion* findGpa(const std::vector<ModelRegion>& m, uint64_t gpa) {
  for (const ModelRegion& r : m)
    if (gpa >= r.gpa && gpa - r.gpa < r.size) return &r;
  return nullptr;
}

void checkRings(const MemTable& t, const Virtqueue& v) {
  FUZZ_CHECK(inTable(t, v.desc, 16ull * v.size), "desc table outside the table's regions");
  FUZZ_CHECK(inTable(t, v.avail, 6ull + 2ull * v.size), "avail ring outside the table's regions");
  FUZZ_CHECK(inTable(t, v.used, 6ull + 8ull * v.size), "used ring outside the table's regions");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  auto table = std::make_unique<MemTable>();
  std::vector<ModelRegion> model;
  Virtqueue vq;
  bool ringsMapped = false;
  char reason[256];
  for (int ops = 0; ops < 96 && !in.done(); ops++) {
    uint8_t kind = in.u8() % 5;
    std::unique_ptr<MemTable> next;
    std::string err;
    if (kind == 0) {
      RegionSpec s{backingFd(), in.u64(), 0, 0, 0};
      s.uva = in.u64();
      s.size = in.u32() % (kFileBytes + 1);
      s.mmapOffset = in.u32() % (kFileBytes + 4096);
      bool ok = s.size != 0 && s.gpa + s.size > s.gpa && s.uva + s.size > s.uva && model.size() < (size_t)kMaxMemRegions &&
                s.mmapOffset + s.size <= kFileBytes;
      for (const ModelRegion& r : model)
        if (overlaps(r.gpa, r.size, s.gpa, s.size) || overlaps(r.uva, r.size, s.uva, s.size)) ok = false;
      next = table->withAdded(s, &err);
      FUZZ_CHECK((next != nullptr) == ok, "withAdded accepted/refused unlike the model");
      FUZZ_CHECK(next || !err.empty(), "withAdded refused without a reason");
      if (next) {
        model.push_back(ModelRegion{s.gpa, s.size, s.uva});
        const Region& r = next->regions().back();
        touch(r.host, r.size);
      }
    } else if (kind == 1 || kind == 2) {
      ModelRegion want{};
      if (kind == 1) {
        uint8_t i = in.u8();
        if (model.empty()) continue;
        want = model[i % model.size()];
      } else {
        want.gpa = in.u64();
        want.size = in.u64();
        want.uva = in.u64();
      }
      size_t at = model.size();
      for (size_t i = 0; i < model.size(); i++)
        if (model[i].gpa == want.gpa && model[i].size == want.size && model[i].uva == want.uva) { at = i; break; }
      next = table->withRemoved(want.gpa, want.size, want.uva, &err);
      FUZZ_CHECK((next != nullptr) == (at < model.size()), "withRemoved found/missed unlike the model");
      if (next) model.erase(model.begin() + (long)at);
    } else if (kind == 3) {
      uint64_t a = in.u64(), len = in.u64();
      int maxIov = in.u8() % 9;
      if (uint8_t* h = table->gpaToHost(a, len)) {
        const ModelRegion* r = findGpa(model, a);
        FUZZ_CHECK(r && len <= r->size - (a - r->gpa), "gpaToHost gave a range the model does not hold");
        FUZZ_CHECK(inTable(*table, h, len), "gpaToHost range outside its region");
        if (len) touch(h, len);
      }
      if (uint8_t* h = table->uvaToHost(a, len)) {
        FUZZ_CHECK(inTable(*table, h, len), "uvaToHost range outside its region");
        if (len) touch(h, len);
      }
      struct iovec iov[8];
      int n = table->gpaToIov(a, len, iov, maxIov);
      FUZZ_CHECK(n >= -2 && n <= maxIov, "gpaToIov count");
      if (n >= 0) {
        uint64_t sum = 0, g = a;
        for (int i = 0; i < n; i++) {
          const ModelRegion* r = findGpa(model, g);
          FUZZ_CHECK(r != nullptr, "gpaToIov segment the model does not hold");
          FUZZ_CHECK(inTable(*table, iov[i].iov_base, iov[i].iov_len), "gpaToIov segment outside its region");
          FUZZ_CHECK(iov[i].iov_len > 0, "empty segment");
          touch(static_cast<uint8_t*>(iov[i].iov_base), iov[i].iov_len);
          sum += iov[i].iov_len;
          g += iov[i].iov_len;
        }
        FUZZ_CHECK(sum == len, "gpaToIov segments do not add up to the length");
      } else if (n == -1) {
        // Some byte must really be outside: walk the model.
        uint64_t g = a, left = len;
        bool hole = false;
        while (left) {
          const ModelRegion* r = findGpa(model, g);
          if (!r) { hole = true; break; }
          uint64_t c = r->size - (g - r->gpa);
          if (c >= left) break;
          left -= c;
          g += c;
        }
        FUZZ_CHECK(hole, "gpaToIov said outside for a range the model covers");
      }
    } else {
      QueueSetup s{};
      s.size = (uint16_t)(1u << (in.u8() % 16));
      s.descAddr = in.u64();
      s.availAddr = in.u64();
      s.usedAddr = in.u64();
      ringsMapped = vq.mapRings(*table, s, reason, sizeof reason);
      if (ringsMapped) checkRings(*table, vq);
      else vq.unmapRings();
    }
    if (next) {
      // The swap: queues move to the new table first (as the engine's swapMem does).
      if (ringsMapped) {
        ringsMapped = vq.remap(*next, reason, sizeof reason);
        if (ringsMapped) checkRings(*next, vq);
        else vq.unmapRings();
      }
      table = std::move(next);
      FUZZ_CHECK(table->regionCount() == model.size(), "region count differs from the model");
    }
  }
  return 0;
}
