#pragma once
// The mock host every NF unit test runs its plugin on: an in-test
// serpens_host_api around the real .so (loaded by dlopen), with
//  - config getters that are the host's real ones over a TOML text, so
//    config_where gives real file:line:col, and a scratch directory for the
//    files a config names;
//  - state on the host's real state layer (host/state): a StateStore in a
//    tmpfs scratch directory, one Executor for the NF and the host's own
//    state entries of serpens_host_api (a few wrapped to count calls for
//    the tests), so NFs are tested on the semantics they run on; the state
//    manager ticks before every batch at the batch's time, as the host's
//    control thread does between batches;
//  - counters: the host's own (NfContext's CounterBlock); log lines kept;
//  - packets: plain memory with headroom (Packet, for NFs that grow or cut
//    them; fenced under ASan) or a batch of frames (Packets), views filled
//    by the host's parser;
//    frame builders by address text (text_frames, IPv4 and IPv6) and by
//    number (ipv4_frames, with an independent decoder); checksums are
//    nf_util's, which tests/nf/util checks against RFC 1071.
// Contexts outlive fini: "restart an instance" is fini, then init again.

#include "config/plugin_config.h"
#include "core/burst.h"
#include "core/nf_context.h"
#include "net/parse.h"
#include "plugin/host_api.h"
#include "plugin/registry.h"
#include "state/executor.h"

#include <serpens/nf.h>
#include <serpens/nf_util.h>

#include <toml++/toml.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <sanitizer/asan_interface.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
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
// With `flows` (the chain's flow table, the NF's area at `flow_offset`),
// the packets are looked up first, as a chain instance does.
inline void run_batch(const serpens_nf_descriptor *desc, serpens_nf_ctx *ctx, std::vector<serpens_pkt> &pkts,
                      std::vector<uint8_t> &ports, uint64_t now, serpens::state::FlowTable *flows = nullptr,
                      uint32_t flow_offset = 0)
{
    std::vector<void *> entries(pkts.size());
    std::vector<uint8_t> flow_flags(pkts.size());
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
    if (flows != nullptr) {
        for (std::size_t i = 0; i < pkts.size(); i += serpens::max_burst) {
            const auto n = static_cast<uint32_t>(std::min<std::size_t>(serpens::max_burst, pkts.size() - i));
            flows->lookup_burst(&pkts[i], sizeof(serpens_pkt), n, now, &entries[i], &flow_flags[i]);
        }
        // A refused flow's packets reach the NF without an entry, as a
        // chain with flow_full = "pass" shows them, and without the host's flag.
        for (uint8_t &f : flow_flags) {
            f &= static_cast<uint8_t>(~serpens::state::flow_flag_refused);
        }
        b.flows = entries.data();
        b.flow_flags = flow_flags.data();
        b.flow_offset = flow_offset;
    }
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
        if (!frame.empty()) { // an empty vector's data() may be null
            std::memcpy(buf + off, frame.data(), frame.size());
        }
        reparse();
        fence();
    }
    ~Packet() { ASAN_UNPOISON_MEMORY_REGION(buf, capacity); }
    Packet(const Packet &) = delete; // the fence would make a copy of buf fault
    Packet &operator=(const Packet &) = delete;
    // Under AddressSanitizer the buffer around the frame is poisoned, so an
    // NF that touches a byte before or past its packet fails the test even
    // inside the buffer (a real mbuf has more data there).  The host API's
    // resizes move the fence with the frame.
    void fence()
    {
        ASAN_UNPOISON_MEMORY_REGION(buf, capacity);
        ASAN_POISON_MEMORY_REGION(buf, off);
        ASAN_POISON_MEMORY_REGION(buf + off + len, capacity - off - len);
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
    m->fence();
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
    m->fence();
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
    m->fence();
    return SERPENS_OK;
}
inline int pkt_trim(serpens_pkt *p, uint32_t n) { return pkt_cut(p, n, false); }
inline int pkt_adj(serpens_pkt *p, uint32_t n) { return pkt_cut(p, n, true); }

// ---------------------------------------------------------------------------
// The mock host
// ---------------------------------------------------------------------------

class MockHost;

// One table of the host's real state layer as a test inspects it, with the
// calls the NF made on it through this host's API table.
struct MockTable {
    serpens::state::Table *real = nullptr;
    uint64_t puts = 0;       // put_state calls
    uint64_t bulk_calls = 0; // get_state_bulk calls

    uint32_t flags() const { return real->flags(); }
    // Every live key with its cells: one value for per-flow and global/read
    // tables; for global/write the base (cell 0), then one cell per instance.
    std::map<Bytes, std::vector<Bytes>> entries() const
    {
        const uint32_t ks = real->key_size(), vs = real->value_size();
        const uint32_t n = serpens::state::is_global_write(real->kind()) ? real->cells() : 1;
        std::map<Bytes, std::vector<Bytes>> out;
        real->dump([&](const uint8_t *key, const uint8_t *values) {
            auto &cells = out[Bytes(key, key + ks)];
            for (uint32_t c = 0; c < n; ++c) {
                cells.emplace_back(values + std::size_t{c} * vs, values + std::size_t{c + 1} * vs);
            }
        });
        return out;
    }
};

// One NF context: the host's own NfContext (state and counters find it
// through host_private, as in a chain instance) plus the mock's bookkeeping.
// Contexts outlive fini, so "restart an instance" is fini, then init a new
// context of the same instance id on the same host.
struct Ctx : serpens::NfContext {
    MockHost *host = nullptr;
    bool initialised = false;

    // The counter's value; 0 when the NF never registered it.
    uint64_t counter(const std::string &name) const
    {
        std::size_t i = find_counter(name);
        return i < counters.size() ? counters.value(i) : 0;
    }
    bool has_counter(const std::string &name) const { return find_counter(name) < counters.size(); }
    // The counter's index in the host's CounterBlock; counters.size() when absent.
    std::size_t find_counter(const std::string &name) const
    {
        std::size_t i = 0;
        while (i < counters.size() && counters.name(i) != name) {
            ++i;
        }
        return i;
    }
};

class MockHost {
public:
    // The plugin .so at plugin_path; with_state false plays a host that
    // cannot create tables (create_table returns NULL, as when the state
    // directory is full).
    explicit MockHost(const std::string &plugin_path, bool with_state = true) : MockHost(load_plugin(plugin_path))
    {
        if (!with_state) {
            _api.create_table = [](serpens_nf_ctx *, const char *, uint32_t, uint32_t, uint32_t,
                                   uint64_t) -> serpens_table * { return nullptr; };
        }
    }
    explicit MockHost(const serpens_nf_descriptor *desc) : _desc(desc)
    {
        // tmpfs, as the host's own state root (/dev/shm/serpens/<host-id>),
        // or under $SERPENS_NFTEST_DIR: a runner that may be killed (the
        // fuzzers) names a directory it removes itself.
        const char *parent = std::getenv("SERPENS_NFTEST_DIR");
        std::string tmpl =
            std::string(parent != nullptr && *parent != '\0' ? parent : "/dev/shm") + "/serpens-nftest-XXXXXX";
        if (mkdtemp(tmpl.data()) == nullptr) {
            throw std::runtime_error("mkdtemp in " + tmpl + ": " + std::strerror(errno));
        }
        _dir = tmpl;
        set_store_options({});
        _real = serpens::make_host_api(serpens::PacketOps{pkt_prepend, pkt_append, pkt_trim, pkt_adj});
        _api = _real;
        _api.log = &MockHost::s_log;
        _api.now_ns = &MockHost::s_now;
        // The state calls tests count, each forwarding to the host's own.
        _api.put_state = &MockHost::s_put;
        _api.get_state_bulk = &MockHost::s_bulk;
        _api.update_state_bulk = &MockHost::s_update_bulk;
        _api.update_state_bulk_v2 = &MockHost::s_update_bulk_v2;
        _api.add_state_bulk = &MockHost::s_add_bulk;
        _api.add_state_bulk_v2 = &MockHost::s_add_bulk_v2;
        _api.timer = &MockHost::s_timer;
        _api.trigger = &MockHost::s_trigger;
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
        registry().erase(_ex);
        _store.reset();
        std::error_code ec;
        std::filesystem::remove_all(_dir, ec);
        if (current() == this) {
            current() = nullptr;
        }
    }
    MockHost(const MockHost &) = delete;
    MockHost &operator=(const MockHost &) = delete;

    static MockHost *&current()
    {
        static MockHost *h = nullptr;
        return h;
    }

    // A fresh state store with these options (root: under dir()), e.g. a
    // short per-flow idle expiry.  Before the first init.
    void set_store_options(serpens::state::StoreOptions o)
    {
        registry().erase(_ex);
        _tables.clear();
        o.root = _dir + "/state";
        _store.reset();
        _store = std::make_unique<serpens::state::StateStore>(o);
        _ex = &_store->executor("test", _desc->name);
        registry()[_ex] = this;
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
    // A scratch directory (on tmpfs) for files the config names and for the
    // state store; removed with the host.
    const std::string &dir() const { return _dir; }
    std::string write(const std::string &name, const std::string &text)
    {
        std::string p = _dir + "/" + name;
        std::ofstream(p, std::ios::binary) << text;
        return p;
    }
    // The config as the host keeps it: what the NF read is recorded there.
    const serpens_config &config() const { return *_config; }

    // A new context of instance `id`, and its init's return code.  As in a
    // chain instance, global/read tables are sealed once init succeeded.
    int init(Ctx *&out, uint32_t id = 0)
    {
        auto c = std::make_unique<Ctx>();
        c->desc = _desc;
        c->chain_name = "test";
        c->nf_name = _desc->name;
        c->executor = _ex;
        c->fill_public(&_api, id);
        c->flow_state_size = serpens::flow_state_size(*_desc);
        c->flow_visit_ms = serpens::flow_visit_ms(*_desc);
        c->host = this;
        c->initialised = true;
        out = c.get();
        _ctxs.push_back(std::move(c));
        out->in_init = true;
        int rc = _desc->init(&out->pub, _config.get());
        out->in_init = false;
        if (rc == SERPENS_OK) {
            _ex->seal();
            if (out->flow_state_size != 0 && _flows == nullptr) {
                // The chain's flow table, holding this NF's area only.
                serpens::state::FlowTableSpec spec;
                spec.chain = "test";
                spec.capacity = flow_capacity;
                spec.idle_timeout_ns = flow_idle_ns;
                spec.areas = {{_desc->name, out->flow_state_size, 0}};
                bool first = false;
                _flows = &_store->flow_table(spec, first);
                _flow_offset = _flows->spec().areas.front().offset;
            }
        }
        return rc;
    }
    // The chain's flow table (nullptr until an NF asked for per-flow state),
    // its size and idle timeout (set before the first init).
    serpens::state::FlowTable *flows() const noexcept { return _flows; }
    uint64_t flow_capacity = 65536;
    uint64_t flow_idle_ns = 300'000'000'000ull;
    // The NF's area in packet p's flow entry (nullptr: none).
    void *flow_area(const serpens_pkt &p)
    {
        if (_flows == nullptr) {
            return nullptr;
        }
        serpens_pkt view = p;
        void *entry = nullptr;
        uint8_t flags = 0;
        _flows->lookup_burst(&view, sizeof view, 1, _now, &entry, &flags);
        return entry != nullptr ? static_cast<uint8_t *>(entry) + _flow_offset : nullptr;
    }
    // The host's flow sweep over the whole table at `now_ns`, with the NF's
    // hooks (instance id's context): flow_visit on each entry (when the NF
    // visits them all, else on expiring ones), flow_expired on each flow
    // that goes.  Returns how many went.
    std::size_t expire_flows(uint64_t now_ns, uint32_t id = 0)
    {
        if (_flows == nullptr) {
            return 0;
        }
        static constexpr uint64_t all[4] = {~0ull, ~0ull, ~0ull, ~0ull};
        struct Hook {
            MockHost *host;
            Ctx *ctx;
            uint64_t now_ns;
            static void expired(void *self, uint8_t *entry) noexcept
            {
                auto *h = static_cast<Hook *>(self);
                const auto *d = h->host->_desc;
                if (serpens::has_descriptor_1_5(*d) && d->flow_expired != nullptr) {
                    d->flow_expired(&h->ctx->pub, entry + h->host->_flow_offset);
                }
            }
            static bool visit(void *self, uint8_t *entry, uint64_t idle_ns, bool expiring) noexcept
            {
                auto *h = static_cast<Hook *>(self);
                const serpens_flow_info info =
                    serpens::state::FlowTable::entry_info(entry, idle_ns, expiring, h->now_ns);
                return h->host->_desc->flow_visit(&h->ctx->pub, entry + h->host->_flow_offset, &info) ==
                       SERPENS_FLOW_KEEP;
            }
        } hook{this, &latest(id), now_ns};
        serpens::state::FlowSweepHooks hooks;
        if (serpens::has_descriptor_1_6(*_desc) && _desc->flow_visit != nullptr) {
            hooks.visit = &Hook::visit;
            hooks.visit_all = hook.ctx->flow_visit_ms != 0;
        }
        hooks.expired = &Hook::expired;
        hooks.arg = &hook;
        serpens::state::FlowSweepCursor cursor;
        std::size_t gone = 0;
        for (uint32_t p = 0; p < serpens::state::flow_parts * _flows->slots_per_part(); p += 2048) {
            gone += _flows->sweep(all, cursor, now_ns, 2048, hooks);
        }
        return gone;
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
    uint64_t counter(uint32_t id, const std::string &name) { return latest(id).counter(name); }
    bool has_counter(uint32_t id, const std::string &name) { return latest(id).has_counter(name); }

    // Scale-in, as a chain instance that stops: the state manager folds the
    // instance's global/write cells into the survivors (RELEASE: its free
    // items are re-split; EVENTUAL: its counts merged into the base), then
    // the NF's fini runs.
    void remove_instance(uint32_t id)
    {
        _ex->remove_instance(id);
        Ctx &c = latest(id);
        if (c.initialised) {
            fini(c);
        }
    }

    // The state manager's tick (timers due, pending triggers, idle per-flow
    // entries) at `now_ns`.  process() and run() tick at their batch's time
    // first, as the host's control thread ticks between batches.
    void tick(uint64_t now_ns) { _store->tick(now_ns); }

    void process(uint32_t id, std::vector<serpens_pkt> &pkts, std::vector<uint8_t> &ports, uint64_t now)
    {
        _now = now;
        tick(now);
        run_batch(_desc, ctx(id), pkts, ports, now, _flows, _flow_offset);
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
        tick(now_ns);
        run_batch(_desc, &c.pub, views, ports, now_ns, _flows, _flow_offset);
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

    // The NF's table `name` in the state store, or nullptr.
    MockTable *table(const std::string &name)
    {
        serpens::state::Table *t = _ex->find(name);
        if (t == nullptr) {
            return nullptr;
        }
        MockTable &m = _tables[name];
        m.real = t;
        return &m;
    }
    // The state manager's global value of a global/write key
    // (Executor::read_global): RELEASE the union of every cell, EVENTUAL the
    // base as of the last merge (merge_all first for the current total).
    Bytes global_value(const std::string &name, const Bytes &key)
    {
        serpens::state::Table &t = real_table(name);
        Bytes out(t.value_size(), 0);
        if (_ex->read_global(t, key.data(), out.data()) != SERPENS_OK) {
            throw std::runtime_error("read_global of table " + name + " failed");
        }
        return out;
    }
    // What a table-wide merge timer does when it fires: merges every key.
    void merge_all(const std::string &name)
    {
        if (_ex->merge(real_table(name), nullptr) != SERPENS_OK) {
            throw std::runtime_error("merge of table " + name + " failed");
        }
    }

    std::vector<std::string> logs;
    std::vector<std::pair<std::string, uint64_t>> timers; // table name, period: timer calls
    uint64_t triggers = 0, bulk_adds = 0, bulk_updates = 0, bulk_lookups = 0;
    bool null_key_timers = false; // a timer was set with key NULL (every key)

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
    serpens::state::Table &real_table(const std::string &name)
    {
        serpens::state::Table *t = _ex->find(name);
        if (t == nullptr) {
            throw std::runtime_error("no table " + name);
        }
        return *t;
    }

    // Each host's executor, so a shim finds the host of a table handle.
    static std::map<const serpens::state::Executor *, MockHost *> &registry()
    {
        // Never destroyed: a host that is itself static (fuzz-nf's) leaves it
        // at exit, after a function-local static would be gone.
        static auto *r = new std::map<const serpens::state::Executor *, MockHost *>;
        return *r;
    }
    static MockHost &of(serpens_table *t) { return *registry().at(serpens::state::from_abi(t)->executor); }
    MockTable &stats(serpens_table *t) { return _tables[std::string(serpens::state::from_abi(t)->table->name())]; }

    static void s_log(const serpens_nf_ctx *ctx, int level, const char *fmt, ...)
    {
        char buf[2048];
        va_list args;
        va_start(args, fmt);
        vsnprintf(buf, sizeof buf, fmt, args);
        va_end(args);
        // NF hooks log with the state manager's context, which has no host_private.
        MockHost *h = ctx->host_private != nullptr ? static_cast<Ctx *>(serpens::NfContext::of(ctx))->host : current();
        h->logs.push_back(std::to_string(level) + " " + buf);
    }
    static uint64_t s_now() { return current() ? current()->_now : 0; }

    // Counting shims: each counts, then calls the host's own entry.
    static int s_put(serpens_table *t, const void *key, const void *value)
    {
        MockHost &h = of(t);
        ++h.stats(t).puts;
        return h._real.put_state(t, key, value);
    }
    static uint64_t s_bulk(serpens_table *t, const void *keys, uint32_t n, void *values)
    {
        MockHost &h = of(t);
        ++h.bulk_lookups;
        ++h.stats(t).bulk_calls;
        return h._real.get_state_bulk(t, keys, n, values);
    }
    static uint64_t s_update_bulk(serpens_table *t, const void *keys, uint32_t n, const uint64_t *rows,
                                  const uint8_t *ops, void *out)
    {
        MockHost &h = of(t);
        ++h.bulk_updates;
        return h._real.update_state_bulk(t, keys, n, rows, ops, out);
    }
    static int s_update_bulk_v2(serpens_table *t, const void *keys, uint32_t n, const uint64_t *rows,
                                const uint8_t *ops, void *out, uint64_t *written)
    {
        MockHost &h = of(t);
        ++h.bulk_updates;
        return h._real.update_state_bulk_v2(t, keys, n, rows, ops, out, written);
    }
    static uint64_t s_add_bulk(serpens_table *t, const void *keys, uint32_t n, const uint64_t *deltas)
    {
        MockHost &h = of(t);
        ++h.bulk_adds;
        return h._real.add_state_bulk(t, keys, n, deltas);
    }
    static int s_add_bulk_v2(serpens_table *t, const void *keys, uint32_t n, const uint64_t *deltas, uint64_t *written)
    {
        MockHost &h = of(t);
        ++h.bulk_adds;
        return h._real.add_state_bulk_v2(t, keys, n, deltas, written);
    }
    static int s_timer(serpens_table *t, const void *key, uint64_t period)
    {
        MockHost &h = of(t);
        h.null_key_timers |= key == nullptr;
        h.timers.emplace_back(std::string(serpens::state::from_abi(t)->table->name()), period);
        return h._real.timer(t, key, period);
    }
    static int s_trigger(serpens_table *t, const void *key)
    {
        MockHost &h = of(t);
        ++h.triggers;
        return h._real.trigger(t, key);
    }

    const serpens_nf_descriptor *_desc;
    serpens_host_api _real{}; // the host's own table, as make_host_api builds it
    serpens_host_api _api{};  // what the NF gets: _real with the mock's log, clock and counting shims
    std::string _dir, _config_file;
    std::unique_ptr<serpens_config> _config;
    std::unique_ptr<serpens::state::StateStore> _store;
    serpens::state::Executor *_ex = nullptr;
    std::map<std::string, MockTable> _tables;
    std::vector<std::unique_ptr<Ctx>> _ctxs;
    uint64_t _now = 0;
    serpens::state::FlowTable *_flows = nullptr;
    uint32_t _flow_offset = 0;
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

// An ICMP (v4 type `type`) or ICMPv6 error from `from` to `to` with `code`,
// quoting the IP header and `quoted_l4` bytes of L4 of `offending` (a whole
// frame; a shorter one is quoted whole).
inline Bytes icmp_error(bool v6, const std::string &from, const std::string &to, uint8_t type, const Bytes &offending,
                        std::size_t quoted_l4 = 8, uint8_t code = 0)
{
    const std::size_t ip_len = v6 ? 40 : (offending[14] & 15u) * 4u;
    const std::size_t quote_len = std::min(ip_len + quoted_l4, offending.size() - 14);
    const std::string quote(offending.begin() + 14, offending.begin() + 14 + static_cast<long>(quote_len));
    Bytes b = frame({v6, from, to, static_cast<uint8_t>(v6 ? 58 : 1), 0, 0}, quote);
    b[14 + (v6 ? 40 : 20)] = type;
    b[14 + (v6 ? 40 : 20) + 1] = code;
    return b;
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
