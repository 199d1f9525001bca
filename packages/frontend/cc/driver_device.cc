// The front-end driver device: see driver_device.h.
#include "driver_device.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "test_frame.h"

namespace vhd::drv {
namespace {

constexpr uint64_t kFeatMrgRxbuf = 1ull << 15;
constexpr uint64_t kFeatEventIdx = 1ull << 29;
constexpr uint64_t kFeatVersion1 = 1ull << 32;
constexpr uint32_t kTxBatch = 256;
constexpr uint32_t kRxBatch = 512;
constexpr uint64_t kSpinSleepNs = 20'000;    // idle: short sleeps first ...
constexpr uint64_t kSpinPhaseNs = 2'000'000;  // ... for this long,
constexpr uint64_t kIdleSleepNs = 1'000'000;  // then sleep on call fds for at most this.
constexpr size_t kAsmBufSize = 65536;
constexpr uint64_t kWindow = 4096;  // seqs remembered as lost per stream

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

inline void SetBit(uint64_t* bits, uint64_t seq) { bits[(seq % kWindow) / 64] |= 1ull << (seq % 64); }
inline void ClearBit(uint64_t* bits, uint64_t seq) { bits[(seq % kWindow) / 64] &= ~(1ull << (seq % 64)); }
inline bool TestBit(const uint64_t* bits, uint64_t seq) { return (bits[(seq % kWindow) / 64] >> (seq % 64)) & 1; }

void Drain(int fd) {
  uint64_t v;
  while (read(fd, &v, sizeof v) == sizeof v) {
  }
}

}  // namespace

uint64_t DriverDevice::RequiredMemory(uint32_t queuePairs, uint32_t queueSize) {
  uint64_t off = 0;
  for (uint32_t q = 0; q < 2 * queuePairs; q++) off = ComputeRingLayout(off, queueSize).end;
  for (uint32_t q = 0; q < 2 * queuePairs; q++)
    off = AlignUp(off + uint64_t(queueSize) * (q % 2 == 0 ? kRxBufSize : kTxBufSize), 4096);
  return off;
}

std::unique_ptr<DriverDevice> DriverDevice::Create(const Options& o, std::string* err) {
  std::unique_ptr<DriverDevice> d(new DriverDevice());
  auto fail = [&](const char* what) {
    *err = std::string(what) + ": " + std::strerror(errno);
    return nullptr;
  };
  if (RequiredMemory(o.queuePairs, o.queueSize) > o.memSize) {
    *err = "memSize too small for the rings and buffers";
    return nullptr;
  }
  d->memFd_ = memfd_create("vhostd-driver", MFD_CLOEXEC);
  if (d->memFd_ < 0) return fail("memfd_create");
  if (ftruncate(d->memFd_, off_t(o.memSize)) != 0) return fail("ftruncate");
  void* m = mmap(nullptr, o.memSize, PROT_READ | PROT_WRITE, MAP_SHARED, d->memFd_, 0);
  if (m == MAP_FAILED) return fail("mmap");
  d->mem_ = static_cast<uint8_t*>(m);
  d->memSize_ = o.memSize;
  d->queueSize_ = o.queueSize;
  d->wakeFd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (d->wakeFd_ < 0) return fail("eventfd");

  d->queues_.resize(2 * o.queuePairs);
  uint64_t off = 0;
  for (auto& q : d->queues_) {
    q.layout = ComputeRingLayout(off, o.queueSize);
    off = q.layout.end;
  }
  for (uint32_t i = 0; i < d->queues_.size(); i++) {
    Queue& q = d->queues_[i];
    q.bufOff = off;
    q.bufSize = i % 2 == 0 ? kRxBufSize : kTxBufSize;
    off = AlignUp(off + uint64_t(o.queueSize) * q.bufSize, 4096);
    q.kickFd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (q.kickFd < 0) return fail("eventfd");
    q.callFd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (q.callFd < 0) return fail("eventfd");
    q.ring.Attach(d->mem_, q.layout, o.queueSize);
  }
  d->pairs_.resize(o.queuePairs);
  for (auto& p : d->pairs_) p.asmBuf.resize(kAsmBufSize);
  d->ResetRings(o.features);
  d->thread_ = std::thread([dev = d.get()] { dev->ThreadMain(); });
  return d;
}

DriverDevice::~DriverDevice() { Close(); }

void DriverDevice::Close() {
  if (closed_) return;
  closed_ = true;
  stop_ = true;
  if (thread_.joinable()) {
    Wake();
    thread_.join();
  }
  for (auto& q : queues_) {
    if (q.kickFd >= 0) close(q.kickFd);
    if (q.callFd >= 0) close(q.callFd);
    q.kickFd = q.callFd = -1;
  }
  if (wakeFd_ >= 0) close(wakeFd_);
  wakeFd_ = -1;
  if (mem_) munmap(mem_, memSize_);
  mem_ = nullptr;
  if (memFd_ >= 0) close(memFd_);
  memFd_ = -1;
}

DriverRingInfo DriverDevice::Ring(uint32_t q) const {
  const Queue& x = queues_[q];
  uint64_t base = memAddr();
  return {base + x.layout.desc, base + x.layout.avail, base + x.layout.used, x.kickFd, x.callFd};
}

void DriverDevice::SetFeaturesLocked(uint64_t f) {
  mrgRxbuf_ = (f & kFeatMrgRxbuf) != 0;
  eventIdx_ = (f & kFeatEventIdx) != 0;
  hdrLen_ = (f & (kFeatVersion1 | kFeatMrgRxbuf)) ? 12 : 10;
}

void DriverDevice::ResetRings(uint64_t features) {
  std::lock_guard<std::mutex> lk(mu_);
  SetFeaturesLocked(features);
  for (auto& q : queues_) {
    q.ring.Reset(eventIdx_);
    q.broken = false;
  }
  for (auto& p : pairs_) p.asmRemaining = 0;
  Wake();
}

void DriverDevice::StartTx(uint32_t pair, const TxConfig& cfg) {
  std::lock_guard<std::mutex> lk(mu_);
  Pair& p = pairs_[pair];
  p.tx = cfg;
  p.txSent = 0;
  p.tokens = 1;
  p.lastRefillNs = NowNs();
  p.txActive = true;
  Wake();
}

void DriverDevice::StopTx(uint32_t pair) {
  std::lock_guard<std::mutex> lk(mu_);
  pairs_[pair].txActive = false;
}

void DriverDevice::StartRx(uint32_t pair) {
  std::lock_guard<std::mutex> lk(mu_);
  Pair& p = pairs_[pair];
  Queue& q = queues_[2 * pair];
  // Frames that arrived while RX was stopped belong to no session: give their buffers back.
  if (!q.broken) {
    uint32_t id, len;
    bool bad;
    for (;;) {
      auto r = q.ring.PopUsed(&id, &len, &bad);
      if (r == SplitRing::Pop::kNone) break;
      if (r == SplitRing::Pop::kBroken) {
        q.broken = true;
        p.st.ringErrors++;
        break;
      }
    }
  }
  uint64_t ringErrors = p.st.ringErrors;
  DriverStatsC fresh = p.st;
  fresh.rxPackets = fresh.rxBytes = fresh.rxForeign = fresh.rxLost = fresh.rxDuplicated = 0;
  fresh.rxCorrupted = fresh.rxReordered = fresh.rxMaxGapUs = 0;
  fresh.ringErrors = ringErrors;
  p.st = fresh;
  p.streams.clear();
  p.lastRxNs = 0;
  p.latHist.clear();
  p.latOver = p.latMaxNs = p.latCount = 0;
  p.asmRemaining = 0;
  p.rxActive = true;
  Wake();
}

DriverLatencyC DriverDevice::Latency(uint32_t pair) {
  std::lock_guard<std::mutex> lk(mu_);
  const Pair& p = pairs_[pair];
  DriverLatencyC out;
  out.count = p.latCount;
  out.maxNs = p.latMaxNs;
  if (!p.latCount) return out;
  // The sample of rank ceil(q * count), as the upper edge of its 1 µs bucket (the max above).
  auto at = [&](double q) -> uint64_t {
    uint64_t rank = std::max<uint64_t>(1, uint64_t(q * double(p.latCount) + 0.999999));
    uint64_t seen = 0;
    for (uint32_t b = 0; b < p.latHist.size(); b++) {
      seen += p.latHist[b];
      if (seen >= rank) return std::min<uint64_t>(uint64_t(b + 1) * 1000, p.latMaxNs);
    }
    return p.latMaxNs;
  };
  out.p50Ns = at(0.5);
  out.p90Ns = at(0.9);
  out.p99Ns = at(0.99);
  out.p999Ns = at(0.999);
  return out;
}

void DriverDevice::StopRx(uint32_t pair) {
  std::lock_guard<std::mutex> lk(mu_);
  pairs_[pair].rxActive = false;
}

DriverStatsC DriverDevice::Stats(uint32_t pair) {
  std::lock_guard<std::mutex> lk(mu_);
  return pairs_[pair].st;
}

bool DriverDevice::WriteMem(uint64_t addr, const void* data, size_t len) {
  uint64_t base = memAddr();
  if (addr < base || len > memSize_ || addr - base > memSize_ - len) return false;
  std::lock_guard<std::mutex> lk(mu_);
  if (len) std::memcpy(mem_ + (addr - base), data, len);  // an empty Buffer's data may be null
  return true;
}

bool DriverDevice::ReadMem(uint64_t addr, void* out, size_t len) {
  uint64_t base = memAddr();
  if (addr < base || len > memSize_ || addr - base > memSize_ - len) return false;
  std::lock_guard<std::mutex> lk(mu_);
  if (len) std::memcpy(out, mem_ + (addr - base), len);  // an empty Buffer's data may be null
  return true;
}

void DriverDevice::Kick(int fd) {
  uint64_t one = 1;
  ssize_t r = write(fd, &one, sizeof one);  // EAGAIN: counter saturated, a kick is pending anyway
  (void)r;
}

void DriverDevice::Wake() {
  if (wakeFd_ >= 0) Kick(wakeFd_);
}

void DriverDevice::ThreadMain() {
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);  // make the 20 µs sleeps ~20 µs
  uint64_t idleSince = 0;
  std::vector<pollfd> pfds;
  std::vector<uint32_t> armed;
  while (!stop_.load(std::memory_order_relaxed)) {
    uint64_t now = NowNs(), waitNs = UINT64_MAX, work;
    {
      std::lock_guard<std::mutex> lk(mu_);
      work = PassLocked(now, &waitNs);
    }
    if (work) {
      idleSince = 0;
      continue;
    }
    if (!idleSince) idleSince = now;
    if (now - idleSince < kSpinPhaseNs) {
      uint64_t ns = std::max<uint64_t>(1000, std::min(kSpinSleepNs, waitNs));
      timespec ts{0, long(ns)};
      nanosleep(&ts, nullptr);
      continue;
    }
    // Long idle: ask the device for used-buffer notifications and sleep on the call fds.
    pfds.clear();
    armed.clear();
    pfds.push_back({wakeFd_, POLLIN, 0});
    bool pending = false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (uint32_t i = 0; i < queues_.size(); i++) {
        Queue& q = queues_[i];
        const Pair& p = pairs_[i / 2];
        bool wanted = i % 2 == 0 ? p.rxActive : q.ring.inflight() > 0;
        if (!wanted || q.broken) continue;
        armed.push_back(i);
        if (q.ring.EnableInterrupts()) pending = true;
        pfds.push_back({q.callFd, POLLIN, 0});
      }
    }
    if (!pending) {
      uint64_t ns = std::max<uint64_t>(1000, std::min(kIdleSleepNs, waitNs));
      timespec ts{0, long(ns)};
      if (ppoll(pfds.data(), pfds.size(), &ts, nullptr) > 0) {
        for (auto& f : pfds)
          if (f.revents & POLLIN) Drain(f.fd);
      }
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (uint32_t i : armed) queues_[i].ring.DisableInterrupts();
    }
  }
}

uint64_t DriverDevice::PassLocked(uint64_t nowNs, uint64_t* waitNs) {
  uint64_t work = 0;
  for (uint32_t i = 0; i < pairs_.size(); i++) {
    work += RxPass(i, nowNs);
    work += TxPass(i, nowNs, waitNs);
  }
  return work;
}

uint64_t DriverDevice::TxPass(uint32_t pair, uint64_t nowNs, uint64_t* waitNs) {
  Queue& q = queues_[2 * pair + 1];
  Pair& p = pairs_[pair];
  if (q.broken) return 0;
  uint64_t work = 0;
  uint32_t id, len;
  bool bad;
  for (;;) {
    auto r = q.ring.PopUsed(&id, &len, &bad);
    if (r == SplitRing::Pop::kNone) break;
    if (r == SplitRing::Pop::kBroken) {
      q.broken = true;
      p.st.ringErrors++;
      return work;
    }
    if (bad) p.st.ringErrors++;
    work++;
  }
  if (!p.txActive) return work;

  uint64_t budget = kTxBatch;
  if (p.tx.count) budget = std::min(budget, p.tx.count - p.txSent);
  if (p.tx.ratePps > 0) {
    double cap = std::max(1.0, p.tx.ratePps * 0.002);
    p.tokens = std::min(cap, p.tokens + double(nowNs - p.lastRefillNs) * p.tx.ratePps / 1e9);
    p.lastRefillNs = nowNs;
    budget = std::min<uint64_t>(budget, uint64_t(p.tokens));
    if (budget == 0) {
      *waitNs = std::min(*waitNs, uint64_t((1.0 - p.tokens) * 1e9 / p.tx.ratePps) + 1);
      return work;
    }
  }
  uint64_t& seq = p.nextSeq[p.tx.streamId];
  uint64_t sent = 0;
  const uint32_t frameLen = p.tx.frameSize;
  const uint64_t txNs = NowNs();  // one stamp per burst: the frames are published together
  while (sent < budget) {
    if (!q.ring.HasFree()) {
      p.st.txRingFull++;
      break;
    }
    uint16_t d = q.ring.AllocDesc();
    uint64_t off = q.bufOff + uint64_t(d) * q.bufSize;
    uint8_t* buf = mem_ + off;
    std::memset(buf, 0, hdrLen_);
    BuildTestFrame(buf + hdrLen_, frameLen, p.tx.dst, p.tx.src, p.tx.streamId, seq, txNs);
    VringDesc* desc = q.ring.Desc(d);
    desc->addr = memAddr() + off;
    desc->len = hdrLen_ + frameLen;
    desc->flags = 0;
    desc->next = 0;
    q.ring.Push(d);
    seq++;
    sent++;
  }
  if (sent) {
    if (q.ring.PublishAndCheckKick()) Kick(q.kickFd);
    p.st.txPackets += sent;
    p.st.txBytes += sent * frameLen;
    p.txSent += sent;
    if (p.tx.ratePps > 0) p.tokens -= double(sent);
    if (p.tx.count && p.txSent >= p.tx.count) p.txActive = false;
  }
  return work + sent;
}

uint64_t DriverDevice::RxPass(uint32_t pair, uint64_t nowNs) {
  Queue& q = queues_[2 * pair];
  Pair& p = pairs_[pair];
  if (!p.rxActive || q.broken) return 0;
  uint64_t work = 0;
  uint32_t id, len;
  bool bad;
  if (q.ring.DeviceHoldsNone()) p.st.rxRingEmptied++;
  for (uint32_t n = 0; n < kRxBatch; n++) {
    auto r = q.ring.PopUsed(&id, &len, &bad);
    if (r == SplitRing::Pop::kNone) break;
    if (n == 0) nowNs = NowNs();  // the burst's arrival time, for latency samples
    if (r == SplitRing::Pop::kBroken) {
      q.broken = true;
      p.st.ringErrors++;
      return work;
    }
    work++;
    if (bad) {
      p.st.ringErrors++;
      continue;
    }
    RxBuffer(p, 2 * pair, uint16_t(id), len, nowNs);
  }
  PostRxBuffers(2 * pair);
  return work;
}

void DriverDevice::PostRxBuffers(uint32_t queue) {
  Queue& q = queues_[queue];
  while (q.ring.HasFree()) {
    uint16_t d = q.ring.AllocDesc();
    VringDesc* desc = q.ring.Desc(d);
    desc->addr = memAddr() + q.bufOff + uint64_t(d) * q.bufSize;
    desc->len = q.bufSize;
    desc->flags = VRING_DESC_F_WRITE;
    desc->next = 0;
    q.ring.Push(d);
  }
  if (q.ring.HasUnpublished() && q.ring.PublishAndCheckKick()) Kick(q.kickFd);
}

void DriverDevice::RxBuffer(Pair& p, uint32_t queue, uint16_t id, uint32_t len, uint64_t nowNs) {
  Queue& q = queues_[queue];
  const uint8_t* b = mem_ + q.bufOff + uint64_t(id) * q.bufSize;
  if (len > q.bufSize) {
    p.st.ringErrors++;
    len = q.bufSize;
  }
  auto append = [&p](const uint8_t* data, size_t n) {
    size_t room = p.asmBuf.size() - p.asmLen;
    if (n > room) {
      p.asmOverflow = true;
      n = room;
    }
    std::memcpy(p.asmBuf.data() + p.asmLen, data, n);
    p.asmLen += n;
  };
  if (p.asmRemaining) {  // continuation buffer of a MRG_RXBUF frame: no header of its own
    append(b, len);
    if (--p.asmRemaining == 0) {
      if (p.asmOverflow) p.st.ringErrors++;
      DeliverFrame(p, p.asmBuf.data(), p.asmLen, nowNs);
    }
    return;
  }
  if (len < hdrLen_) {
    p.st.ringErrors++;
    return;
  }
  uint32_t num = 1;
  if (mrgRxbuf_) {
    uint16_t nb;
    std::memcpy(&nb, b + 10, 2);
    num = nb;
    if (num == 0 || num > queueSize_) {
      p.st.ringErrors++;
      num = 1;
    }
  }
  if (num == 1) {
    DeliverFrame(p, b + hdrLen_, len - hdrLen_, nowNs);
    return;
  }
  p.asmLen = 0;
  p.asmOverflow = false;
  append(b + hdrLen_, len - hdrLen_);
  p.asmRemaining = num - 1;
}

void DriverDevice::DeliverFrame(Pair& p, const uint8_t* f, size_t len, uint64_t nowNs) {
  DriverStatsC& st = p.st;
  st.rxPackets++;
  st.rxBytes += len;
  FrameInfo info;
  FrameVerdict v = CheckTestFrame(f, len, &info);
  if (v == FrameVerdict::kForeign) {
    st.rxForeign++;
    return;
  }
  if (p.lastRxNs && nowNs > p.lastRxNs) st.rxMaxGapUs = std::max(st.rxMaxGapUs, (nowNs - p.lastRxNs) / 1000);
  p.lastRxNs = nowNs;
  if (v == FrameVerdict::kCorrupt) {
    st.rxCorrupted++;
    return;
  }
  if (info.txNs && nowNs >= info.txNs) {
    uint64_t ns = nowNs - info.txNs;
    if (p.latHist.empty()) p.latHist.assign(kLatBuckets, 0);
    if (ns / 1000 < kLatBuckets) p.latHist[ns / 1000]++;
    else p.latOver++;
    p.latMaxNs = std::max(p.latMaxNs, ns);
    p.latCount++;
  }
  StreamRx& s = p.streams[info.streamId];
  uint64_t seq = info.seq;
  if (seq == s.expected) {
    ClearBit(s.lostBits, seq);
    s.expected = seq + 1;
  } else if (seq > s.expected) {
    uint64_t gap = seq - s.expected;
    st.rxLost += gap;
    if (gap >= kWindow) {
      std::fill(std::begin(s.lostBits), std::end(s.lostBits), ~0ull);
    } else {
      for (uint64_t x = s.expected; x < seq; x++) SetBit(s.lostBits, x);
    }
    ClearBit(s.lostBits, seq);
    s.expected = seq + 1;
  } else if (s.expected - seq <= kWindow && TestBit(s.lostBits, seq)) {
    ClearBit(s.lostBits, seq);
    st.rxLost--;
    st.rxReordered++;
  } else {
    st.rxDuplicated++;
  }
}

}  // namespace vhd::drv
