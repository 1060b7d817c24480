#pragma once
// A per-flow table for the fw NF: the host's shared-memory table (paper
// Fig. 9) when the host offers the state API, otherwise a bounded
// per-instance cache that lives and dies with the instance.
//
// The local cache is 4-way set associative with an idle timeout: a full set
// evicts its least recently used entry, which for a verdict cache only costs
// a reclassification.  Not thread safe: one table per NF context (the ABI
// runs process() of a context on one thread).

#include <serpens/nf.h>

#include <cstdint>
#include <cstring>
#include <memory>

namespace serpens_fw {

class FlowTable {
public:
    enum class Backend { host, local };

    // Cold path.  The host's table, or with `local` a per-instance cache.
    // Returns false (and logs) when it cannot be had.
    bool open(serpens_nf_ctx *ctx, const char *name, uint32_t flags, uint32_t key_size, uint32_t value_size,
              uint64_t capacity, bool local, uint64_t idle_ns)
    {
        const serpens_host_api *api = ctx->host;
        _api = api;
        _ks = key_size;
        _vs = value_size;
        _idle_ns = idle_ns;
        if (!local) {
            _t = api->create_table(ctx, name, flags, key_size, value_size, capacity);
            if (_t == nullptr) {
                api->log(ctx, SERPENS_LOG_ERROR,
                         "the host could not create table '%s' (state = \"local\" keeps per-instance caches)", name);
                return false;
            }
            _backend = Backend::host;
            return true;
        }
        _backend = Backend::local;
        uint64_t sets = 1;
        while (sets * kWays < capacity) {
            sets <<= 1;
        }
        _mask = sets - 1;
        _stride = (8 + key_size + value_size + 7) & ~7u;
        _mem.reset(new (std::nothrow) uint8_t[sets * kWays * _stride]());
        if (!_mem) {
            api->log(ctx, SERPENS_LOG_ERROR, "table '%s': cannot allocate %llu entries", name,
                     static_cast<unsigned long long>(sets * kWays));
            return false;
        }
        return true;
    }

    Backend backend() const noexcept { return _backend; }

    // True when get_bulk is one host call (the host table, a host with
    // get_state_bulk); the local cache has no bulk lookup.
    bool has_bulk() const noexcept { return _t != nullptr && _api->get_state_bulk != nullptr; }

    // Hot path, only when has_bulk(): looks up n (<= kMaxBulk) keys laid out
    // back to back, copies the hits into values (n * value_size bytes) and
    // returns their bit mask.  The misses of the n keys overlap in the host.
    static constexpr uint32_t kMaxBulk = 64;
    uint64_t get_bulk(const void *keys, uint32_t n, void *values) noexcept
    {
        return _api->get_state_bulk(_t, keys, n, values);
    }

    // Hot path: SERPENS_OK (value copied) or SERPENS_ENOENT.
    int get(const void *key, void *value, uint64_t now) noexcept
    {
        if (_t != nullptr) {
            return _api->get_state(_t, key, value);
        }
        uint8_t *e = find(key, now);
        if (e == nullptr) {
            return SERPENS_ENOENT;
        }
        std::memcpy(e, &now, 8);
        std::memcpy(value, e + 8 + _ks, _vs);
        return SERPENS_OK;
    }

    int put(const void *key, const void *value, uint64_t now) noexcept
    {
        if (_t != nullptr) {
            return _api->put_state(_t, key, value);
        }
        uint8_t *set = _mem.get() + (hash(key) & _mask) * kWays * _stride;
        uint8_t *victim = nullptr;
        uint64_t oldest = UINT64_MAX;
        for (unsigned w = 0; w < kWays; ++w) {
            uint8_t *e = set + w * _stride;
            uint64_t last;
            std::memcpy(&last, e, 8);
            if (last != 0 && std::memcmp(e + 8, key, _ks) == 0) {
                victim = e;
                break;
            }
            if (last < oldest) {
                oldest = last;
                victim = e;
            }
        }
        uint64_t stamp = now != 0 ? now : 1; // 0 marks an empty way
        std::memcpy(victim, &stamp, 8);
        std::memcpy(victim + 8, key, _ks);
        std::memcpy(victim + 8 + _ks, value, _vs);
        return SERPENS_OK;
    }

    int del(const void *key, uint64_t now) noexcept
    {
        if (_t != nullptr) {
            return _api->delete_state(_t, key);
        }
        uint8_t *e = find(key, now);
        if (e == nullptr) {
            return SERPENS_ENOENT;
        }
        std::memset(e, 0, 8);
        return SERPENS_OK;
    }

private:
    static constexpr unsigned kWays = 4;

    // Word-at-a-time: a byte-serial FNV over 40 bytes costs ~50 ns of
    // dependent multiplies, most of an established-flow lookup.
    uint64_t hash(const void *key) const noexcept
    {
        const uint8_t *p = static_cast<const uint8_t *>(key);
        uint64_t h = 0x9e3779b97f4a7c15ull ^ _ks;
        uint32_t i = 0;
        for (; i + 8 <= _ks; i += 8) {
            uint64_t w;
            std::memcpy(&w, p + i, 8);
            h = (h ^ w) * 0xff51afd7ed558ccdull;
            h ^= h >> 32;
        }
        for (; i < _ks; ++i) {
            h = (h ^ p[i]) * 0x100000001b3ull;
        }
        return h ^ (h >> 29);
    }

    uint8_t *find(const void *key, uint64_t now) noexcept
    {
        uint8_t *set = _mem.get() + (hash(key) & _mask) * kWays * _stride;
        for (unsigned w = 0; w < kWays; ++w) {
            uint8_t *e = set + w * _stride;
            uint64_t last;
            std::memcpy(&last, e, 8);
            if (last != 0 && std::memcmp(e + 8, key, _ks) == 0) {
                if (_idle_ns != 0 && now > last && now - last > _idle_ns) {
                    std::memset(e, 0, 8); // expired
                    return nullptr;
                }
                return e;
            }
        }
        return nullptr;
    }

    const serpens_host_api *_api = nullptr;
    serpens_table *_t = nullptr;
    Backend _backend = Backend::local;
    uint32_t _ks = 0, _vs = 0, _stride = 0;
    uint64_t _mask = 0, _idle_ns = 0;
    std::unique_ptr<uint8_t[]> _mem;
};

} // namespace serpens_fw
