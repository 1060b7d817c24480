// Default split/merge/update for global/write tables.

#include "state/default_hooks.h"

#include "state/layout.h"

#include <cstring>
#include <vector>

namespace serpens::state {

namespace {

uint64_t *words(void *p) { return static_cast<uint64_t *>(p); }
const uint64_t *words(const void *p) { return static_cast<const uint64_t *>(p); }

} // namespace

int default_release_merge(serpens_nf_ctx *, const serpens_state_hook_args *a)
{
    const uint32_t nw = words_of(a->value_size);
    uint64_t *out = words(a->out);
    for (uint32_t w = 0; w < nw; ++w) {
        uint64_t v = a->whole ? words(a->whole)[w] : 0;
        for (uint32_t i = 0; i < a->n; ++i) {
            v |= words(a->parts[i])[w];
        }
        out[w] = v;
    }
    return SERPENS_OK;
}

int default_release_split(serpens_nf_ctx *, const serpens_state_hook_args *a)
{
    const uint32_t nw = words_of(a->value_size);
    const uint64_t *whole = words(a->whole);
    for (uint32_t i = 0; i < a->n; ++i) {
        std::memset(a->parts[i], 0, static_cast<std::size_t>(nw) * 8);
    }
    if (a->n == 0) {
        return SERPENS_OK;
    }
    uint64_t total = 0;
    for (uint32_t w = 0; w < nw; ++w) {
        total += static_cast<uint64_t>(__builtin_popcountll(whole[w]));
    }
    // Part j gets total/n items (the first total%n parts one more), dealt in
    // ascending order so each part holds contiguous runs.
    auto quota_of = [&](uint32_t j) { return total / a->n + (j < total % a->n ? 1 : 0); };
    uint32_t j = 0;
    uint64_t quota = quota_of(0);
    for (uint32_t w = 0; w < nw; ++w) {
        uint64_t bits = whole[w];
        while (bits != 0) {
            while (quota == 0 && j + 1 < a->n) {
                quota = quota_of(++j);
            }
            uint64_t pc = static_cast<uint64_t>(__builtin_popcountll(bits));
            if (pc <= quota) {
                words(a->parts[j])[w] |= bits;
                quota -= pc;
                bits = 0;
            } else {
                words(a->parts[j])[w] |= bits & (~bits + 1);
                bits &= bits - 1;
                --quota;
            }
        }
    }
    return SERPENS_OK;
}

int default_release_update(serpens_nf_ctx *ctx, const serpens_state_hook_args *a)
{
    std::vector<uint64_t> whole(words_of(a->value_size), 0);
    serpens_state_hook_args m = *a;
    m.whole = nullptr;
    m.out = whole.data();
    default_release_merge(ctx, &m);
    m.whole = whole.data();
    m.out = nullptr;
    return default_release_split(ctx, &m);
}

int default_eventual_merge(serpens_nf_ctx *, const serpens_state_hook_args *a)
{
    const uint32_t nw = a->value_size / 8;
    const uint64_t *g = words(a->whole);
    uint64_t *out = words(a->out);
    for (uint32_t w = 0; w < nw; ++w) {
        uint64_t v = g[w];
        for (uint32_t i = 0; i < a->n; ++i) {
            v += words(a->parts[i])[w] - g[w]; // modulo 2^64: deltas may look negative
        }
        out[w] = v;
    }
    return SERPENS_OK;
}

int default_eventual_split(serpens_nf_ctx *, const serpens_state_hook_args *a)
{
    for (uint32_t i = 0; i < a->n; ++i) {
        std::memcpy(a->parts[i], a->whole, a->value_size);
    }
    return SERPENS_OK;
}

} // namespace serpens::state
