// TAP uplink I/O (see tap_port.h).
#include "tap_port.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

namespace vhd {

bool tapConfigure(int fd, std::string* err) {
  int sz = 12;
  if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) {
    *err = std::string("TUNSETVNETHDRSZ on tap fd failed: ") + strerror(errno);
    return false;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
    *err = std::string("O_NONBLOCK on tap fd failed: ") + strerror(errno);
    return false;
  }
  return true;
}

int tapRxBurst(TapPort& t, WorkerCtx& ctx) noexcept {
  ctx.n = 0;
  uint64_t bytes = 0;
  while (ctx.n < kBurst) {
    Pkt& p = ctx.pkts[ctx.n];
    p.data = ctx.bufs + (size_t)ctx.n * kFrameStride;
    struct iovec iov[2] = {{p.hdr, kNetHdrMax}, {p.data, kMaxFrame}};
    ssize_t r = readv(t.fd, iov, 2);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) t.rxErrors.fetch_add(1, std::memory_order_relaxed);
      break;
    }
    if (r == 0) break;
    if (r < kNetHdrMax + 14) { t.rxErrors.fetch_add(1, std::memory_order_relaxed); continue; }
    p.len = (uint32_t)(r - kNetHdrMax);
    p.hdr[10] = p.hdr[11] = 0;
    p.csumDone = false;
    bytes += p.len;
    ctx.n++;
  }
  if (ctx.n) {
    t.rxPackets.fetch_add((uint64_t)ctx.n, std::memory_order_relaxed);
    t.rxBytes.fetch_add(bytes, std::memory_order_relaxed);
  }
  return ctx.n;
}

uint64_t tapTxBurst(TapPort& t, WorkerCtx& ctx, uint32_t mask) noexcept {
  uint64_t sent = 0, bytes = 0, drops = 0;
  while (mask) {
    int i = __builtin_ctz(mask);
    mask &= mask - 1;
    Pkt& p = ctx.pkts[i];
    // The kernel completes NEEDS_CSUM and segments GSO itself: pass the header through,
    // but restore a checksum field we may have finalized for another destination.
    if (p.csumDone && (p.hdr[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM)) {
      uint16_t start, off;
      memcpy(&start, p.hdr + 6, 2);
      memcpy(&off, p.hdr + 8, 2);
      p.data[start + off] = (uint8_t)(p.csumOrig >> 8);
      p.data[start + off + 1] = (uint8_t)p.csumOrig;
      p.csumDone = false;
    }
    uint8_t hdr[kNetHdrMax];
    memcpy(hdr, p.hdr, kNetHdrMax);
    hdr[10] = hdr[11] = 0;
    struct iovec iov[2] = {{hdr, kNetHdrMax}, {p.data, p.len}};
    ssize_t r;
    do r = writev(t.fd, iov, 2); while (r < 0 && errno == EINTR);
    if (r < 0) { drops++; continue; }
    sent++;
    bytes += p.len;
  }
  if (sent) {
    t.txPackets.fetch_add(sent, std::memory_order_relaxed);
    t.txBytes.fetch_add(bytes, std::memory_order_relaxed);
  }
  if (drops) t.txDrops.fetch_add(drops, std::memory_order_relaxed);
  return drops;
}

int openTap(const std::string& name, std::string* err) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) { *err = std::string("open /dev/net/tun: ") + strerror(errno); return -1; }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    *err = std::string("TUNSETIFF ") + name + ": " + strerror(errno);
    close(fd);
    return -1;
  }
  // The daemon owns its uplink: bring the link up, as a switch would its port.
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock >= 0) {
    struct ifreq up;
    memset(&up, 0, sizeof up);
    strncpy(up.ifr_name, ifr.ifr_name, IFNAMSIZ - 1);
    bool ok = ioctl(sock, SIOCGIFFLAGS, &up) == 0;
    up.ifr_flags |= IFF_UP;
    ok = ok && ioctl(sock, SIOCSIFFLAGS, &up) == 0;
    int e = errno;
    close(sock);
    if (!ok) {
      *err = std::string("bringing ") + name + " up: " + strerror(e);
      close(fd);
      return -1;
    }
  }
  return fd;
}

}  // namespace vhd
