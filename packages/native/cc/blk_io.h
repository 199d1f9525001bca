// Asynchronous block I/O for virtio-blk: one io_uring per blk device, driven by the device's
// owner worker through raw syscalls (liburing is not a dependency). The worker queues
// operations while it walks a burst of requests, submits them with one io_uring_enter, and
// reaps completions in its poll loop; the ring's eventfd sits in the worker's epoll set so a
// sleeping worker wakes when I/O completes. No thread is created and nothing is allocated per
// request: io_uring punts buffered I/O it cannot do inline to the kernel's own workers.
#pragma once
#include <linux/io_uring.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <string>

namespace vhd {

class IoRing {
 public:
  IoRing() = default;
  ~IoRing();
  IoRing(const IoRing&) = delete;
  IoRing& operator=(const IoRing&) = delete;

  // `entries` submission slots (rounded up to a power of two by the kernel; the completion
  // queue gets twice as many). "" or why io_uring cannot be used here.
  std::string init(unsigned entries);
  bool ready() const noexcept { return fd_ >= 0; }
  // Readable when completions were posted (registered with the ring).
  int eventFd() const noexcept { return efd_; }
  unsigned capacity() const noexcept { return sqEntries_; }

  // Queue one operation (submitted by submit()); false when the submission queue is full.
  bool readv(int fd, const struct iovec* iov, int n, uint64_t off, uint64_t user) noexcept;
  bool writev(int fd, const struct iovec* iov, int n, uint64_t off, int rwFlags, uint64_t user) noexcept;
  bool fdatasync(int fd, uint64_t user) noexcept;
  bool fallocate(int fd, int mode, uint64_t off, uint64_t len, uint64_t user) noexcept;
  // Asks the kernel to cancel the operation whose user data is `target` (its completion then
  // carries -ECANCELED, or its result if it was too far along); this request's own completion
  // carries `user`.
  bool cancel(uint64_t target, uint64_t user) noexcept;

  // Hands the queued operations to the kernel. Returns how many it took, or -errno (EAGAIN and
  // EBUSY mean "later": they stay queued).
  int submit() noexcept;
  unsigned queued() const noexcept { return toSubmit_; }
  // Operations the kernel took and has not completed (or we have not reaped) yet.
  unsigned inFlight() const noexcept { return inFlight_; }

  // Calls fn(user, res) for every posted completion; returns how many.
  template <typename F>
  int reap(F&& fn) noexcept {
    unsigned head = *cqHead_;
    int n = 0;
    for (;;) {
      unsigned tail = __atomic_load_n(cqTail_, __ATOMIC_ACQUIRE);
      if (head == tail) break;
      const struct io_uring_cqe& c = cqes_[head & *cqMask_];
      uint64_t user = c.user_data;
      int res = c.res;
      head++;
      __atomic_store_n(cqHead_, head, __ATOMIC_RELEASE);
      fn(user, res);
      n++;
    }
    inFlight_ -= (unsigned)n <= inFlight_ ? (unsigned)n : inFlight_;
    return n;
  }
  // Completions posted and not reaped yet.
  bool hasCompletions() const noexcept { return *cqHead_ != __atomic_load_n(cqTail_, __ATOMIC_ACQUIRE); }

 private:
  struct io_uring_sqe* nextSqe() noexcept;
  void close() noexcept;

  int fd_ = -1, efd_ = -1;
  unsigned sqEntries_ = 0;
  void* sqRing_ = nullptr;
  size_t sqRingLen_ = 0;
  void* cqRing_ = nullptr;  // == sqRing_ with IORING_FEAT_SINGLE_MMAP
  size_t cqRingLen_ = 0;
  struct io_uring_sqe* sqes_ = nullptr;
  size_t sqesLen_ = 0;
  unsigned *sqHead_ = nullptr, *sqTail_ = nullptr, *sqMask_ = nullptr, *sqArray_ = nullptr;
  unsigned *cqHead_ = nullptr, *cqTail_ = nullptr, *cqMask_ = nullptr;
  struct io_uring_cqe* cqes_ = nullptr;
  unsigned localTail_ = 0;  // our copy of the SQ tail (we are the only producer)
  unsigned toSubmit_ = 0;
  unsigned inFlight_ = 0;
};

}  // namespace vhd
