// The front-end driver's virtio-blk load generator: see driver_blk.h.
#include "driver_blk.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vhd::drv {
namespace {

constexpr uint64_t kFeatEventIdx = 1ull << 29;
constexpr uint8_t kStatusUnset = 0xff;  // what the device must overwrite (OK is 0)
constexpr uint64_t kDrainSleepNs = 20'000;
constexpr int kIdlePollMs = 100;

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

void SleepNs(uint64_t ns) {
  timespec ts{0, long(ns)};
  nanosleep(&ts, nullptr);
}

}  // namespace

uint64_t BlkDriver::RequiredMemory(uint32_t queueSize) {
  uint64_t slots = MaxQueueDepth(queueSize);
  uint64_t off = ComputeRingLayout(0, queueSize).end;
  off = AlignUp(off + slots * kBlkBlockSize, 4096);
  return AlignUp(off + slots * 32, 4096);
}

std::unique_ptr<BlkDriver> BlkDriver::Create(const Options& o, std::string* err) {
  std::unique_ptr<BlkDriver> d(new BlkDriver());
  auto fail = [&](const char* what) {
    *err = std::string(what) + ": " + std::strerror(errno);
    return nullptr;
  };
  uint64_t need = RequiredMemory(o.queueSize);
  uint64_t size = o.memSize ? o.memSize : need;
  if (size < need || MaxQueueDepth(o.queueSize) < 1) {
    *err = "memSize too small for the ring and buffers, or queueSize below 3";
    return nullptr;
  }
  d->memFd_ = memfd_create("vhostd-blk-driver", MFD_CLOEXEC);
  if (d->memFd_ < 0) return fail("memfd_create");
  if (ftruncate(d->memFd_, off_t(size)) != 0) return fail("ftruncate");
  void* m = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, d->memFd_, 0);
  if (m == MAP_FAILED) return fail("mmap");
  d->mem_ = static_cast<uint8_t*>(m);
  d->memSize_ = size;
  d->queueSize_ = o.queueSize;
  d->layout_ = ComputeRingLayout(0, o.queueSize);
  uint32_t slots = MaxQueueDepth(o.queueSize);
  d->dataOff_ = d->layout_.end;
  d->hdrOff_ = AlignUp(d->dataOff_ + uint64_t(slots) * kBlkBlockSize, 4096);
  // Writes carry this (not zeroes, which a back-end could treat specially) until a read lands.
  for (uint32_t s = 0; s < slots; s++) std::memset(d->Data(s), 0xa5 ^ int(s & 0x7f), kBlkBlockSize);
  d->kickFd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (d->kickFd_ < 0) return fail("eventfd");
  d->callFd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (d->callFd_ < 0) return fail("eventfd");
  d->wakeFd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (d->wakeFd_ < 0) return fail("eventfd");
  d->ring_.Attach(d->mem_, d->layout_, o.queueSize);
  d->freeSlots_.reserve(slots);
  d->submitNs_.assign(slots, 0);
  d->slotIsWrite_.assign(slots, 0);
  d->latHist_.assign(kLatBuckets, 0);
  d->ResetRings(0);
  d->thread_ = std::thread([dev = d.get()] { dev->ThreadMain(); });
  return d;
}

BlkDriver::~BlkDriver() { Close(); }

void BlkDriver::Close() {
  if (closed_) return;
  closed_ = true;
  stop_ = true;
  if (thread_.joinable()) {
    Kick(wakeFd_);
    thread_.join();
  }
  for (int* fd : {&kickFd_, &callFd_, &wakeFd_, &memFd_}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
  if (mem_) munmap(mem_, memSize_);
  mem_ = nullptr;
}

BlkDriverRingInfo BlkDriver::Ring() const {
  uint64_t base = memAddr();
  return {base + layout_.desc, base + layout_.avail, base + layout_.used, kickFd_, callFd_};
}

void BlkDriver::ResetRings(uint64_t features) {
  std::lock_guard<std::mutex> lk(mu_);
  running_ = false;
  broken_ = false;
  ring_.Reset((features & kFeatEventIdx) != 0);
  // Slot s owns descriptors 3s..3s+2 for good, so the ring's own free list stays empty: then
  // PopUsed's one push per completion is taken straight back (ReapLocked) and never grows it.
  while (ring_.HasFree()) ring_.AllocDesc();
  freeSlots_.clear();
  for (uint32_t s = MaxQueueDepth(queueSize_); s-- > 0;) freeSlots_.push_back(s);
  st_.inFlight = 0;
  // Busy polling: no used-buffer notifications wanted (Reset turned them off).
}

bool BlkDriver::StartLoad(const BlkLoadConfig& cfg, std::string* err) {
  std::lock_guard<std::mutex> lk(mu_);
  if (broken_) {
    *err = "the ring is broken (the back-end misbehaved or a request timed out); handshake again";
    return false;
  }
  if (running_) {
    *err = "a load is already running";
    return false;
  }
  cfg_ = cfg;
  rng_ = cfg.seed ? cfg.seed : 0x9e3779b97f4a7c15ull;
  BlkStatsC fresh;
  fresh.inFlight = st_.inFlight;
  st_ = fresh;
  std::fill(latHist_.begin(), latHist_.end(), 0);
  running_ = true;
  Kick(wakeFd_);
  return true;
}

void BlkDriver::StopLoad() {
  std::lock_guard<std::mutex> lk(mu_);
  running_ = false;
}

void BlkDriver::ClearStats() {
  std::lock_guard<std::mutex> lk(mu_);
  BlkStatsC fresh;
  fresh.inFlight = st_.inFlight;
  st_ = fresh;
  std::fill(latHist_.begin(), latHist_.end(), 0);
}

BlkStatsC BlkDriver::Stats() {
  std::lock_guard<std::mutex> lk(mu_);
  BlkStatsC out = st_;
  out.running = running_;
  out.broken = broken_;
  if (!st_.latCount) return out;
  // The sample of rank ceil(q * count), as the upper edge of its 1 µs bucket (capped by the max).
  auto at = [&](double q) -> uint64_t {
    uint64_t rank = std::max<uint64_t>(1, uint64_t(q * double(st_.latCount) + 0.999999));
    uint64_t seen = 0;
    for (uint32_t b = 0; b < kLatBuckets; b++) {
      seen += latHist_[b];
      if (seen >= rank) return std::min<uint64_t>(uint64_t(b + 1) * 1000, st_.maxNs);
    }
    return st_.maxNs;
  };
  out.p50Ns = at(0.5);
  out.p99Ns = at(0.99);
  return out;
}

uint64_t BlkDriver::Rand() {  // xorshift64*
  rng_ ^= rng_ >> 12;
  rng_ ^= rng_ << 25;
  rng_ ^= rng_ >> 27;
  return rng_ * 0x2545f4914f6cdd1dull;
}

void BlkDriver::Kick(int fd) {
  uint64_t one = 1;
  ssize_t r = write(fd, &one, sizeof one);  // EAGAIN: counter saturated, a kick is pending anyway
  (void)r;
}

void BlkDriver::SubmitLocked(uint32_t slot, uint32_t type, uint64_t sector) {
  uint8_t* h = Header(slot);
  uint32_t reserved = 0;
  std::memcpy(h, &type, 4);  // virtio_blk_outhdr, little-endian like the host
  std::memcpy(h + 4, &reserved, 4);
  std::memcpy(h + 8, &sector, 8);
  h[16] = kStatusUnset;
  const uint64_t base = memAddr();
  const uint16_t head = uint16_t(3 * slot);
  // Written every time: the table is in memory the back-end can also write.
  VringDesc* d = ring_.Desc(head);
  d->addr = base + hdrOff_ + uint64_t(slot) * 32;
  d->len = 16;
  d->flags = VRING_DESC_F_NEXT;
  d->next = uint16_t(head + 1);
  d = ring_.Desc(uint16_t(head + 1));
  d->addr = base + dataOff_ + uint64_t(slot) * kBlkBlockSize;
  d->len = kBlkBlockSize;
  d->flags = uint16_t(VRING_DESC_F_NEXT | (type == kBlkTypeIn ? VRING_DESC_F_WRITE : 0));
  d->next = uint16_t(head + 2);
  d = ring_.Desc(uint16_t(head + 2));
  d->addr = base + hdrOff_ + uint64_t(slot) * 32 + 16;
  d->len = 1;
  d->flags = VRING_DESC_F_WRITE;
  d->next = 0;
  slotIsWrite_[slot] = type == kBlkTypeOut;
  ring_.Push(head);
  st_.inFlight++;
}

uint64_t BlkDriver::ReapLocked(uint64_t nowNs) {
  uint64_t n = 0;
  uint32_t id, len;
  bool bad;
  for (uint32_t i = 0; i < queueSize_; i++) {
    auto r = ring_.PopUsed(&id, &len, &bad);
    if (r == SplitRing::Pop::kNone) break;
    if (r == SplitRing::Pop::kBroken) {
      broken_ = true;
      running_ = false;
      st_.ringErrors++;
      break;
    }
    n++;
    if (bad) {  // not in flight: nothing was freed
      st_.ringErrors++;
      continue;
    }
    ring_.AllocDesc();  // the head PopUsed just freed (see ResetRings)
    uint32_t slot = id / 3;  // in flight, so a head we pushed: 3 * slot
    st_.inFlight--;
    st_.completed++;
    if (Header(slot)[16] != 0) st_.errors++;
    if (slotIsWrite_[slot]) st_.writes++;
    else st_.reads++;
    uint64_t ns = nowNs > submitNs_[slot] ? nowNs - submitNs_[slot] : 0;
    latHist_[std::min<uint64_t>(ns / 1000, kLatBuckets - 1)]++;
    st_.maxNs = std::max(st_.maxNs, ns);
    st_.latCount++;
    freeSlots_.push_back(slot);
  }
  return n;
}

uint64_t BlkDriver::LoadPassLocked() {
  if (broken_) return 0;
  uint64_t now = NowNs();  // one stamp per burst: the requests are published together
  uint64_t work = ReapLocked(now);
  if (!running_) return work;
  uint32_t sent = 0;
  const uint64_t blocks = cfg_.sectors / kBlkSectorsPerBlock;
  while (st_.inFlight < cfg_.queueDepth && !freeSlots_.empty()) {
    uint32_t slot = freeSlots_.back();
    freeSlots_.pop_back();
    bool write = cfg_.writePercent >= 100 || (cfg_.writePercent > 0 && Rand() % 100 < cfg_.writePercent);
    SubmitLocked(slot, write ? kBlkTypeOut : kBlkTypeIn, (Rand() % blocks) * kBlkSectorsPerBlock);
    submitNs_[slot] = now;
    sent++;
  }
  if (sent) {
    st_.submitted += sent;
    if (ring_.PublishAndCheckKick()) Kick(kickFd_);
  }
  return work + sent;
}

void BlkDriver::ThreadMain() {
  while (!stop_.load(std::memory_order_relaxed)) {
    bool running, draining;
    {
      std::lock_guard<std::mutex> lk(mu_);
      LoadPassLocked();
      running = running_;
      draining = st_.inFlight > 0 && !broken_;
    }
    if (running) continue;  // busy poll: a benchmark's driver should not add wake-up latency
    if (draining) {
      SleepNs(kDrainSleepNs);
      continue;
    }
    pollfd p{wakeFd_, POLLIN, 0};
    if (poll(&p, 1, kIdlePollMs) > 0) {
      uint64_t v;
      ssize_t r = read(wakeFd_, &v, sizeof v);
      (void)r;
    }
  }
}

int BlkDriver::RunOne(uint32_t type, uint64_t sector, uint8_t* data, uint32_t timeoutMs, std::string* err) {
  std::unique_lock<std::mutex> lk(mu_);
  if (broken_) {
    *err = "the ring is broken (the back-end misbehaved or a request timed out); handshake again";
    return -1;
  }
  if (running_ || st_.inFlight) {
    *err = "a load is running or draining; stopLoad() and wait for inFlight 0 first";
    return -1;
  }
  uint32_t slot = freeSlots_.back();
  freeSlots_.pop_back();
  if (type == kBlkTypeOut) std::memcpy(Data(slot), data, kBlkBlockSize);
  SubmitLocked(slot, type, sector);
  submitNs_[slot] = NowNs();
  st_.submitted++;
  if (ring_.PublishAndCheckKick()) Kick(kickFd_);
  const uint64_t deadline = NowNs() + uint64_t(timeoutMs) * 1'000'000;
  // The thread only reaps while holding mu_, and with nothing running it reaps this one too;
  // either way the slot returns to freeSlots_ when the request completes.
  while (st_.inFlight) {
    if (broken_) {
      *err = "the back-end broke the ring";
      return -1;
    }
    if (NowNs() > deadline) {
      broken_ = true;
      *err = "the request did not complete within " + std::to_string(timeoutMs) + " ms";
      return -1;
    }
    lk.unlock();
    SleepNs(kDrainSleepNs);
    lk.lock();
  }
  if (type == kBlkTypeIn) std::memcpy(data, Data(slot), kBlkBlockSize);
  return Header(slot)[16];
}

}  // namespace vhd::drv
