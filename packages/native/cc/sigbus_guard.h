// SIGBUS guard for front-end files we map: guest memory, the dirty log and the blk inflight
// area. A front-end can ftruncate() the memfd/file behind a region
// after we mapped it (MAP_SHARED); the next touch of a page past the new end raises SIGBUS in
// whichever worker copies a packet, which would kill the daemon and every other VM's network.
//
// A process-wide handler looks the faulting address up in a lock-free registry of guest
// mappings. On a hit it replaces the rest of that mapping with private anonymous zero pages
// (mmap MAP_FIXED is a plain syscall, so async-signal-safe), records the fault in the owning
// device's MemFault and wakes its worker; the faulting copy then completes on zeros and the
// engine fails the device's queues at its next burst. Any other SIGBUS goes to the handler
// installed before ours, or kills the process as if we were not there.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace vhd {

// What a registered mapping is (the fault's report and the device's reaction depend on it).
enum class MapKind : uint8_t { kGuestMemory = 0, kDirtyLog = 1, kInflight = 2 };

// One per device, shared by all its memory tables. Written by the signal handler (any thread),
// acted on by the device's owner worker.
struct MemFault {
  std::atomic<uint32_t> hits{0};  // +1 per handled fault
  uint32_t seen = 0;              // hits the owner already acted on (owner, under every RX lock)
  int devId = -1;
  std::atomic<int> wakeFd{-1};    // eventfd the handler writes so an idle owner notices
  // The first fault not yet reported (claimed with `recorded`, cleared by the reporter).
  std::atomic<bool> recorded{false};
  std::atomic<uint64_t> addr{0}, regionGpa{0}, regionSize{0}, regionHost{0};
  std::atomic<uint8_t> kind{0};  // MapKind of the recorded fault

  // One relaxed load: is there a fault the owner has not acted on?
  bool pending() const noexcept { return hits.load(std::memory_order_relaxed) != seen; }
  // Writes "guest memory region 0x…+0x… shrank under us (SIGBUS at guest 0x…)" (or the same
  // for the dirty log / inflight area) and re-arms the record for the next fault. Caller is
  // the owner (after an acquire of hits).
  void describe(char* out, size_t len) noexcept;
};

namespace sigbus {

// Installs the handler once per process (later calls return the first result). "" or why not.
std::string install();
bool installed() noexcept;

// The registry grows in chunks of kChunkSlots (allocated by add(), never freed or moved, so
// the handler reads it without locks) up to kMaxSlots: 1024 devices x (64 regions + log +
// inflight area), twice over (a memory table swap maps the new table before the old goes).
constexpr int kChunkSlots = 4096;
constexpr int kMaxChunks = 64;
constexpr int kMaxSlots = kChunkSlots * kMaxChunks;

// Registers the mapping [base, base+len) whose guest region (gpa, size) starts at `host`
// (dirty log, inflight area: gpa 0, size = the area's bytes). Returns a handle, or -1 when the
// registry is full or a chunk cannot be allocated (the caller must not use the mapping).
int add(void* base, size_t len, uint8_t* host, uint64_t gpa, uint64_t size, MemFault* fault,
        MapKind kind = MapKind::kGuestMemory) noexcept;
// Unregisters; when it returns no handler is using the entry any more, so the caller may
// munmap the range (which also drops any anonymous pages the handler put in).
void remove(int handle) noexcept;
// True once the handler replaced (part of) this mapping with zero pages.
bool faulted(int handle) noexcept;
// Entries in use (for tests and diagnostics).
int liveCount() noexcept;

}  // namespace sigbus
}  // namespace vhd
