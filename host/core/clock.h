#pragma once
// The host's one clock: CLOCK_MONOTONIC in nanoseconds, what the data path
// passes as `now` and what state expiry and timers compare against.

#include <cstdint>
#include <ctime>

namespace serpens {

inline uint64_t monotonic_ns() noexcept
{
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

} // namespace serpens
