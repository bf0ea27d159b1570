// A CPU allocator that counts (chapter 5, "Theory meets the allocator"; ondevice/memory/allocator.py).
//
// Installed as c10's CPU allocator, it hands out memory with c10's own aligned allocation
// (c10::alloc_cpu, the default allocator's) and logs every allocation and free made while it
// records: (sequence number, address, +bytes or -bytes). Python replays the log to find the peak
// and what was alive at it. Under a budget it refuses an allocation that would take the bytes
// counted since the budget was set past it, with c10's OutOfMemoryError, as a device that is full.
// Plain C functions (ctypes): no pybind, no torch/library.h, only c10's headers.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

struct Event {
  int64_t address;
  int64_t bytes;  // > 0 allocation, < 0 free
};

std::mutex mutex;
std::unordered_map<void*, int64_t> live;  // allocations made by this allocator, still alive
std::vector<Event> events;
bool recording = false;
int64_t counted = 0;  // bytes allocated minus freed by this allocator since the budget was set
int64_t budget = -1;  // < 0: none

void release(void* ptr) {
  if (ptr == nullptr) return;
  {
    std::lock_guard<std::mutex> guard(mutex);
    auto found = live.find(ptr);
    if (found != live.end()) {
      counted -= found->second;
      if (recording) events.push_back({reinterpret_cast<int64_t>(ptr), -found->second});
      live.erase(found);
    }
  }
  c10::free_cpu(ptr);
}

class CountingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    {
      std::lock_guard<std::mutex> guard(mutex);
      if (budget >= 0 && counted + static_cast<int64_t>(n) > budget) {
        TORCH_CHECK_WITH(OutOfMemoryError, false, "counting allocator: out of memory: tried to allocate ", n,
                         " bytes with ", counted, " of the budget's ", budget, " bytes in use");
      }
    }
    void* ptr = c10::alloc_cpu(n);
    if (ptr != nullptr) {
      std::lock_guard<std::mutex> guard(mutex);
      live[ptr] = static_cast<int64_t>(n);
      counted += static_cast<int64_t>(n);
      if (recording) events.push_back({reinterpret_cast<int64_t>(ptr), static_cast<int64_t>(n)});
    }
    return {ptr, ptr, &release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

CountingAllocator counting;
c10::Allocator* previous = nullptr;
constexpr uint8_t kPriority = 100;  // above the default allocator's registration

}  // namespace

extern "C" {

// Make the counting allocator c10's CPU allocator (idempotent).
void ondevice_install() {
  if (previous == nullptr) {
    previous = c10::GetCPUAllocator();
    c10::SetCPUAllocator(&counting, kPriority);
  }
}

// Give c10 back the allocator it had; memory handed out meanwhile is still freed correctly.
void ondevice_uninstall() {
  if (previous != nullptr) {
    c10::SetCPUAllocator(previous, kPriority);
    previous = nullptr;
  }
}

int ondevice_installed() { return previous != nullptr && c10::GetCPUAllocator() == &counting; }

void ondevice_start(int64_t new_budget) {
  std::lock_guard<std::mutex> guard(mutex);
  events.clear();
  counted = 0;
  budget = new_budget;
  recording = true;
}

void ondevice_stop() {
  std::lock_guard<std::mutex> guard(mutex);
  recording = false;
  budget = -1;
}

int64_t ondevice_event_count() {
  std::lock_guard<std::mutex> guard(mutex);
  return static_cast<int64_t>(events.size());
}

// Copy the log into two caller-owned arrays of at least ondevice_event_count() int64 each.
void ondevice_events(int64_t* addresses, int64_t* bytes) {
  std::lock_guard<std::mutex> guard(mutex);
  for (size_t i = 0; i < events.size(); ++i) {
    addresses[i] = events[i].address;
    bytes[i] = events[i].bytes;
  }
}

int64_t ondevice_counted() {
  std::lock_guard<std::mutex> guard(mutex);
  return counted;
}
}
