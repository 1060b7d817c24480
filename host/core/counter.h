#pragma once
// Data-path counters: each is written by one lcore and read by the control
// thread.  Relaxed atomics make that well-defined at no cost on x86, and a
// load-add-store (not fetch_add) keeps the locked instruction off the path.

#include <atomic>
#include <cstdint>

namespace serpens {

using Counter = std::atomic<uint64_t>;

inline void bump(Counter &c, uint64_t n = 1) noexcept
{
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

} // namespace serpens
