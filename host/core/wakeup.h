#pragma once
// Sleep and wake-up for an idle worker without a lock: the worker waits on a
// futex with a deadline; a producer wakes it only when it is asleep.

#include <atomic>
#include <cstdint>

namespace serpens {

class Wakeup {
public:
    // Worker: announce sleep; the caller then re-checks its queues (so a
    // producer that enqueued just before cannot be missed) and calls wait().
    void prepare_sleep() noexcept { _sleeping.store(1, std::memory_order_seq_cst); }
    void cancel_sleep() noexcept { _sleeping.store(0, std::memory_order_relaxed); }
    // Sleeps until wake() or `timeout_us` passes.
    void wait(uint32_t timeout_us) noexcept;

    bool sleeping() const noexcept { return _sleeping.load(std::memory_order_relaxed) != 0; }
    // Producer: wakes the worker if it sleeps.
    void wake() noexcept;
    uint64_t wakeups() const noexcept { return _wakeups.load(std::memory_order_relaxed); }

private:
    std::atomic<uint32_t> _sleeping{0};
    std::atomic<uint32_t> _word{0};
    std::atomic<uint64_t> _wakeups{0};
};

} // namespace serpens
