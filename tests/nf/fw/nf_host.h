#pragma once
// A mock host for the fw, ids and vpn unit tests: an in-test serpens_host_api
// whose per-flow state API is a std::unordered_map behind create_table /
// get / put / delete (tables outlive contexts, so "restart an instance" is
// "fini, then init a new context on the same MockHost").  Config getters are
// the host's real ones over a TOML text, so config_where gives real
// file:line:col; packets are plain memory with 128 bytes of headroom, parsed
// by the host's parser; log lines and counters are kept for the tests.
// The plugin under test is the real .so, loaded by dlopen.

#include "config/plugin_config.h"
#include "net/parse.h"
#include "../run_batch.h"

#include <serpens/nf.h>
#include <serpens/nf_util.h>

#include <doctest/doctest.h>
#include <toml++/toml.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdarg>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace nfhost {

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

// ---- packets -------------------------------------------------------------

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
inline int pkt_trim(serpens_pkt *p, uint32_t n)
{
    auto *m = static_cast<Packet *>(p->handle);
    if (n > m->len) {
        return SERPENS_EINVAL;
    }
    m->len -= n;
    p->len = m->len;
    return SERPENS_OK;
}
inline int pkt_adj(serpens_pkt *p, uint32_t n)
{
    auto *m = static_cast<Packet *>(p->handle);
    if (n > m->len) {
        return SERPENS_EINVAL;
    }
    m->off += n;
    m->len -= n;
    p->data = m->buf + m->off;
    p->len = m->len;
    shift(p, -static_cast<int32_t>(n));
    return SERPENS_OK;
}

// ---- frames ----------------------------------------------------------------

inline uint16_t csum(const uint8_t *p, std::size_t n, uint32_t sum = 0)
{
    for (std::size_t i = 0; i + 1 < n; i += 2) {
        sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
    }
    if (n & 1) {
        sum += static_cast<uint32_t>(p[n - 1] << 8);
    }
    while (sum >> 16) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    return static_cast<uint16_t>(~sum);
}

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
        uint16_t c = csum(ip.data(), 20);
        ip[10] = static_cast<uint8_t>(c >> 8);
        ip[11] = static_cast<uint8_t>(c);
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

// ---- the mock host -----------------------------------------------------------

struct Table {
    std::string name;
    uint32_t flags = 0, key_size = 0, value_size = 0;
    uint64_t capacity = 0;
    std::unordered_map<std::string, std::string> entries;
    uint64_t gets = 0, puts = 0;
    uint64_t bulk_calls = 0; // get_state_bulk calls (their keys count in gets)
};

inline int table_get(serpens_table *t, const void *k, void *v)
{
    auto *tb = reinterpret_cast<Table *>(t);
    ++tb->gets;
    auto it = tb->entries.find(std::string(static_cast<const char *>(k), tb->key_size));
    if (it == tb->entries.end()) {
        return SERPENS_ENOENT;
    }
    std::memcpy(v, it->second.data(), tb->value_size);
    return SERPENS_OK;
}

class MockHost;

struct Ctx {
    serpens_nf_ctx pub{};
    MockHost *host = nullptr;
    std::map<std::string, uint64_t> counters; // node-based: stable addresses
    bool inited = false;
};

class MockHost {
public:
    explicit MockHost(const std::string &plugin_path, bool with_state = true) : _desc(load_plugin(plugin_path))
    {
        char tmpl[] = "/tmp/serpens-nf-test-XXXXXX";
        if (mkdtemp(tmpl) == nullptr) {
            throw std::runtime_error("mkdtemp");
        }
        _dir = tmpl;
        _api.struct_size = sizeof _api;
        _api.abi_major = SERPENS_ABI_MAJOR;
        _api.abi_minor = SERPENS_ABI_MINOR;
        _api.log = &MockHost::log_cb;
        _api.now_ns = [] { return uint64_t{1}; };
        serpens::config::install_config_api(_api);
        if (with_state) {
            _api.create_table = &MockHost::create_cb;
            _api.get_state = table_get;
            _api.put_state = [](serpens_table *t, const void *k, const void *v) {
                auto *tb = reinterpret_cast<Table *>(t);
                ++tb->puts;
                std::string key(static_cast<const char *>(k), tb->key_size);
                if (tb->entries.size() >= tb->capacity && !tb->entries.count(key)) {
                    return SERPENS_ENOSPC;
                }
                tb->entries[key] = std::string(static_cast<const char *>(v), tb->value_size);
                return SERPENS_OK;
            };
            _api.get_state_bulk = [](serpens_table *t, const void *keys, uint32_t n, void *values) {
                auto *tb = reinterpret_cast<Table *>(t);
                ++tb->bulk_calls;
                uint64_t hits = 0;
                for (uint32_t i = 0; i < n && i < 64; ++i) {
                    const void *k = static_cast<const char *>(keys) + std::size_t{i} * tb->key_size;
                    void *v = static_cast<char *>(values) + std::size_t{i} * tb->value_size;
                    hits |= uint64_t{table_get(t, k, v) == SERPENS_OK} << i;
                }
                return hits;
            };
            _api.delete_state = [](serpens_table *t, const void *k) {
                auto *tb = reinterpret_cast<Table *>(t);
                return tb->entries.erase(std::string(static_cast<const char *>(k), tb->key_size)) ? SERPENS_OK
                                                                                                   : SERPENS_ENOENT;
            };
        }
        _api.pkt_prepend = pkt_prepend;
        _api.pkt_append = pkt_append;
        _api.pkt_trim = pkt_trim;
        _api.pkt_adj = pkt_adj;
        _api.counter = [](serpens_nf_ctx *c, const char *name) -> uint64_t * {
            auto *ctx = static_cast<Ctx *>(c->host_private);
            if (ctx->counters.size() >= 64 && !ctx->counters.count(name)) {
                return nullptr; // the real host's limit
            }
            return &ctx->counters[name];
        };
        set_config("");
    }
    ~MockHost()
    {
        for (auto &c : _ctxs) {
            if (c->inited) {
                fini(*c);
            }
        }
        std::error_code ec;
        std::filesystem::remove_all(_dir, ec);
    }

    const std::string &dir() const { return _dir; }
    std::string write(const std::string &name, const std::string &text)
    {
        std::string p = _dir + "/" + name;
        std::ofstream(p, std::ios::binary) << text;
        return p;
    }
    // The NF's config table; line 1 of the chain file is "[config]".
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

    // A new NF context (instance `instance`) and its init's return code.
    int init(Ctx *&out, uint32_t instance = 0)
    {
        auto c = std::make_unique<Ctx>();
        c->pub.struct_size = sizeof c->pub;
        c->pub.instance_id = instance;
        c->pub.host = &_api;
        c->pub.chain_name = "test";
        c->pub.nf_name = _desc->name;
        c->pub.host_private = c.get();
        c->host = this;
        c->inited = true;
        out = c.get();
        _ctxs.push_back(std::move(c));
        return _desc->init(&out->pub, _config.get());
    }
    void fini(Ctx &c)
    {
        if (_desc->fini != nullptr) {
            _desc->fini(&c.pub);
        }
        c.inited = false;
    }

    // Runs one batch (all packets labelled for this NF) and returns the ports.
    std::vector<uint8_t> run(Ctx &c, std::vector<Packet *> pkts, uint64_t now_ns = 1'000'000'000)
    {
        std::vector<serpens_pkt> views;
        for (Packet *p : pkts) {
            views.push_back(p->view);
        }
        std::vector<uint8_t> ports;
        nfbatch::run_batch(_desc, &c.pub, views, ports, now_ns);
        for (std::size_t i = 0; i < pkts.size(); ++i) {
            pkts[i]->view = views[i];
        }
        return ports;
    }
    uint8_t run1(Ctx &c, Packet &p, uint64_t now_ns = 1'000'000'000) { return run(c, {&p}, now_ns)[0]; }

    const std::vector<std::string> &logs() const { return _logs; }
    bool logged(const std::string &needle) const
    {
        for (const auto &l : _logs) {
            if (l.find(needle) != std::string::npos) {
                return true;
            }
        }
        return false;
    }
    std::string all_logs() const
    {
        std::string s;
        for (const auto &l : _logs) {
            s += l + "\n";
        }
        return s;
    }
    Table *table(const std::string &name) { return _tables.count(name) ? _tables[name].get() : nullptr; }
    const serpens_nf_descriptor *desc() const { return _desc; }
    // The config as the host keeps it: what the NF read is recorded there.
    const serpens_config &config() const { return *_config; }
    serpens_host_api &api() { return _api; }

private:
    static void log_cb(const serpens_nf_ctx *c, int level, const char *fmt, ...)
    {
        char buf[2048];
        va_list ap;
        va_start(ap, fmt);
        std::vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        static_cast<Ctx *>(c->host_private)->host->_logs.push_back(std::to_string(level) + " " + buf);
    }
    static serpens_table *create_cb(serpens_nf_ctx *c, const char *name, uint32_t flags, uint32_t ks, uint32_t vs,
                                    uint64_t cap)
    {
        MockHost *h = static_cast<Ctx *>(c->host_private)->host;
        auto &slot = h->_tables[name];
        if (slot) {
            if (slot->flags != flags || slot->key_size != ks || slot->value_size != vs || slot->capacity != cap) {
                return nullptr;
            }
        } else {
            slot = std::make_unique<Table>();
            *slot = Table{name, flags, ks, vs, cap, {}, 0, 0, 0};
        }
        return reinterpret_cast<serpens_table *>(slot.get());
    }

    const serpens_nf_descriptor *_desc;
    serpens_host_api _api{};
    std::string _dir, _config_file;
    std::unique_ptr<serpens_config> _config;
    std::vector<std::unique_ptr<Ctx>> _ctxs;
    std::map<std::string, std::unique_ptr<Table>> _tables;
    std::vector<std::string> _logs;
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

inline Bytes ip_bytes(const std::string &s, bool v6)
{
    Bytes b(v6 ? 16 : 4);
    if (inet_pton(v6 ? AF_INET6 : AF_INET, s.c_str(), b.data()) != 1) {
        throw std::runtime_error("bad address " + s);
    }
    return b;
}

} // namespace nfhost
