// io_uring through raw syscalls (see blk_io.h).
#include "blk_io.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace vhd {

static int sysSetup(unsigned entries, struct io_uring_params* p) { return (int)syscall(__NR_io_uring_setup, entries, p); }
static int sysEnter(int fd, unsigned toSubmit, unsigned minComplete, unsigned flags) {
  return (int)syscall(__NR_io_uring_enter, fd, toSubmit, minComplete, flags, nullptr, 0);
}
static int sysRegister(int fd, unsigned op, const void* arg, unsigned n) { return (int)syscall(__NR_io_uring_register, fd, op, arg, n); }

IoRing::~IoRing() { close(); }

void IoRing::close() noexcept {
  if (sqes_) munmap(sqes_, sqesLen_);
  if (cqRing_ && cqRing_ != sqRing_) munmap(cqRing_, cqRingLen_);
  if (sqRing_) munmap(sqRing_, sqRingLen_);
  sqes_ = nullptr;
  cqRing_ = sqRing_ = nullptr;
  if (fd_ >= 0) ::close(fd_);  // the kernel cancels or finishes what is still in flight
  if (efd_ >= 0) ::close(efd_);
  fd_ = efd_ = -1;
}

std::string IoRing::init(unsigned entries) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_CQSIZE;
  p.cq_entries = entries * 2;
  fd_ = sysSetup(entries, &p);
  if (fd_ < 0) {
    std::string e = std::string("io_uring_setup: ") + strerror(errno);
    fd_ = -1;
    return e;
  }
  sqEntries_ = p.sq_entries;
  sqRingLen_ = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  cqRingLen_ = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  bool single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
  if (single && cqRingLen_ > sqRingLen_) sqRingLen_ = cqRingLen_;
  sqRing_ = mmap(nullptr, sqRingLen_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_SQ_RING);
  if (sqRing_ == MAP_FAILED) { sqRing_ = nullptr; std::string e = std::string("io_uring mmap: ") + strerror(errno); close(); return e; }
  if (single) {
    cqRing_ = sqRing_;
  } else {
    cqRing_ = mmap(nullptr, cqRingLen_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_CQ_RING);
    if (cqRing_ == MAP_FAILED) { cqRing_ = nullptr; std::string e = std::string("io_uring mmap: ") + strerror(errno); close(); return e; }
  }
  sqesLen_ = p.sq_entries * sizeof(struct io_uring_sqe);
  void* s = mmap(nullptr, sqesLen_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_SQES);
  if (s == MAP_FAILED) { std::string e = std::string("io_uring mmap: ") + strerror(errno); close(); return e; }
  sqes_ = static_cast<struct io_uring_sqe*>(s);
  uint8_t* sq = static_cast<uint8_t*>(sqRing_);
  uint8_t* cq = static_cast<uint8_t*>(cqRing_);
  sqHead_ = reinterpret_cast<unsigned*>(sq + p.sq_off.head);
  sqTail_ = reinterpret_cast<unsigned*>(sq + p.sq_off.tail);
  sqMask_ = reinterpret_cast<unsigned*>(sq + p.sq_off.ring_mask);
  sqArray_ = reinterpret_cast<unsigned*>(sq + p.sq_off.array);
  cqHead_ = reinterpret_cast<unsigned*>(cq + p.cq_off.head);
  cqTail_ = reinterpret_cast<unsigned*>(cq + p.cq_off.tail);
  cqMask_ = reinterpret_cast<unsigned*>(cq + p.cq_off.ring_mask);
  cqes_ = reinterpret_cast<struct io_uring_cqe*>(cq + p.cq_off.cqes);
  localTail_ = *sqTail_;
  efd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd_ < 0 || sysRegister(fd_, IORING_REGISTER_EVENTFD, &efd_, 1) < 0) {
    std::string e = std::string("io_uring eventfd: ") + strerror(errno);
    close();
    return e;
  }
  return "";
}

struct io_uring_sqe* IoRing::nextSqe() noexcept {
  unsigned head = __atomic_load_n(sqHead_, __ATOMIC_ACQUIRE);
  if (localTail_ - head >= sqEntries_) return nullptr;
  unsigned idx = localTail_ & *sqMask_;
  struct io_uring_sqe* e = &sqes_[idx];
  memset(e, 0, sizeof *e);
  sqArray_[idx] = idx;
  localTail_++;
  toSubmit_++;
  return e;
}

bool IoRing::readv(int fd, const struct iovec* iov, int n, uint64_t off, uint64_t user) noexcept {
  struct io_uring_sqe* e = nextSqe();
  if (!e) return false;
  e->opcode = IORING_OP_READV;
  e->fd = fd;
  e->addr = (uint64_t)(uintptr_t)iov;
  e->len = (unsigned)n;
  e->off = off;
  e->user_data = user;
  return true;
}

bool IoRing::writev(int fd, const struct iovec* iov, int n, uint64_t off, int rwFlags, uint64_t user) noexcept {
  struct io_uring_sqe* e = nextSqe();
  if (!e) return false;
  e->opcode = IORING_OP_WRITEV;
  e->fd = fd;
  e->addr = (uint64_t)(uintptr_t)iov;
  e->len = (unsigned)n;
  e->off = off;
  e->rw_flags = rwFlags;
  e->user_data = user;
  return true;
}

bool IoRing::fdatasync(int fd, uint64_t user) noexcept {
  struct io_uring_sqe* e = nextSqe();
  if (!e) return false;
  e->opcode = IORING_OP_FSYNC;
  e->fd = fd;
  e->fsync_flags = IORING_FSYNC_DATASYNC;
  e->user_data = user;
  return true;
}

bool IoRing::fallocate(int fd, int mode, uint64_t off, uint64_t len, uint64_t user) noexcept {
  struct io_uring_sqe* e = nextSqe();
  if (!e) return false;
  e->opcode = IORING_OP_FALLOCATE;
  e->fd = fd;
  e->off = off;
  e->addr = len;
  e->len = (unsigned)mode;
  e->user_data = user;
  return true;
}

bool IoRing::cancel(uint64_t target, uint64_t user) noexcept {
  struct io_uring_sqe* e = nextSqe();
  if (!e) return false;
  e->opcode = IORING_OP_ASYNC_CANCEL;
  e->fd = -1;
  e->addr = target;
  e->user_data = user;
  return true;
}

int IoRing::submit() noexcept {
  if (toSubmit_ == 0) return 0;
  __atomic_store_n(sqTail_, localTail_, __ATOMIC_RELEASE);
  int r = sysEnter(fd_, toSubmit_, 0, 0);
  if (r < 0) return -errno;
  toSubmit_ -= (unsigned)r <= toSubmit_ ? (unsigned)r : toSubmit_;
  inFlight_ += (unsigned)r;
  return r;
}

}  // namespace vhd
