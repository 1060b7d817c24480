#pragma once
// The mock host every NF unit test runs its plugin on: an in-test
// serpens_host_api around the real .so (loaded by dlopen), with
//  - config getters that are the host's real ones over a TOML text, so
//    config_where gives real file:line:col, and a scratch directory for the
//    files a config names;
//  - state in std::map behind create_table/get/put/delete/bulk, per table
//    counts of the calls, and trivially correct split/merge/update:
//    RELEASE: each key has a base cell and one cell per instance; merge =
//    OR, split deals the set bits equally (as host/state's default does),
//    trigger rebalances at once (the real host only records it and
//    rebalances at the state manager's next tick).  EVENTUAL: replicas start as copies of the
//    base; merge folds G + sum(R_i - G) (or calls the NF's merge hook) and
//    copies back; add_state_bulk adds uint64 rows to the caller's replica;
//    the 1.4 _v2 bulk calls wrap the 1.1/1.3 ones, telling refusals from full;
//  - counters per context (64 at most, as the host), log lines kept;
//  - packets: plain memory with headroom (Packet, for NFs that grow or cut
//    them) or a batch of frames (Packets), views filled by the host's parser;
//    frame builders by address text (text_frames, IPv4 and IPv6) and by
//    number (ipv4_frames, with an independent decoder); checksums are
//    nf_util's, which tests/nf/util checks against RFC 1071.
// Contexts outlive fini: "restart an instance" is fini, then init again.

#include "config/plugin_config.h"
#include "net/parse.h"

#include <serpens/nf.h>
#include <serpens/nf_util.h>

#include <doctest/doctest.h>
#include <toml++/toml.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace nfmock {

using Bytes = std::vector<uint8_t>;

inline const serpens_nf_descriptor *load_plugin(const std::string &path)
{
    void *so = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (so == nullptr) {
        throw std::runtime_error(std::string("dlopen: ") + dlerror());
    }
    auto entry = reinterpret_cast<serpens_nf_entry_fn>(dlsym(so, SERPENS_NF_ENTRY_SYMBOL));
    if (entry == nullptr) {
        throw std::runtime_error("no entry symbol in " + path);
    }
    return entry();
}

// Every packet labelled for the NF, every port reset to the default first.
inline void run_batch(const serpens_nf_descriptor *desc, serpens_nf_ctx *ctx, std::vector<serpens_pkt> &pkts,
                      std::vector<uint8_t> &ports, uint64_t now)
{
    std::vector<uint16_t> labels(pkts.size(), 1);
    ports.assign(pkts.size(), SERPENS_PORT_DEFAULT);
    serpens_batch b{};
    b.struct_size = sizeof b;
    b.count = static_cast<uint32_t>(pkts.size());
    b.self = 1;
    b.pkts = pkts.data();
    b.pkt_stride = sizeof(serpens_pkt);
    b.labels = labels.data();
    b.ports = ports.data();
    b.now_ns = now;
    desc->process(ctx, &b);
}

// ---------------------------------------------------------------------------
// Packets with headroom
// ---------------------------------------------------------------------------

struct Packet {
    static constexpr uint32_t headroom = 128, capacity = 2304;
    uint32_t off = headroom, len = 0;
    alignas(64) uint8_t buf[capacity];
    serpens_pkt view{};

    explicit Packet(const Bytes &frame)
    {
        len = static_cast<uint32_t>(frame.size());
        std::memcpy(buf + off, frame.data(), frame.size());
        reparse();
    }
    // Fills the view as the host does before the chain runs.
    void reparse()
    {
        view = serpens_pkt{};
        view.data = buf + off;
        view.len = len;
        view.handle = this;
        serpens::net::FlowKey key;
        serpens::net::parse_packet(view.data, view.len, view, key);
    }
    Bytes bytes() const { return Bytes(view.data, view.data + view.len); }
};

inline void shift(serpens_pkt *p, int32_t d)
{
    for (uint16_t *o : {&p->l3_offset, &p->l4_offset, &p->payload_offset}) {
        if (*o != SERPENS_OFFSET_NONE) {
            int32_t v = *o + d;
            *o = v < 0 || v >= 0xffff ? uint16_t{SERPENS_OFFSET_NONE} : static_cast<uint16_t>(v);
        }
    }
}
inline uint8_t *pkt_prepend(serpens_pkt *p, uint32_t n)
{
    auto *m = static_cast<Packet *>(p->handle);
    if (m->off < n) {
        return nullptr;
    }
    m->off -= n;
    m->len += n;
    p->data = m->buf + m->off;
    p->len = m->len;
    shift(p, static_cast<int32_t>(n));
    return p->data;
}
inline uint8_t *pkt_append(serpens_pkt *p, uint32_t n)
{
    auto *m = static_cast<Packet *>(p->handle);
    if (m->off + m->len + n > Packet::capacity) {
        return nullptr;
    }
    uint8_t *tail = m->buf + m->off + m->len;
    m->len += n;
    p->len = m->len;
    return tail;
}
// Cuts n bytes off the packet's head (adj) or tail (trim).
inline int pkt_cut(serpens_pkt *p, uint32_t n, bool head)
{
    auto *m = static_cast<Packet *>(p->handle);
    if (n > m->len) {
        return SERPENS_EINVAL;
    }
    m->len -= n;
    p->len = m->len;
    if (head) {
        m->off += n;
        p->data = m->buf + m->off;
        shift(p, -static_cast<int32_t>(n));
    }
    return SERPENS_OK;
}
inline int pkt_trim(serpens_pkt *p, uint32_t n) { return pkt_cut(p, n, false); }
inline int pkt_adj(serpens_pkt *p, uint32_t n) { return pkt_cut(p, n, true); }

// ---------------------------------------------------------------------------
// The mock host
// ---------------------------------------------------------------------------

class MockHost;

struct MockTable {
    std::string name;
    uint32_t flags = 0, key_size = 0, value_size = 0;
    uint64_t capacity = 0;
    uint64_t active = 0; // bit i: instance i has a cell
    // per-flow / global-read: one value; global/write: cells[0] base, cells[1 + i]
    std::map<Bytes, std::vector<Bytes>> entries;
    // Per-flow: the slot (0..capacity) each key sits in, for scan_state;
    // an entry keeps its slot while it lives, as in the host's tables.
    std::vector<Bytes> slot_key;
    std::map<Bytes, uint64_t> slot_of;
    std::vector<uint64_t> freed_slots; // taken again first
    uint64_t fresh_slot = 0;           // slots from here on were never taken
    uint64_t gets = 0, puts = 0;       // get_state / put_state calls (bulk keys count in gets)
    uint64_t bulk_calls = 0;           // get_state_bulk calls

    bool global_write() const { return (flags & SERPENS_STATE_GLOBAL) && (flags & SERPENS_STATE_WRITE); }
    bool release() const { return flags & SERPENS_STATE_RELEASE; }
};

struct MockHandle {
    MockHost *host;
    MockTable *table;
    uint32_t instance;
};

// One NF context.  Contexts outlive fini, so "restart an instance" is fini,
// then init a new context of the same instance id on the same host.
struct Ctx {
    serpens_nf_ctx pub{};
    MockHost *host = nullptr;
    std::map<std::string, uint64_t> counters; // node-based: stable addresses
    bool initialised = false;
};

inline constexpr uint32_t kMockMaxInstances = 8;

class MockHost {
public:
    // The plugin .so at plugin_path; with_state false plays a host without
    // state services (create_table and the state calls absent).
    explicit MockHost(const std::string &plugin_path, bool with_state = true) : MockHost(load_plugin(plugin_path))
    {
        if (!with_state) {
            _api.create_table = nullptr;
            _api.get_state = nullptr;
            _api.put_state = nullptr;
            _api.delete_state = nullptr;
            _api.get_state_bulk = nullptr;
        }
    }
    explicit MockHost(const serpens_nf_descriptor *desc) : _desc(desc)
    {
        char tmpl[] = "/tmp/serpens-nftest-XXXXXX";
        if (mkdtemp(tmpl) == nullptr) {
            throw std::runtime_error("mkdtemp");
        }
        _dir = tmpl;
        _api.struct_size = sizeof _api;
        _api.abi_major = SERPENS_ABI_MAJOR;
        _api.abi_minor = SERPENS_ABI_MINOR;
        _api.log = &MockHost::s_log;
        _api.now_ns = &MockHost::s_now;
        serpens::config::install_config_api(_api);
        _api.create_table = &MockHost::s_create;
        _api.get_state = &MockHost::s_get;
        _api.put_state = &MockHost::s_put;
        _api.delete_state = &MockHost::s_delete;
        _api.get_state_bulk = &MockHost::s_bulk;
        _api.split = &MockHost::s_split;
        _api.merge = &MockHost::s_merge;
        _api.update = &MockHost::s_update;
        _api.timer = &MockHost::s_timer;
        _api.trigger = &MockHost::s_trigger;
        _api.counter = &MockHost::s_counter;
        _api.add_state_bulk = &MockHost::s_add_bulk;
        _api.update_state_bulk = &MockHost::s_update_bulk;
        _api.update_state_bulk_v2 = &MockHost::s_update_bulk_v2;
        _api.add_state_bulk_v2 = &MockHost::s_add_bulk_v2;
        _api.scan_state = &MockHost::s_scan;
        _api.table_slots = &MockHost::s_slots;
        _api.pkt_prepend = pkt_prepend;
        _api.pkt_append = pkt_append;
        _api.pkt_trim = pkt_trim;
        _api.pkt_adj = pkt_adj;
        current() = this;
        set_config("");
    }
    ~MockHost()
    {
        for (auto &c : _ctxs) {
            if (c->initialised) {
                fini(*c);
            }
        }
        std::error_code ec;
        std::filesystem::remove_all(_dir, ec);
        current() = nullptr;
    }

    static MockHost *&current()
    {
        static MockHost *h = nullptr;
        return h;
    }

    // Writes `text` as a chain file's NF config table (under [config]) and
    // parses it the way the host does.  Line numbers count from the file's
    // first line, which is "[config]".
    void set_config(const std::string &text)
    {
        _config_file = write("chain.toml", "[config]\n" + text);
        auto doc = std::make_shared<toml::table>(toml::parse_file(_config_file));
        _config = std::make_unique<serpens_config>();
        _config->document = doc;
        _config->table = (*doc)["config"].as_table();
        _config->file = _config_file;
        _config->directory = _dir;
    }
    const std::string &config_file() const { return _config_file; }
    // A scratch directory for files the config names; removed with the host.
    const std::string &dir() const { return _dir; }
    std::string write(const std::string &name, const std::string &text)
    {
        std::string p = _dir + "/" + name;
        std::ofstream(p, std::ios::binary) << text;
        return p;
    }
    // The config as the host keeps it: what the NF read is recorded there.
    const serpens_config &config() const { return *_config; }

    // A new context of instance `id`, and its init's return code.
    int init(Ctx *&out, uint32_t id = 0)
    {
        auto c = std::make_unique<Ctx>();
        c->pub.struct_size = sizeof c->pub;
        c->pub.instance_id = id;
        c->pub.host = &_api;
        c->pub.chain_name = "test";
        c->pub.nf_name = _desc->name;
        c->pub.host_private = c.get();
        c->host = this;
        c->initialised = true;
        out = c.get();
        _ctxs.push_back(std::move(c));
        return _desc->init(&out->pub, _config.get());
    }
    int init(uint32_t id)
    {
        Ctx *c = nullptr;
        return init(c, id);
    }
    void fini(Ctx &c)
    {
        if (_desc->fini != nullptr) {
            _desc->fini(&c.pub);
        }
        c.initialised = false;
    }
    // The newest context of instance `id`.
    serpens_nf_ctx *ctx(uint32_t id) { return &latest(id).pub; }
    // The API table handed to the NF, a 1.4 host's: tests may replace or
    // clear entries before init (a host that refuses a call, an API without
    // an optional entry).
    serpens_host_api &api() { return _api; }
    uint64_t counter(uint32_t id, const std::string &name)
    {
        auto &m = latest(id).counters;
        auto it = m.find(name);
        return it == m.end() ? 0 : it->second;
    }
    bool has_counter(uint32_t id, const std::string &name) { return latest(id).counters.count(name) != 0; }

    // Removes an instance: RELEASE cells go back and are re-dealt, EVENTUAL
    // replicas are merged into the base (scale-in).
    void remove_instance(uint32_t id)
    {
        for (auto &[n, t] : _tables) {
            if (!t.global_write() || !(t.active & (1ull << id))) {
                continue;
            }
            if (t.release()) {
                t.active &= ~(1ull << id);
                for (auto &[k, cells] : t.entries) {
                    rebalance(t, k);
                }
            } else {
                for (auto &[k, cells] : t.entries) {
                    merge_eventual(t, k);
                }
                t.active &= ~(1ull << id);
            }
        }
        Ctx &c = latest(id);
        if (c.initialised) {
            fini(c);
        }
    }

    void process(uint32_t id, std::vector<serpens_pkt> &pkts, std::vector<uint8_t> &ports, uint64_t now)
    {
        _now = now;
        run_batch(_desc, ctx(id), pkts, ports, now);
    }
    // Runs one batch of Packets on context c and returns their ports.
    std::vector<uint8_t> run(Ctx &c, std::vector<Packet *> pkts, uint64_t now_ns = 1'000'000'000)
    {
        std::vector<serpens_pkt> views;
        for (Packet *p : pkts) {
            views.push_back(p->view);
        }
        std::vector<uint8_t> ports;
        _now = now_ns;
        run_batch(_desc, &c.pub, views, ports, now_ns);
        for (std::size_t i = 0; i < pkts.size(); ++i) {
            pkts[i]->view = views[i];
        }
        return ports;
    }
    uint8_t run1(Ctx &c, Packet &p, uint64_t now_ns = 1'000'000'000) { return run(c, {&p}, now_ns)[0]; }

    bool logged(const std::string &needle) const
    {
        for (const auto &l : logs) {
            if (l.find(needle) != std::string::npos) {
                return true;
            }
        }
        return false;
    }
    std::string all_logs() const
    {
        std::string s;
        for (const auto &l : logs) {
            s += l + "\n";
        }
        return s;
    }
    const serpens_nf_descriptor *desc() const { return _desc; }

    MockTable *table(const std::string &name)
    {
        auto it = _tables.find(name);
        return it == _tables.end() ? nullptr : &it->second;
    }
    // The global value of a global/write key: RELEASE the OR of every cell,
    // EVENTUAL the fold of the replicas into the base (without writing it).
    Bytes global_value(const std::string &name, const Bytes &key)
    {
        MockTable &t = _tables.at(name);
        auto &cells = t.entries.at(key);
        if (t.release()) {
            Bytes out(t.value_size, 0);
            for (auto &c : cells) {
                for (std::size_t i = 0; i < out.size(); ++i) {
                    out[i] |= c[i];
                }
            }
            return out;
        }
        Bytes out(t.value_size, 0);
        fold(t, key, cells, out);
        return out;
    }

    // What the merge timer does: folds every key of an EVENTUAL table.
    void merge_all(const std::string &name)
    {
        MockTable &t = _tables.at(name);
        for (auto &[k, cells] : t.entries) {
            merge_eventual(t, k);
        }
        ++merges;
    }

    std::vector<std::string> logs;
    std::vector<std::pair<std::string, uint64_t>> timers; // table name, period
    uint64_t triggers = 0, splits = 0, merges = 0, bulk_adds = 0, bulk_updates = 0, bulk_lookups = 0;
    bool null_key_timers = false; // a timer was set with key NULL (every key)
    uint64_t now_value = 0;

private:
    Ctx &latest(uint32_t id)
    {
        for (auto it = _ctxs.rbegin(); it != _ctxs.rend(); ++it) {
            if ((*it)->pub.instance_id == id) {
                return **it;
            }
        }
        throw std::out_of_range("no context of instance " + std::to_string(id));
    }

    static MockHost &of(serpens_table *t) { return *reinterpret_cast<MockHandle *>(t)->host; }
    static MockHandle &handle(serpens_table *t) { return *reinterpret_cast<MockHandle *>(t); }

    static void s_log(const serpens_nf_ctx *ctx, int level, const char *fmt, ...)
    {
        char buf[2048];
        va_list args;
        va_start(args, fmt);
        vsnprintf(buf, sizeof buf, fmt, args);
        va_end(args);
        MockHost *h = static_cast<Ctx *>(ctx->host_private)->host;
        h->logs.push_back(std::to_string(level) + " " + buf);
    }
    static uint64_t s_now() { return current() ? current()->_now : 0; }

    static serpens_table *s_create(serpens_nf_ctx *ctx, const char *name, uint32_t flags, uint32_t ks, uint32_t vs,
                                   uint64_t cap)
    {
        MockHost *h = static_cast<Ctx *>(ctx->host_private)->host;
        auto [it, fresh] = h->_tables.try_emplace(name);
        MockTable &t = it->second;
        if (fresh) {
            t.name = name, t.flags = flags, t.key_size = ks, t.value_size = vs, t.capacity = cap;
        } else if (t.flags != flags || t.key_size != ks || t.value_size != vs || t.capacity != cap) {
            return nullptr;
        }
        if (ks == 0 || ks > 64 || vs == 0 || cap == 0) {
            return nullptr;
        }
        auto &hd = h->_handles.emplace_back(std::make_unique<MockHandle>(MockHandle{h, &t, ctx->instance_id}));
        if (t.global_write() && !(t.active & (1ull << ctx->instance_id))) {
            t.active |= 1ull << ctx->instance_id;
            for (auto &[k, cells] : t.entries) {
                if (t.release()) {
                    h->rebalance(t, k);
                } else {
                    cells[1 + ctx->instance_id] = cells[0];
                }
            }
        }
        return reinterpret_cast<serpens_table *>(hd.get());
    }

    static Bytes key_of(const MockTable &t, const void *key)
    {
        auto *p = static_cast<const uint8_t *>(key);
        return Bytes(p, p + t.key_size);
    }

    static int s_get(serpens_table *th, const void *key, void *out)
    {
        MockHandle &h = handle(th);
        ++h.table->gets;
        auto it = h.table->entries.find(key_of(*h.table, key));
        if (it == h.table->entries.end()) {
            return SERPENS_ENOENT;
        }
        const Bytes &v = h.table->global_write() ? it->second[1 + h.instance] : it->second[0];
        std::memcpy(out, v.data(), v.size());
        return SERPENS_OK;
    }
    static int s_put(serpens_table *th, const void *key, const void *value)
    {
        MockHandle &h = handle(th);
        MockTable &t = *h.table;
        ++t.puts;
        Bytes k = key_of(t, key);
        auto it = t.entries.find(k);
        if (it == t.entries.end()) {
            if (t.entries.size() >= t.capacity) {
                return SERPENS_ENOSPC;
            }
            std::size_t cells = t.global_write() ? 1 + kMockMaxInstances : 1;
            it = t.entries.emplace(k, std::vector<Bytes>(cells, Bytes(t.value_size, 0))).first;
            if (!t.global_write()) {
                t.slot_key.resize(t.capacity);
                uint64_t free = t.fresh_slot;
                if (t.freed_slots.empty()) {
                    ++t.fresh_slot;
                } else {
                    free = t.freed_slots.back();
                    t.freed_slots.pop_back();
                }
                t.slot_key[free] = k;
                t.slot_of[k] = free;
            }
        }
        auto *p = static_cast<const uint8_t *>(value);
        it->second[t.global_write() ? 1 + h.instance : 0].assign(p, p + t.value_size);
        return SERPENS_OK;
    }
    static int s_delete(serpens_table *th, const void *key)
    {
        MockTable &t = *handle(th).table;
        const Bytes k = key_of(t, key);
        if (auto it = t.slot_of.find(k); it != t.slot_of.end()) {
            t.slot_key[it->second].clear();
            t.freed_slots.push_back(it->second);
            t.slot_of.erase(it);
        }
        return t.entries.erase(k) ? SERPENS_OK : SERPENS_ENOENT;
    }
    // Per-flow read-modify-write of uint64 words (ABI 1.3).
    static uint64_t s_update_bulk(serpens_table *th, const void *keys, uint32_t n, const uint64_t *rows,
                                  const uint8_t *ops, void *out)
    {
        MockHandle &h = handle(th);
        MockTable &t = *h.table;
        if (t.global_write() || !(t.flags & SERPENS_STATE_WRITE) || t.value_size % 8 != 0) {
            return 0;
        }
        ++h.host->bulk_updates;
        const std::size_t words = t.value_size / 8;
        uint64_t mask = 0;
        for (uint32_t i = 0; i < n && i < 64; ++i) {
            const auto *key = static_cast<const uint8_t *>(keys) + std::size_t{i} * t.key_size;
            std::vector<uint64_t> v(rows + i * words, rows + (i + 1) * words);
            auto it = t.entries.find(key_of(t, key));
            if (it != t.entries.end()) {
                for (std::size_t w = 0; w < words; ++w) {
                    uint64_t old;
                    std::memcpy(&old, it->second[0].data() + 8 * w, 8);
                    v[w] = ops[w] == SERPENS_WORD_ADD ? old + v[w] : ops[w] == SERPENS_WORD_SET ? v[w] : old;
                }
            }
            if (s_put(th, key, v.data()) != SERPENS_OK) {
                continue;
            }
            if (out != nullptr) {
                std::memcpy(static_cast<uint8_t *>(out) + i * t.value_size, v.data(), t.value_size);
            }
            mask |= 1ull << i;
        }
        return mask;
    }
    static uint64_t s_slots(serpens_table *th) { return handle(th).table->capacity; }
    static int s_scan(serpens_table *th, uint64_t *cursor, uint32_t max_slots, void *key_out, void *value_out)
    {
        MockTable &t = *handle(th).table;
        if (t.global_write() || t.capacity == 0) {
            return SERPENS_ENOTSUP;
        }
        t.slot_key.resize(t.capacity);
        uint64_t i = *cursor % t.capacity;
        for (uint64_t n = 0; n < std::min<uint64_t>(max_slots, t.capacity); ++n, i = (i + 1) % t.capacity) {
            const Bytes &k = t.slot_key[i];
            if (!k.empty()) {
                std::memcpy(key_out, k.data(), k.size());
                std::memcpy(value_out, t.entries.at(k)[0].data(), t.value_size);
                *cursor = (i + 1) % t.capacity;
                return SERPENS_OK;
            }
        }
        *cursor = i;
        return SERPENS_ENOENT;
    }
    static uint64_t s_bulk(serpens_table *th, const void *keys, uint32_t n, void *values)
    {
        MockHandle &h = handle(th);
        ++h.host->bulk_lookups;
        ++h.table->bulk_calls;
        uint64_t mask = 0;
        for (uint32_t i = 0; i < n && i < 64; ++i) {
            if (s_get(th, static_cast<const uint8_t *>(keys) + std::size_t{i} * h.table->key_size,
                      static_cast<uint8_t *>(values) + std::size_t{i} * h.table->value_size) == SERPENS_OK) {
                mask |= 1ull << i;
            }
        }
        return mask;
    }

    // EVENTUAL: adds uint64 rows to this instance's replica (ABI 1.1).
    static uint64_t all_rows(uint32_t n) { return n >= 64 ? ~0ull : (1ull << n) - 1; }

    // ABI 1.4: the 1.3 call with its refusals told apart from a full table.
    static int s_update_bulk_v2(serpens_table *th, const void *keys, uint32_t n, const uint64_t *rows,
                                const uint8_t *ops, void *out, uint64_t *written)
    {
        if (written == nullptr) {
            return SERPENS_EINVAL;
        }
        *written = 0;
        if (n > 64 || rows == nullptr || ops == nullptr) {
            return SERPENS_EINVAL;
        }
        MockTable &t = *handle(th).table;
        if (t.global_write() || !(t.flags & SERPENS_STATE_WRITE) || t.value_size % 8 != 0) {
            return SERPENS_ENOTSUP;
        }
        *written = s_update_bulk(th, keys, n, rows, ops, out);
        return *written == all_rows(n) ? SERPENS_OK : SERPENS_ENOSPC;
    }

    static int s_add_bulk_v2(serpens_table *th, const void *keys, uint32_t n, const uint64_t *deltas,
                             uint64_t *written)
    {
        if (written == nullptr) {
            return SERPENS_EINVAL;
        }
        *written = 0;
        if (n > 64 || deltas == nullptr) {
            return SERPENS_EINVAL;
        }
        MockHandle &h = handle(th);
        MockTable &t = *h.table;
        if (!t.global_write() || t.release() || t.value_size % 8 != 0) {
            return SERPENS_ENOTSUP;
        }
        if (!(t.active & (1ull << h.instance))) {
            return SERPENS_EINVAL;
        }
        *written = s_add_bulk(th, keys, n, deltas);
        return *written == all_rows(n) ? SERPENS_OK : SERPENS_ENOSPC;
    }

    static uint64_t s_add_bulk(serpens_table *th, const void *keys, uint32_t n, const uint64_t *deltas)
    {
        MockHandle &h = handle(th);
        MockTable &t = *h.table;
        if (!t.global_write() || t.release() || t.value_size % 8 != 0 || !(t.active & (1ull << h.instance))) {
            return 0;
        }
        ++h.host->bulk_adds;
        uint64_t mask = 0;
        const std::size_t words = t.value_size / 8;
        for (uint32_t i = 0; i < n && i < 64; ++i) {
            Bytes k = key_of(t, static_cast<const uint8_t *>(keys) + std::size_t{i} * t.key_size);
            auto it = t.entries.find(k);
            if (it == t.entries.end()) {
                if (t.entries.size() >= t.capacity) {
                    continue;
                }
                it = t.entries.emplace(k, std::vector<Bytes>(1 + kMockMaxInstances, Bytes(t.value_size, 0))).first;
            }
            Bytes &cell = it->second[1 + h.instance];
            for (std::size_t w = 0; w < words; ++w) {
                uint64_t v;
                std::memcpy(&v, cell.data() + 8 * w, 8);
                v += deltas[i * words + w];
                std::memcpy(cell.data() + 8 * w, &v, 8);
            }
            mask |= 1ull << i;
        }
        return mask;
    }

    void rebalance(MockTable &t, const Bytes &k)
    {
        auto &cells = t.entries.at(k);
        Bytes whole(t.value_size, 0);
        for (auto &c : cells) {
            for (std::size_t i = 0; i < whole.size(); ++i) {
                whole[i] |= c[i];
            }
            std::fill(c.begin(), c.end(), 0);
        }
        std::vector<uint32_t> act;
        for (uint32_t i = 0; i < kMockMaxInstances; ++i) {
            if (t.active & (1ull << i)) {
                act.push_back(i);
            }
        }
        if (act.empty()) {
            cells[0] = whole;
            return;
        }
        uint64_t total = 0;
        for (uint8_t b : whole) {
            total += static_cast<uint64_t>(__builtin_popcount(b));
        }
        // Deal bits in ascending order: part j gets total/n (+1 for the first total%n).
        std::size_t j = 0;
        uint64_t quota = total / act.size() + (0 < total % act.size() ? 1 : 0);
        for (std::size_t bit = 0; bit < whole.size() * 8; ++bit) {
            if (!(whole[bit / 8] & (1u << (bit % 8)))) {
                continue;
            }
            while (quota == 0 && j + 1 < act.size()) {
                ++j;
                quota = total / act.size() + (j < total % act.size() ? 1 : 0);
            }
            cells[1 + act[j]][bit / 8] |= static_cast<uint8_t>(1u << (bit % 8));
            --quota;
        }
    }

    void fold(MockTable &t, const Bytes &k, std::vector<Bytes> &cells, Bytes &out)
    {
        std::vector<void *> parts;
        for (uint32_t i = 0; i < kMockMaxInstances; ++i) {
            if (t.active & (1ull << i)) {
                parts.push_back(cells[1 + i].data());
            }
        }
        if (_desc->merge != nullptr) {
            serpens_state_hook_args a{};
            a.struct_size = sizeof a;
            a.n = static_cast<uint32_t>(parts.size());
            a.table = t.name.c_str();
            a.key = k.data();
            a.key_size = t.key_size;
            a.value_size = t.value_size;
            a.whole = cells[0].data();
            a.parts = parts.data();
            a.out = out.data();
            REQUIRE(_desc->merge(&_ctxs.front()->pub, &a) == SERPENS_OK);
            return;
        }
        REQUIRE(t.value_size % 8 == 0);
        for (uint32_t w = 0; w < t.value_size / 8; ++w) {
            uint64_t g, v;
            std::memcpy(&g, cells[0].data() + 8 * w, 8);
            v = g;
            for (void *p : parts) {
                uint64_t r;
                std::memcpy(&r, static_cast<uint8_t *>(p) + 8 * w, 8);
                v += r - g;
            }
            std::memcpy(out.data() + 8 * w, &v, 8);
        }
    }

    void merge_eventual(MockTable &t, const Bytes &k)
    {
        auto &cells = t.entries.at(k);
        Bytes out(t.value_size, 0);
        fold(t, k, cells, out);
        cells[0] = out;
        for (uint32_t i = 0; i < kMockMaxInstances; ++i) {
            if (t.active & (1ull << i)) {
                cells[1 + i] = out;
            }
        }
    }

    static int s_split(serpens_table *th, const void *key)
    {
        MockHandle &h = handle(th);
        MockHost &m = *h.host;
        ++m.splits;
        Bytes k = key_of(*h.table, key);
        if (!h.table->global_write()) {
            return SERPENS_EINVAL;
        }
        if (!h.table->entries.count(k)) {
            return SERPENS_ENOENT;
        }
        if (h.table->release()) {
            m.rebalance(*h.table, k);
        } else {
            m.merge_eventual(*h.table, k);
        }
        return SERPENS_OK;
    }
    static int s_merge(serpens_table *th, const void *key)
    {
        MockHandle &h = handle(th);
        ++h.host->merges;
        return s_split(th, key);
    }
    static int s_update(serpens_table *th, const void *key) { return s_split(th, key); }
    static int s_timer(serpens_table *th, const void *key, uint64_t period)
    {
        MockHandle &h = handle(th);
        if (!h.table->global_write()) {
            return SERPENS_EINVAL;
        }
        h.host->null_key_timers |= key == nullptr;
        h.host->timers.emplace_back(h.table->name, period);
        return SERPENS_OK;
    }
    static int s_trigger(serpens_table *th, const void *key)
    {
        MockHandle &h = handle(th);
        ++h.host->triggers;
        int rc = s_split(th, key);
        --h.host->splits;
        if (rc != SERPENS_OK || !h.table->release()) {
            return rc;
        }
        const Bytes &mine = h.table->entries.at(key_of(*h.table, key))[1 + h.instance];
        for (uint8_t b : mine) {
            if (b) {
                return SERPENS_OK;
            }
        }
        return SERPENS_ENOSPC;
    }
    static uint64_t *s_counter(serpens_nf_ctx *ctx, const char *name)
    {
        auto &m = static_cast<Ctx *>(ctx->host_private)->counters;
        if (m.size() >= 64 && !m.count(name)) {
            return nullptr; // the real host's limit
        }
        return &m[name];
    }

    const serpens_nf_descriptor *_desc;
    serpens_host_api _api{};
    std::string _dir, _config_file;
    std::unique_ptr<serpens_config> _config;
    std::map<std::string, MockTable> _tables;
    std::vector<std::unique_ptr<MockHandle>> _handles;
    std::vector<std::unique_ptr<Ctx>> _ctxs;
    uint64_t _now = 0;
};

// Files a rules or signatures file must not be, each with what init must log:
// /dev/zero (endless), a directory, a FIFO nobody writes to (opening it must
// not block) and a sparse file one byte over SERPENS_CONFIG_FILE_MAX.
struct BadFile {
    std::string path;
    std::string logged;
};

inline std::vector<BadFile> bad_config_files(MockHost &h)
{
    std::string fifo = h.dir() + "/fifo.rules";
    if (mkfifo(fifo.c_str(), 0600) != 0) {
        throw std::runtime_error("mkfifo " + fifo);
    }
    std::string huge = h.write("huge.rules", "");
    std::filesystem::resize_file(huge, SERPENS_CONFIG_FILE_MAX + 1);
    std::filesystem::create_directory(h.dir() + "/dir.rules");
    return {
        {"/dev/zero", "/dev/zero: is a character device, expected a regular file"},
        {h.dir() + "/dir.rules", "dir.rules: is a directory, expected a regular file"},
        {fifo, "fifo.rules: is a FIFO, expected a regular file"},
        {huge, "huge.rules: 67108865 bytes, over the limit of 67108864 bytes"},
    };
}

// ---------------------------------------------------------------------------
// Byte order and checksums for building and checking frames
// ---------------------------------------------------------------------------

inline uint16_t rd16(const uint8_t *p) { return serpens_ld_be16(p); }
inline uint32_t rd32(const uint8_t *p) { return serpens_ld_be32(p); }
inline void wr16(uint8_t *p, uint16_t v) { serpens_st_be16(p, v); }
inline void wr32(uint8_t *p, uint32_t v) { serpens_st_be32(p, v); }

// serpens_csum as a number, for wr16 (the sum is of words as in memory).
inline uint16_t csum(const uint8_t *p, std::size_t n)
{
    uint8_t b[2];
    serpens_st16(b, serpens_csum(p, n));
    return rd16(b);
}

// The TCP/UDP checksum of an IPv4 packet's L4 bytes, as a number for wr16;
// 0 when a correct checksum is in place.
inline uint16_t l4_csum(const uint8_t *ip, const uint8_t *l4, std::size_t l4len)
{
    uint8_t b[2];
    const auto len = static_cast<uint32_t>(l4len);
    serpens_st16(b, serpens_csum_fold(serpens_csum_add(serpens_csum_pseudo(ip, 0, ip[9], len), l4, l4len)));
    return rd16(b);
}

// ---------------------------------------------------------------------------
// Frames by address text, IPv4 or IPv6
// ---------------------------------------------------------------------------

namespace text_frames {

struct Flow {
    bool v6 = false;
    std::string src = "10.0.0.1", dst = "192.0.2.1";
    uint8_t proto = 6;
    uint16_t sport = 1234, dport = 80;
};

Bytes ip_bytes(const std::string &s, bool v6);

// Ethernet + IPv4/IPv6 + TCP/UDP (or a bare L4 of other protocols) + payload.
inline Bytes frame(const Flow &f, const std::string &payload = "", uint8_t tcp_flags = 0x18)
{
    Bytes l4;
    if (f.proto == 6) {
        l4.assign(20, 0);
        l4[12] = 0x50;
        l4[13] = tcp_flags;
        l4[14] = 0xff;
    } else if (f.proto == 17) {
        l4.assign(8, 0);
        uint16_t ulen = static_cast<uint16_t>(8 + payload.size());
        l4[4] = static_cast<uint8_t>(ulen >> 8);
        l4[5] = static_cast<uint8_t>(ulen);
    } else if (f.proto == 1 || f.proto == 58) {
        l4.assign(8, 0);
        l4[0] = f.proto == 1 ? 8 : 128;
    }
    if (f.proto == 6 || f.proto == 17) {
        l4[0] = static_cast<uint8_t>(f.sport >> 8);
        l4[1] = static_cast<uint8_t>(f.sport);
        l4[2] = static_cast<uint8_t>(f.dport >> 8);
        l4[3] = static_cast<uint8_t>(f.dport);
    }
    l4.insert(l4.end(), payload.begin(), payload.end());
    Bytes out = {0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0, 0};
    Bytes s = ip_bytes(f.src, f.v6), d = ip_bytes(f.dst, f.v6);
    if (!f.v6) {
        out[12] = 0x08;
        Bytes ip(20, 0);
        ip[0] = 0x45;
        uint16_t total = static_cast<uint16_t>(20 + l4.size());
        ip[2] = static_cast<uint8_t>(total >> 8);
        ip[3] = static_cast<uint8_t>(total);
        ip[8] = 64;
        ip[9] = f.proto;
        std::memcpy(&ip[12], s.data(), 4);
        std::memcpy(&ip[16], d.data(), 4);
        serpens_st16(&ip[10], serpens_csum(ip.data(), 20));
        out.insert(out.end(), ip.begin(), ip.end());
    } else {
        out[12] = 0x86;
        out[13] = 0xdd;
        Bytes ip(40, 0);
        ip[0] = 0x60;
        ip[4] = static_cast<uint8_t>(l4.size() >> 8);
        ip[5] = static_cast<uint8_t>(l4.size());
        ip[6] = f.proto;
        ip[7] = 64;
        std::memcpy(&ip[8], s.data(), 16);
        std::memcpy(&ip[24], d.data(), 16);
        out.insert(out.end(), ip.begin(), ip.end());
    }
    out.insert(out.end(), l4.begin(), l4.end());
    return out;
}

inline Flow reverse(Flow f)
{
    std::swap(f.src, f.dst);
    std::swap(f.sport, f.dport);
    return f;
}

inline Bytes ip_bytes(const std::string &s, bool v6)
{
    Bytes b(v6 ? 16 : 4);
    if (inet_pton(v6 ? AF_INET6 : AF_INET, s.c_str(), b.data()) != 1) {
        throw std::runtime_error("bad address " + s);
    }
    return b;
}

} // namespace text_frames

// ---------------------------------------------------------------------------
// IPv4 frames by number, and a decoder independent of NF and parser
// ---------------------------------------------------------------------------

namespace ipv4_frames {

inline uint32_t ip4(const char *text)
{
    unsigned a, b, c, d;
    if (std::sscanf(text, "%u.%u.%u.%u", &a, &b, &c, &d) != 4) {
        throw std::invalid_argument(text);
    }
    return (a << 24) | (b << 16) | (c << 8) | d;
}

inline std::string ip4_str(uint32_t ip)
{
    return std::to_string(ip >> 24) + "." + std::to_string((ip >> 16) & 255) + "." + std::to_string((ip >> 8) & 255) +
           "." + std::to_string(ip & 255);
}

struct Flow {
    uint8_t proto; // 6, 17, 1 (echo: sport is the id, icmp_type 8 or 0)
    uint32_t src, dst;
    uint16_t sport, dport;
    uint8_t icmp_type = 8;
    uint8_t tcp_flags = 0x10; // ACK
};

// Ethernet + IPv4 + TCP/UDP/ICMP echo with `payload` bytes and correct checksums.
inline Bytes frame(const Flow &f, std::size_t payload = 16, bool udp_zero_csum = false)
{
    std::size_t l4len = (f.proto == 6 ? 20 : 8) + payload;
    Bytes b(14 + 20 + l4len, 0);
    uint8_t *e = b.data();
    e[0] = 0x02, e[5] = 0x02, e[6] = 0x02, e[11] = 0x01;
    wr16(e + 12, 0x0800);
    uint8_t *ip = e + 14;
    ip[0] = 0x45;
    wr16(ip + 2, static_cast<uint16_t>(20 + l4len));
    wr16(ip + 4, 0x4242);
    wr16(ip + 6, 0x4000);
    ip[8] = 64;
    ip[9] = f.proto;
    wr32(ip + 12, f.src);
    wr32(ip + 16, f.dst);
    wr16(ip + 10, csum(ip, 20));
    uint8_t *l4 = ip + 20;
    for (std::size_t i = 0; i < payload; ++i) {
        l4[l4len - payload + i] = static_cast<uint8_t>(i * 7 + 3);
    }
    if (f.proto == 6) {
        wr16(l4, f.sport), wr16(l4 + 2, f.dport);
        wr32(l4 + 4, 1000), wr32(l4 + 8, 2000);
        l4[12] = 0x50, l4[13] = f.tcp_flags;
        wr16(l4 + 14, 65535);
        wr16(l4 + 16, l4_csum(ip, l4, l4len));
    } else if (f.proto == 17) {
        wr16(l4, f.sport), wr16(l4 + 2, f.dport);
        wr16(l4 + 4, static_cast<uint16_t>(l4len));
        uint16_t c = l4_csum(ip, l4, l4len);
        wr16(l4 + 6, udp_zero_csum ? 0 : (c == 0 ? 0xffff : c));
    } else {
        l4[0] = f.icmp_type;
        wr16(l4 + 4, f.sport), wr16(l4 + 6, 1);
        wr16(l4 + 2, csum(l4, l4len));
    }
    return b;
}

// What a frame says, decoded independently of the NF and of the host parser.
struct Decoded {
    uint8_t proto = 0;
    uint32_t src = 0, dst = 0;
    uint16_t sport = 0, dport = 0; // ICMP: the echo id in both
    bool ip_ok = false, l4_ok = false;
};

inline Decoded decode(const Bytes &b)
{
    Decoded d;
    const uint8_t *ip = b.data() + 14;
    std::size_t ihl = (ip[0] & 15u) * 4u, total = rd16(ip + 2);
    d.proto = ip[9];
    d.src = rd32(ip + 12), d.dst = rd32(ip + 16);
    d.ip_ok = csum(ip, ihl) == 0;
    const uint8_t *l4 = ip + ihl;
    std::size_t l4len = total - ihl;
    if (d.proto == 6 || d.proto == 17) {
        d.sport = rd16(l4), d.dport = rd16(l4 + 2);
        d.l4_ok = (d.proto == 17 && rd16(l4 + 6) == 0) || l4_csum(ip, l4, l4len) == 0;
    } else if (d.proto == 1) {
        d.sport = d.dport = rd16(l4 + 4);
        d.l4_ok = csum(l4, l4len) == 0;
    }
    return d;
}

// Packets in plain memory with views filled by the host's parser.
struct Packets {
    std::vector<Bytes> frames;
    std::vector<serpens_pkt> views;
    std::vector<uint8_t> ports;

    void add(Bytes f) { frames.push_back(std::move(f)); }
    // Call after the last add(): vectors no longer move.
    std::vector<serpens_pkt> &parse()
    {
        views.assign(frames.size(), serpens_pkt{});
        for (std::size_t i = 0; i < frames.size(); ++i) {
            serpens::net::FlowKey key;
            views[i].data = frames[i].data();
            views[i].len = static_cast<uint32_t>(frames[i].size());
            serpens::net::parse_packet(views[i], key);
        }
        return views;
    }
    bool dropped(std::size_t i) const { return ports.at(i) == SERPENS_PORT_DROP; }
};

} // namespace ipv4_frames

} // namespace nfmock
