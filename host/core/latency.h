#pragma once
// A latency histogram one thread writes and any thread reads: log-linear
// buckets, eight per power of two (so a bucket is at most 12.5% wide), from
// 0 ns to over an hour, and the exact sum of what was recorded (a Prometheus
// histogram's _sum).  Recording is four plain memory operations; readers take
// the difference of two snapshots to see a time window.

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace serpens {

class LatencyHistogram {
public:
    static constexpr std::size_t buckets = 320;

    // The bucket of `ns`: exact below 8, else 8 per power of two.
    static constexpr std::size_t bucket_of(uint64_t ns) noexcept
    {
        if (ns < 8) {
            return static_cast<std::size_t>(ns);
        }
        const auto e = static_cast<unsigned>(std::bit_width(ns) - 1); // 3..63
        const std::size_t b = (e - 2) * 8 + ((ns >> (e - 3)) & 7);
        return b < buckets ? b : buckets - 1;
    }
    // The smallest latency bucket b holds.
    static constexpr uint64_t bucket_low(std::size_t b) noexcept
    {
        if (b < 8) {
            return b;
        }
        const std::size_t e = b / 8 + 2;
        return (8 + b % 8) << (e - 3);
    }

    // Single writer.
    void record(uint64_t ns) noexcept
    {
        std::atomic<uint64_t> &c = _counts[bucket_of(ns)];
        c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        _sum_ns.store(_sum_ns.load(std::memory_order_relaxed) + ns, std::memory_order_relaxed);
    }
    uint64_t count(std::size_t b) const noexcept { return _counts[b].load(std::memory_order_relaxed); }
    // Every recorded latency added up (read apart from the counts: a reader
    // racing the writer may see one more or one less record in either).
    uint64_t sum_ns() const noexcept { return _sum_ns.load(std::memory_order_relaxed); }

private:
    std::array<std::atomic<uint64_t>, buckets> _counts{};
    std::atomic<uint64_t> _sum_ns{0};
};

} // namespace serpens
