// virtio-blk request handling (see blk_device.h).
#include "blk_device.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cinttypes>
#include <new>

#ifndef RWF_DSYNC
#define RWF_DSYNC 0x00000002
#endif

namespace vhd {

BlkDevice::~BlkDevice() {
  for (BlkSlot*& s : slots) {
    blkFreeSlots(s);
    s = nullptr;
  }
  for (BlkSlot* s : retiredSlots) blkFreeSlots(s);
  if (directFd >= 0) ::close(directFd);
  if (fd >= 0) ::close(fd);
}

std::string blkOpen(BlkDevice& b, const BlkParams& p) {
  b.numQueues = p.numQueues;
  b.readonly = p.readonly;
  memcpy(b.serial, p.serial, sizeof b.serial);
  if (p.fd < 0) {
    b.null = true;
    b.capacity = p.nullBytes / kBlkSectorSize;
  } else {
    b.fd = fcntl(p.fd, F_DUPFD_CLOEXEC, 3);
    if (b.fd < 0) return std::string("dup of the backing fd: ") + strerror(errno);
    struct stat st {};
    if (fstat(b.fd, &st) != 0) return std::string("fstat of the backing: ") + strerror(errno);
    if (S_ISREG(st.st_mode)) {
      b.capacity = (uint64_t)st.st_size / kBlkSectorSize;
      if (st.st_blksize >= 512 && st.st_blksize <= 65536) b.physicalBlock = (uint32_t)st.st_blksize;
    } else if (S_ISBLK(st.st_mode)) {
      uint64_t bytes = 0;
      int lbs = 512;
      unsigned int pbs = 4096;
      if (ioctl(b.fd, BLKGETSIZE64, &bytes) != 0) return std::string("BLKGETSIZE64: ") + strerror(errno);
      if (ioctl(b.fd, BLKSSZGET, &lbs) == 0 && lbs >= 512 && lbs <= 4096) b.logicalBlock = (uint32_t)lbs;
      if (ioctl(b.fd, BLKPBSZGET, &pbs) == 0 && pbs >= 512 && pbs <= 65536) b.physicalBlock = pbs;
      b.capacity = bytes / kBlkSectorSize;
    } else {
      return "the backing is neither a regular file nor a block device";
    }
    if (p.direct) {
      char path[64];
      snprintf(path, sizeof path, "/proc/self/fd/%d", b.fd);
      int fl = fcntl(b.fd, F_GETFL);
      int acc = fl >= 0 ? (fl & O_ACCMODE) : (p.readonly ? O_RDONLY : O_RDWR);
      b.directFd = open(path, acc | O_DIRECT | O_CLOEXEC);
      if (b.directFd < 0) return std::string("O_DIRECT open of the backing: ") + strerror(errno);
    }
  }
  if (b.physicalBlock < b.logicalBlock) b.physicalBlock = b.logicalBlock;
  unsigned entries = 1;
  while (entries < (unsigned)p.numQueues * kBlkMaxSlots) entries <<= 1;
  return b.io.init(entries);
}

BlkSlot* blkAllocSlots(uint32_t ringSize, uint32_t* mask) {
  uint32_t n = ringSize < kBlkMaxSlots ? ringSize : kBlkMaxSlots;
  BlkSlot* s = new (std::nothrow) BlkSlot[n];
  if (!s) return nullptr;
  memset(static_cast<void*>(s), 0, sizeof(BlkSlot) * n);
  *mask = n - 1;
  return s;
}

void blkFreeSlots(BlkSlot* s) { delete[] s; }

uint32_t blkInflight(const Device& d, int q) noexcept {
  const Virtqueue& v = d.vq[q];
  if (!d.blk->slots[q] || !v.used) return 0;
  return (uint16_t)(v.lastAvail - v.usedIdx);
}

// An operation's user data: slot index, queue and the generation of the queue's slot array
// (an operation of an abandoned array comes back with an old generation).
constexpr uint64_t kCancelUser = ~0ull;  // our IORING_OP_ASYNC_CANCEL requests
constexpr uint32_t kGenMask = 0xffffff;
static inline uint64_t userData(const BlkDevice& b, int q, uint32_t slot) {
  return ((uint64_t)(b.slotGen[q] & kGenMask) << 40) | ((uint64_t)q << 32) | slot;
}

// ------------------------------------------------------------------------ completion

// Publishes the done requests at the head of queue q's window, in avail order.
static int completeInOrder(Device& d, int q) noexcept {
  Virtqueue& v = d.vq[q];
  BlkDevice& b = *d.blk;
  BlkSlot* sl = b.slots[q];
  if (!sl || !v.used) return 0;
  int n = 0;
  uint64_t bytes = 0;
  const uint16_t firstUsed = v.usedIdx;
  while (v.usedIdx != v.lastAvail) {
    BlkSlot& s = sl[v.usedIdx & b.slotMask[q]];
    if (s.state != SlotState::kDone) break;
    *s.statusPtr = s.status;  // checked to lie in guest memory when the request was taken
    if (__builtin_expect(d.log.active(), 0)) d.log.markHost(*d.mem, s.statusPtr, 1);
    v.pushUsed(s.head, s.usedLen);
    if (s.status == VIRTIO_BLK_S_OK) bytes += s.bytes;
    s.state = SlotState::kFree;
    n++;
  }
  if (n) {
    v.publishUsed();
    // Published: these are no longer in flight for a successor (clear after the used entries,
    // then the area's used_idx, so a crash in between leaves marks that used->idx explains).
    for (uint16_t i = firstUsed; i != v.usedIdx; i++) inflightDone(b.inflight, q, sl[i & b.slotMask[q]].head);
    inflightPublished(b.inflight, q, v.usedIdx);
    v.ctr->add(kPackets, (uint64_t)n);
    v.ctr->add(kBytes, bytes);
    v.signalIfNeeded();
  }
  return n;
}

// Queues the slot's (remaining) operation on the io_uring; false when it cannot be queued.
static bool queueOp(BlkDevice& b, int q, uint32_t idx, BlkSlot& s) noexcept {
  uint64_t user = userData(b, q, idx);
  switch (s.op) {
    case BlkOp::kRead:
      return b.io.readv(s.useDirect ? b.directFd : b.fd, s.iov + s.iovFirst, s.iovEnd - s.iovFirst, s.off, user);
    case BlkOp::kWrite:
      return b.io.writev(s.useDirect ? b.directFd : b.fd, s.iov + s.iovFirst, s.iovEnd - s.iovFirst, s.off,
                         b.writeback ? 0 : RWF_DSYNC, user);
    case BlkOp::kFlush:
      return b.io.fdatasync(b.fd, user);
    case BlkOp::kFallocate:
      return b.io.fallocate(b.fd, s.mode, s.off, s.left, user);
    default:
      return false;
  }
}

static void ioFailed(Device& d, int q, BlkSlot& s, int err, WorkerCtx& ctx) noexcept {
  s.status = VIRTIO_BLK_S_IOERR;
  d.vq[q].ctr->add(kDrops, 1);
  snprintf(ctx.reason, sizeof ctx.reason, "backing I/O failed at byte %" PRIu64 ": %s", s.off, strerror(err));
  chainError(d, q, ctx);
}

// One completion from the io_uring.
static void onCompletion(Device& d, uint64_t user, int res, WorkerCtx& ctx, uint32_t* touched) noexcept {
  BlkDevice& b = *d.blk;
  if (user == kCancelUser) return;
  int q = (int)((user >> 32) & 0xff);
  uint32_t idx = (uint32_t)user;
  if (q >= kMaxQueues) return;  // cannot happen: we wrote it
  if ((uint32_t)(user >> 40) != (b.slotGen[q] & kGenMask)) {
    // An abandoned request's operation came back (done or cancelled): its memory is free now.
    if (b.abandonedOps[q]) {
      b.abandonedOps[q]--;
      b.abandonedTotal--;
    }
    return;
  }
  if (!b.slots[q] || idx > b.slotMask[q]) return;  // cannot happen: we wrote it
  BlkSlot& s = b.slots[q][idx];
  if (s.state != SlotState::kInflight) return;
  *touched |= 1u << q;
  if (s.op == BlkOp::kRead || s.op == BlkOp::kWrite) {
    if (res == -EINTR || res == -EAGAIN) {
      if (queueOp(b, q, idx, s)) return;
      res = -EAGAIN;
    }
    if (res == -EINVAL && s.useDirect) {
      // O_DIRECT refuses this request's alignment: do it through the page cache instead.
      s.useDirect = false;
      if (queueOp(b, q, idx, s)) return;
    }
    if (res > 0 && s.op == BlkOp::kRead && __builtin_expect(d.log.active(), 0)) {
      // The kernel wrote `res` bytes into guest memory from iov[iovFirst]: log them now.
      uint64_t n = (uint64_t)res;
      for (int i = s.iovFirst; i < s.iovEnd && n > 0; i++) {
        uint64_t c = s.iov[i].iov_len < n ? s.iov[i].iov_len : n;
        d.log.markHost(*d.mem, s.iov[i].iov_base, c);
        n -= c;
      }
    }
    if (res < 0) {
      ioFailed(d, q, s, -res, ctx);
    } else if (res == 0 && s.left > 0) {
      ioFailed(d, q, s, EIO, ctx);  // end of file inside the capacity: the backing shrank
    } else if ((uint64_t)res < s.left) {
      // Short transfer: go on with the rest.
      uint64_t n = (uint64_t)res;
      s.left -= n;
      s.off += n;
      while (n > 0 && s.iovFirst < s.iovEnd) {
        struct iovec& v = s.iov[s.iovFirst];
        if (n >= v.iov_len) {
          n -= v.iov_len;
          s.iovFirst++;
        } else {
          v.iov_base = static_cast<uint8_t*>(v.iov_base) + n;
          v.iov_len -= n;
          n = 0;
        }
      }
      if (queueOp(b, q, idx, s)) return;
      ioFailed(d, q, s, EAGAIN, ctx);
    }
  } else if (res < 0) {
    if (res == -EOPNOTSUPP && s.hint) {
      // a discard is a hint: a backing that cannot deallocate still succeeds
    } else {
      ioFailed(d, q, s, -res, ctx);
    }
  }
  s.state = SlotState::kDone;
}

static int reapAll(Device& d, WorkerCtx& ctx) noexcept {
  uint32_t touched = 0;
  int n = d.blk->io.reap([&](uint64_t user, int res) { onCompletion(d, user, res, ctx, &touched); });
  for (int q = 0; touched; q++, touched >>= 1)
    if (touched & 1) completeInOrder(d, q);
  return n;
}

// ------------------------------------------------------------------------ requests


// Copies len bytes from the iov list [first, end) starting `skip` bytes in.
static bool gatherIov(const struct iovec* iov, int first, int end, uint64_t skip, uint8_t* dst, uint64_t len) noexcept {
  for (int i = first; i < end && len; i++) {
    uint64_t l = iov[i].iov_len;
    if (skip >= l) { skip -= l; continue; }
    uint64_t c = l - skip < len ? l - skip : len;
    memcpy(dst, static_cast<uint8_t*>(iov[i].iov_base) + skip, c);
    dst += c;
    len -= c;
    skip = 0;
  }
  return len == 0;
}

// Drops `n` bytes from the front of iov[*first, end).
static void trimFront(struct iovec* iov, int* first, int end, uint64_t n) noexcept {
  while (n > 0 && *first < end) {
    struct iovec& v = iov[*first];
    if (n >= v.iov_len) {
      n -= v.iov_len;
      (*first)++;
    } else {
      v.iov_base = static_cast<uint8_t*>(v.iov_base) + n;
      v.iov_len -= n;
      n = 0;
    }
  }
}

static bool inRange(const BlkDevice& b, uint64_t sector, uint64_t sectors) noexcept {
  return sector <= b.capacity && sectors <= b.capacity - sector;
}

// A request that completes without I/O. `reject`: a bad request (counted, reported).
static void finish(Device& d, int q, BlkSlot& s, uint8_t status, WorkerCtx& ctx, const char* reject) noexcept {
  s.status = status;
  s.state = SlotState::kDone;
  if (reject) {
    d.vq[q].ctr->add(kErrors, 1);
    snprintf(ctx.reason, sizeof ctx.reason, "request (head %u) failed with %s: %s", s.head,
             status == VIRTIO_BLK_S_UNSUPP ? "UNSUPP" : "IOERR", reject);
    chainError(d, q, ctx);
  }
}

// Walks and validates the chain at `head` into slot s. Returns false when the request has no
// status byte the device may write (the queue is then broken: ctx.reason says why); otherwise
// s is either done (rejected or completed at once) or ready for queueOp().
static bool takeRequest(Device& d, int q, uint16_t head, BlkSlot& s, WorkerCtx& ctx) noexcept {
  Virtqueue& v = d.vq[q];
  BlkDevice& b = *d.blk;
  const MemTable& mem = *d.mem;
  s.head = head;
  s.op = BlkOp::kNone;
  s.status = VIRTIO_BLK_S_OK;
  s.hint = false;
  s.usedLen = 1;
  s.bytes = 0;
  s.useDirect = false;
  const volatile VringDesc* table = v.desc;
  uint32_t tableSize = v.size;
  bool inIndirect = false;
  uint16_t idx = head;
  int nIov = 0, firstW = -1;
  uint64_t rlen = 0, wlen = 0;
  uint32_t ndesc = 0;
  bool firstIsW = false, haveW = false;
  uint64_t lastWAddr = 0;
  uint32_t lastWLen = 0;
  const char* bad = nullptr;
  // Every step costs the worker (and every device it serves) time, so the walk is bounded by
  // what a valid request can be, not by what the tables could hold: header + SEG_MAX data
  // descriptors + status (the indirect descriptor itself aside). Longer is a loop or a driver
  // that ignores SEG_MAX: the queue breaks. Once a descriptor made the request bad nothing
  // more is translated or checked; the rest of the walk (within the same bound) only looks
  // for the status byte, so that the request can still be answered with IOERR.
  for (;;) {
    if (idx >= tableSize) {
      snprintf(ctx.reason, sizeof ctx.reason, "%sdesc %u: next index beyond table of %u", inIndirect ? "indirect " : "", idx, tableSize);
      return false;
    }
    VringDesc dsc = readDesc(&table[idx]);
    if (dsc.flags & VRING_DESC_F_INDIRECT) {
      const char* why = nullptr;
      if (inIndirect) why = "INDIRECT inside an indirect table";
      else if (!v.indirectOk) why = "INDIRECT not negotiated";
      else if (dsc.flags & VRING_DESC_F_NEXT) why = "INDIRECT together with NEXT";
      else if (dsc.len == 0 || (dsc.len & 15)) why = "indirect table length is not a non-zero multiple of 16";
      uint8_t* t = why ? nullptr : mem.gpaToHost(dsc.addr, dsc.len);
      if (!why && !t) why = "indirect table outside guest memory";
      if (why) {
        snprintf(ctx.reason, sizeof ctx.reason, "desc %u: %s", idx, why);
        return false;
      }
      table = reinterpret_cast<const volatile VringDesc*>(t);
      // A 16-bit next reaches 65536 entries at most; the chain bound below stops far earlier.
      tableSize = dsc.len / 16 < 65536u ? dsc.len / 16 : 65536u;
      inIndirect = true;
      idx = 0;
      continue;
    }
    if (++ndesc > kBlkMaxChain) {
      snprintf(ctx.reason, sizeof ctx.reason, "request (head %u): chain longer than %u descriptors (SEG_MAX %u + header + status; a loop?)",
               head, kBlkMaxChain, kBlkSegMax);
      return false;
    }
    bool w = (dsc.flags & VRING_DESC_F_WRITE) != 0;
    if (w) {
      haveW = true;
      lastWAddr = dsc.addr;
      lastWLen = dsc.len;
    }
    if (!bad) {
      if (ndesc == 1 && w) firstIsW = true;
      if (dsc.len == 0) bad = "zero-length descriptor";
      else if (!w && haveW) bad = "device-readable descriptor after a device-writable one";
      else if (dsc.len > kBlkSizeMax + 16) bad = "descriptor larger than SIZE_MAX";
      else {
        int got = mem.gpaToIov(dsc.addr, dsc.len, s.iov + nIov, kBlkMaxIov - nIov);
        if (got == -1) bad = "buffer outside guest memory";
        else if (got == -2) bad = "more memory segments than the device takes";
        else {
          if (w && firstW < 0) firstW = nIov;
          nIov += got;
          if (w) wlen += dsc.len;
          else rlen += dsc.len;
        }
      }
    }
    if (!(dsc.flags & VRING_DESC_F_NEXT)) break;
    idx = dsc.next;
  }
  if (!haveW || lastWLen == 0) {
    snprintf(ctx.reason, sizeof ctx.reason, "request (head %u) has no device-writable status byte", head);
    return false;
  }
  s.statusPtr = mem.gpaToHost(lastWAddr + lastWLen - 1, 1);
  if (!s.statusPtr || lastWAddr + lastWLen < lastWAddr) {
    snprintf(ctx.reason, sizeof ctx.reason, "request (head %u): status byte at 0x%" PRIx64 " is outside guest memory", head,
             lastWAddr + lastWLen - 1);
    s.statusPtr = nullptr;
    return false;
  }
  if (bad) return finish(d, q, s, VIRTIO_BLK_S_IOERR, ctx, bad), true;
  if (firstIsW || rlen < 16) return finish(d, q, s, VIRTIO_BLK_S_IOERR, ctx, "header is not the first 16 device-readable bytes"), true;

  struct {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
  } hdr;
  int rEnd = firstW < 0 ? nIov : firstW;
  gatherIov(s.iov, 0, rEnd, 0, reinterpret_cast<uint8_t*>(&hdr), 16);
  int rFirst = 0;
  trimFront(s.iov, &rFirst, rEnd, 16);
  uint64_t outLen = rlen - 16;  // device-readable data after the header
  // The status byte is the last writable byte: take it off the writable segments.
  uint64_t inLen = wlen - 1;
  int wEnd = nIov;
  if (wEnd > 0 && firstW >= 0) {
    s.iov[wEnd - 1].iov_len -= 1;
    if (s.iov[wEnd - 1].iov_len == 0) wEnd--;
  }
  int wFirst = firstW < 0 ? wEnd : firstW;

  switch (hdr.type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT: {
      bool in = hdr.type == VIRTIO_BLK_T_IN;
      uint64_t len = in ? inLen : outLen;
      if (!in && b.readonly) return finish(d, q, s, VIRTIO_BLK_S_IOERR, ctx, nullptr), true;  // RO: not hostile
      if (len == 0 || len % kBlkSectorSize) return finish(d, q, s, VIRTIO_BLK_S_IOERR, ctx, "data length is not a non-zero multiple of 512"), true;
      if (!inRange(b, hdr.sector, len / kBlkSectorSize)) return finish(d, q, s, VIRTIO_BLK_S_IOERR, ctx, "sectors beyond the capacity"), true;
      s.bytes = len;
      if (in) s.usedLen = (uint32_t)(len + 1);
      if (b.null) return finish(d, q, s, VIRTIO_BLK_S_OK, ctx, nullptr), true;
      s.op = in ? BlkOp::kRead : BlkOp::kWrite;
      s.off = hdr.sector * kBlkSectorSize;
      s.left = len;
      s.iovFirst = in ? wFirst : rFirst;
      s.iovEnd = in ? wEnd : rEnd;
      s.useDirect = b.directFd >= 0;
      return true;
    }
    case VIRTIO_BLK_T_FLUSH:
      if (b.null) return finish(d, q, s, VIRTIO_BLK_S_OK, ctx, nullptr), true;
      s.op = BlkOp::kFlush;
      s.off = 0;
      return true;
    case VIRTIO_BLK_T_GET_ID: {
      uint64_t n = inLen < (uint64_t)kBlkIdBytes ? inLen : (uint64_t)kBlkIdBytes;
      const uint8_t* src = reinterpret_cast<const uint8_t*>(b.serial);
      uint64_t done = 0;
      for (int i = wFirst; i < wEnd && done < n; i++) {
        uint64_t c = s.iov[i].iov_len < n - done ? s.iov[i].iov_len : n - done;
        memcpy(s.iov[i].iov_base, src + done, c);
        if (__builtin_expect(d.log.active(), 0)) d.log.markHost(*d.mem, s.iov[i].iov_base, c);
        done += c;
      }
      s.usedLen = (uint32_t)(done + 1);
      return finish(d, q, s, VIRTIO_BLK_S_OK, ctx, nullptr), true;
    }
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES: {
      bool discard = hdr.type == VIRTIO_BLK_T_DISCARD;
      // Only what the driver accepted exists (virtio 1.2 5.2.6.2: UNSUPP otherwise).
      if (!d.has(discard ? VIRTIO_BLK_F_DISCARD : VIRTIO_BLK_F_WRITE_ZEROES))
        return finish(d, q, s, VIRTIO_BLK_S_UNSUPP, ctx, discard ? "DISCARD without VIRTIO_BLK_F_DISCARD negotiated" : "WRITE_ZEROES without VIRTIO_BLK_F_WRITE_ZEROES negotiated"), true;
      if (b.readonly) return finish(d, q, s, VIRTIO_BLK_S_IOERR, ctx, nullptr), true;
      if (outLen == 0 || outLen % 16 || outLen / 16 > kBlkMaxDiscardSeg)
        return finish(d, q, s, VIRTIO_BLK_S_IOERR, ctx, "discard/write-zeroes ranges: not 1..max_seg 16-byte segments"), true;
      struct {
        uint64_t sector;
        uint32_t num;
        uint32_t flags;
      } seg;
      gatherIov(s.iov, rFirst, rEnd, 0, reinterpret_cast<uint8_t*>(&seg), 16);
      uint32_t allowed = discard ? 0 : VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
      if (seg.flags & ~allowed) return finish(d, q, s, VIRTIO_BLK_S_UNSUPP, ctx, "unknown discard/write-zeroes flags"), true;
      if (seg.num > kBlkMaxDiscardSectors) return finish(d, q, s, VIRTIO_BLK_S_IOERR, ctx, "discard/write-zeroes larger than the maximum"), true;
      if (!inRange(b, seg.sector, seg.num)) return finish(d, q, s, VIRTIO_BLK_S_IOERR, ctx, "sectors beyond the capacity"), true;
      if (seg.num == 0 || b.null) return finish(d, q, s, VIRTIO_BLK_S_OK, ctx, nullptr), true;
      s.op = BlkOp::kFallocate;
      s.off = seg.sector * kBlkSectorSize;
      s.left = (uint64_t)seg.num * kBlkSectorSize;
      bool unmap = discard || (seg.flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
      s.mode = unmap ? (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) : (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE);
      s.hint = discard;  // a discard the backing cannot do is still a success; write-zeroes is not
      return true;
    }
    default:
      return finish(d, q, s, VIRTIO_BLK_S_UNSUPP, ctx, "unknown request type"), true;
  }
}

static inline bool active(const Virtqueue& v) { return v.running && v.enabled && !v.broken; }

static int takeRequests(Device& d, int q, WorkerCtx& ctx) noexcept {
  Virtqueue& v = d.vq[q];
  BlkDevice& b = *d.blk;
  BlkSlot* sl = b.slots[q];
  if (!sl) return 0;
  int pend = v.pending();
  if (pend < 0) {
    snprintf(ctx.reason, sizeof ctx.reason, "avail idx %u is more than %u ahead of %u", v.availIdx(), v.size, v.lastAvail);
    queueBroken(d, q, ctx);
    return 0;
  }
  uint32_t room = b.slotMask[q] + 1 - (uint16_t)(v.lastAvail - v.usedIdx);
  uint32_t n = (uint32_t)pend < room ? (uint32_t)pend : room;
  if (n > (uint32_t)kBurst) n = kBurst;
  if (n == 0) return 0;
  __atomic_thread_fence(__ATOMIC_ACQUIRE);  // ring entries after avail->idx
  int taken = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint16_t head;
    if (v.headAt(v.lastAvail, &head, ctx.reason, sizeof ctx.reason) != Pop::kOk) {
      queueBroken(d, q, ctx);
      break;
    }
    uint32_t idx = v.lastAvail & b.slotMask[q];
    BlkSlot& s = sl[idx];
    if (!takeRequest(d, q, head, s, ctx)) {
      queueBroken(d, q, ctx);
      break;
    }
    inflightTake(b.inflight, q, head);
    v.lastAvail++;
    taken++;
    if (s.state == SlotState::kDone) continue;
    s.state = SlotState::kInflight;
    if (!queueOp(b, q, idx, s)) {
      ioFailed(d, q, s, EAGAIN, ctx);  // cannot happen: the ring has a slot for every request
      s.state = SlotState::kDone;
    }
  }
  if (b.io.queued()) b.io.submit();
  completeInOrder(d, q);
  return taken;
}

// Whether queue q may take new requests now (see BlkDevice: abandoned operations, drains).
static inline bool mayTake(const BlkDevice& b, int q) { return b.abandonedOps[q] == 0 && !b.hold[q]; }

int blkPoll(Device& d, WorkerCtx& ctx) noexcept {
  BlkDevice& b = *d.blk;
  int work = 0;
  if (b.io.queued()) b.io.submit();  // left over after EAGAIN
  if (b.io.hasCompletions()) work += reapAll(d, ctx);
  if (b.abandonedTotal == 0 && (!b.retiredSlots.empty() || !b.retiredMem.empty())) {
    // Every abandoned operation is back: nothing points into these any more.
    for (BlkSlot* s : b.retiredSlots) blkFreeSlots(s);
    b.retiredSlots.clear();
    b.retiredMem.clear();
  }
  for (int q = 0; q < b.numQueues; q++)
    if (active(d.vq[q]) && mayTake(b, q)) work += takeRequests(d, q, ctx);
  return work;
}

bool blkBusy(Device& d) noexcept { return d.blk->io.hasCompletions() || d.blk->io.queued() > 0; }

bool blkTakes(const Device& d, int q) noexcept { return mayTake(*d.blk, q); }

uint32_t blkDrainStep(Device& d, int q, WorkerCtx& ctx) noexcept {
  BlkDevice& b = *d.blk;
  const int first = q < 0 ? 0 : q, end = q < 0 ? b.numQueues : q + 1;
  for (int i = first; i < end; i++) b.hold[i] = true;
  if (b.io.queued()) b.io.submit();
  reapAll(d, ctx);
  uint32_t n = 0;
  for (int i = first; i < end; i++) {
    completeInOrder(d, i);
    n += blkInflight(d, i);
  }
  return n;
}

uint32_t blkAbandon(Device& d, int q) noexcept {
  BlkDevice& b = *d.blk;
  const int first = q < 0 ? 0 : q, end = q < 0 ? b.numQueues : q + 1;
  uint32_t abandoned = 0;
  for (int i = first; i < end; i++) {
    b.hold[i] = false;
    Virtqueue& v = d.vq[i];
    BlkSlot* sl = b.slots[i];
    uint32_t window = blkInflight(d, i);
    if (!sl || window == 0) continue;
    uint32_t ops = 0;
    for (uint16_t p = v.usedIdx; p != v.lastAvail; p++) {
      uint32_t idx = p & b.slotMask[i];
      if (sl[idx].state != SlotState::kInflight) continue;  // done, waiting for an earlier one
      ops++;
      b.io.cancel(userData(b, i, idx), kCancelUser);  // best effort: the completion counts either way
    }
    b.abandonedOps[i] += ops;
    b.abandonedTotal += ops;
    b.retiredSlots.push_back(sl);
    b.slots[i] = nullptr;
    b.slotGen[i]++;
    abandoned += window;
    v.lastAvail = v.usedIdx;  // taken again from here once the kernel gave the old ones back
  }
  if (b.io.queued()) b.io.submit();
  return abandoned;
}

bool blkQuiet(Device& d) noexcept {
  BlkDevice& b = *d.blk;
  if (b.io.queued()) b.io.submit();
  if (b.io.hasCompletions()) b.io.reap([&](uint64_t, int) {});
  return b.io.inFlight() == 0 && b.io.queued() == 0;
}

}  // namespace vhd
