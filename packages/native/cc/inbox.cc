// The message inbox: a file shared by both daemons (<run-dir>/session-inbox, on tmpfs) with
// one slot per device id, into which a vhost-user message is received as it is taken off its
// connection. It answers the one question nobody else can after a SIGKILL: had the dead
// process consumed the message it announced to its standby, or is it still in the socket?
//
// The reader, in order: writes the slot's seq and length and zeroes the header bytes, then
// calls recvmsg() with the slot as its buffer. The kernel copies the message into the slot
// and dequeues it in the same call, and a SIGKILL takes effect only when the call returns, so
// once every thread of the dead process has stopped, "the slot's header holds a valid
// vhost-user header" is true exactly when the message left the socket. The header's flags
// always carry version 1 (the reader refuses others before it consumes), so they are never
// zero in a consumed message.
//
// The reader consumes through the slot only a message that one recvmsg() returns whole (a
// MSG_PEEK with the same length said so: the head of the queue only grows). A message read in
// pieces (not whole yet, or split by fds: no front-end we know writes that way) is announced
// with beginPiecewise() instead and read outside the slot, so an adopter that finds the slot
// so marked cannot know how far the dead reader got, and fails that session instead of
// guessing.
#include <napi.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <string>

#include "napi_util.h"
#include "recv_fds.h"

namespace {

using vhd::napi::ThrowErrno;
using vhd::napi::ThrowRange;

constexpr uint32_t kMagic = 0x786f6276;  // "vbox"
constexpr uint32_t kVersion = 1;
constexpr size_t kSlotBytes = 8192;
constexpr size_t kHeaderBytes = 12;  // vhost-user: request u32, flags u32, size u32
constexpr int kMaxDevices = 65536;
constexpr int kMaxFds = 253;

struct FileHeader {
  uint32_t magic;
  uint32_t version;
  uint32_t slotBytes;
  uint32_t maxDevices;
};

struct Slot {
  uint64_t seq;       // the message's sequence number on its VF (the reader's count)
  uint32_t len;       // its whole length (header + payload)
  uint32_t multipart; // 1: read in pieces outside the slot (beginPiecewise)
  uint8_t data[kSlotBytes - 16];
};
static_assert(sizeof(Slot) == kSlotBytes, "slot layout");
constexpr size_t kMaxMessage = sizeof(Slot::data);

class Inbox : public Napi::ObjectWrap<Inbox> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Inbox",
                       {InstanceMethod<&Inbox::Consume>("consume"), InstanceMethod<&Inbox::BeginPiecewise>("beginPiecewise"),
                        InstanceMethod<&Inbox::State>("state"), InstanceMethod<&Inbox::Clear>("clear"),
                        InstanceMethod<&Inbox::Close>("close"), StaticValue("MAX_MESSAGE", Napi::Number::New(env, kMaxMessage))});
  }

  explicit Inbox(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Inbox>(info) {
    Napi::Env env = info.Env();
    std::string path = vhd::napi::StringArg(info, 0, "Inbox: path");
    maxDevices_ = static_cast<int>(vhd::napi::IntArgAtLeast(info, 1, "Inbox: maxDevices", 1, kMaxDevices));
    bytes_ = kSlotBytes * (static_cast<size_t>(maxDevices_) + 1);  // slot 0 holds the file header
    vhd::napi::UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd.get() < 0) ThrowErrno(env, errno, "open", path);
    struct stat st;
    if (fstat(fd.get(), &st) != 0) ThrowErrno(env, errno, "fstat", path);
    // Another user's file, or a link, would let someone else read or forge our evidence.
    if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) != 0)
      vhd::napi::ThrowError(env, "Inbox: " + path + " is not a regular file of ours with mode 0600");
    if (static_cast<size_t>(st.st_size) < bytes_ && ftruncate(fd.get(), static_cast<off_t>(bytes_)) != 0)
      ThrowErrno(env, errno, "ftruncate", path);
    void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) ThrowErrno(env, errno, "mmap", path);
    base_ = static_cast<uint8_t*>(p);
    auto* h = reinterpret_cast<FileHeader*>(base_);
    if (h->magic == 0) {
      *h = FileHeader{kMagic, kVersion, static_cast<uint32_t>(kSlotBytes), static_cast<uint32_t>(maxDevices_)};
    } else if (h->magic != kMagic || h->version != kVersion || h->slotBytes != kSlotBytes) {
      munmap(base_, bytes_);
      base_ = nullptr;
      vhd::napi::ThrowError(env, "Inbox: " + path + " has another layout (magic, version or slot size)");
    }
  }

  ~Inbox() override { Unmap(); }

 private:
  Slot* SlotArg(const Napi::CallbackInfo& info, size_t i) {
    if (!base_) vhd::napi::ThrowError(info.Env(), "Inbox is closed");
    int dev = static_cast<int>(vhd::napi::IntArgAtLeast(info, i, "Inbox: devId", 0, maxDevices_ - 1));
    return reinterpret_cast<Slot*>(base_ + kSlotBytes * (static_cast<size_t>(dev) + 1));
  }

  // consume(devId, fd, len, seq, maxFds) -> RecvResult | null (EAGAIN): one recvmsg() of up to
  // len bytes into the slot, which then names this message.
  Napi::Value Consume(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Slot* s = SlotArg(info, 0);
    int fd = static_cast<int>(vhd::napi::IntArgAtLeast(info, 1, "Inbox.consume: fd", 0, INT_MAX));
    size_t len = static_cast<size_t>(vhd::napi::IntArgAtLeast(info, 2, "Inbox.consume: len", kHeaderBytes, kMaxMessage));
    uint64_t seq = static_cast<uint64_t>(vhd::napi::IntArgAtLeast(info, 3, "Inbox.consume: seq", 1, 9007199254740991.0));
    size_t maxFds = static_cast<size_t>(vhd::napi::IntArgAtLeast(info, 4, "Inbox.consume: maxFds", 0, kMaxFds));
    memset(s->data, 0, kHeaderBytes);
    __atomic_store_n(&s->multipart, 0u, __ATOMIC_RELAXED);
    __atomic_store_n(&s->len, static_cast<uint32_t>(len), __ATOMIC_RELAXED);
    __atomic_store_n(&s->seq, seq, __ATOMIC_RELEASE);
    vhd::ReceivedFds received;
    ssize_t n = vhd::RecvWithFds(fd, s->data, len, maxFds, 0, &received);
    if (n < 0) {
      int err = errno;
      memset(s->data, 0, kHeaderBytes);  // nothing left the socket
      if (err == EAGAIN || err == EWOULDBLOCK) return env.Null();
      ThrowErrno(env, err, "recvmsg");
    }
    // Cannot happen after a whole MSG_PEEK of len; if it does, the rest comes in pieces.
    if (static_cast<size_t>(n) < len) __atomic_store_n(&s->multipart, 1u, __ATOMIC_RELEASE);
    return vhd::RecvResultObject(env, reinterpret_cast<const char*>(s->data), static_cast<size_t>(n), &received);
  }

  // beginPiecewise(devId, seq): message seq is about to be read in pieces, outside the slot.
  void BeginPiecewise(const Napi::CallbackInfo& info) {
    Slot* s = SlotArg(info, 0);
    uint64_t seq = static_cast<uint64_t>(vhd::napi::IntArgAtLeast(info, 1, "Inbox.beginPiecewise: seq", 1, 9007199254740991.0));
    memset(s->data, 0, kHeaderBytes);
    __atomic_store_n(&s->len, 0u, __ATOMIC_RELAXED);
    __atomic_store_n(&s->multipart, 1u, __ATOMIC_RELAXED);
    __atomic_store_n(&s->seq, seq, __ATOMIC_RELEASE);
  }

  // state(devId) -> { seq, len, consumed, multipart, bytes }: read by an adopter once the
  // previous reader is dead. bytes: the slot's first len bytes (what recvmsg() wrote).
  Napi::Value State(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Slot* s = SlotArg(info, 0);
    uint64_t seq = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
    uint32_t len = __atomic_load_n(&s->len, __ATOMIC_RELAXED);
    if (len > kMaxMessage) len = 0;  // not ours: a slot we never wrote reads as empty
    uint32_t flags;
    memcpy(&flags, s->data + 4, sizeof flags);
    Napi::Object o = Napi::Object::New(env);
    o.Set("seq", Napi::Number::New(env, static_cast<double>(seq)));
    o.Set("len", Napi::Number::New(env, len));
    o.Set("consumed", Napi::Boolean::New(env, seq != 0 && (flags & 0x3) == 0x1));
    o.Set("multipart", Napi::Boolean::New(env, __atomic_load_n(&s->multipart, __ATOMIC_RELAXED) != 0));
    o.Set("bytes", Napi::Buffer<uint8_t>::Copy(env, s->data, len));
    return o;
  }

  // The VF's connection ended: its slot names nothing.
  void Clear(const Napi::CallbackInfo& info) {
    Slot* s = SlotArg(info, 0);
    __atomic_store_n(&s->seq, 0ull, __ATOMIC_RELEASE);
    __atomic_store_n(&s->len, 0u, __ATOMIC_RELAXED);
    __atomic_store_n(&s->multipart, 0u, __ATOMIC_RELAXED);
    memset(s->data, 0, kHeaderBytes);
  }

  void Close(const Napi::CallbackInfo&) { Unmap(); }

  void Unmap() {
    if (base_) munmap(base_, bytes_);
    base_ = nullptr;
  }

  uint8_t* base_ = nullptr;
  size_t bytes_ = 0;
  int maxDevices_ = 0;
};

}  // namespace

void InitInbox(Napi::Env env, Napi::Object exports) { exports.Set("Inbox", Inbox::Define(env)); }
