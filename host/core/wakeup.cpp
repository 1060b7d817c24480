#include "core/wakeup.h"

#include <climits>
#include <ctime>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace serpens {

static long futex(std::atomic<uint32_t> *word, int op, uint32_t value, const timespec *timeout)
{
    return syscall(SYS_futex, reinterpret_cast<uint32_t *>(word), op, value, timeout, nullptr, 0);
}

void Wakeup::wait(uint32_t timeout_us) noexcept
{
    uint32_t seen = _word.load(std::memory_order_acquire);
    if (_sleeping.load(std::memory_order_seq_cst) != 0) {
        timespec timeout{static_cast<time_t>(timeout_us / 1000000), static_cast<long>(timeout_us % 1000000) * 1000};
        futex(&_word, FUTEX_WAIT_PRIVATE, seen, &timeout);
    }
    _sleeping.store(0, std::memory_order_relaxed);
}

void Wakeup::wake() noexcept
{
    if (_sleeping.exchange(0, std::memory_order_seq_cst) != 0) {
        _word.fetch_add(1, std::memory_order_release);
        futex(&_word, FUTEX_WAKE_PRIVATE, INT_MAX, nullptr);
        _wakeups.fetch_add(1, std::memory_order_relaxed);
    }
}

} // namespace serpens
