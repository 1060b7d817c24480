#pragma once
// Heap storage that shares no cache line with any other allocation.
//
// malloc packs small blocks together, so a vector one lcore writes per burst
// (its counters, its scratch) can land in the line that holds another lcore's.
// Then every write by one pulls the line away from the other: measured with
// two lcores forwarding, such a shared line was where the chain's run stalled.
// Hot-path data written by one lcore goes in LineVector, or in a type declared
// alignas(cache_line) (which operator new then aligns).

#include <cstddef>
#include <new>
#include <vector>

namespace serpens {

inline constexpr std::size_t cache_line = 64;

template<class T>
struct CacheLineAllocator {
    using value_type = T;

    CacheLineAllocator() noexcept = default;
    template<class U>
    CacheLineAllocator(const CacheLineAllocator<U> &) noexcept
    {}

    T *allocate(std::size_t n)
    {
        // Whole lines: the block's last line is not shared either.
        const std::size_t bytes = (n * sizeof(T) + cache_line - 1) / cache_line * cache_line;
        return static_cast<T *>(::operator new (bytes, std::align_val_t{cache_line}));
    }
    void deallocate(T *p, std::size_t) noexcept { ::operator delete (p, std::align_val_t{cache_line}); }

    template<class U>
    bool operator==(const CacheLineAllocator<U> &) const noexcept
    {
        return true;
    }
};

template<class T>
using LineVector = std::vector<T, CacheLineAllocator<T>>;

} // namespace serpens
