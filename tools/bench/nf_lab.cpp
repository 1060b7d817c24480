#include "nf_lab.h"

#include "fixture.h"

#include "chain/compiled.h"
#include "chain/spec.h"
#include "core/error.h"
#include "net/parse.h"
#include "support/traffic.h"
#include "plugin/host_api.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#if SERPENS_BENCH_HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif

extern char **environ;

namespace serpens::bench {

namespace fs = std::filesystem;

// ---- scratch ---------------------------------------------------------------

ScratchDir::ScratchDir(const std::string &what)
{
    const char *tmpdir = std::getenv("TMPDIR");
    fs::path base = fs::is_directory("/dev/shm") ? fs::path("/dev/shm")
                                                 : fs::path(tmpdir != nullptr && *tmpdir ? tmpdir : "/tmp");
    std::string templ = (base / ("serpens-bench-" + what + "-XXXXXX")).string();
    if (mkdtemp(templ.data()) == nullptr) {
        throw Error("mkdtemp " + templ + ": " + std::strerror(errno));
    }
    _path = templ;
}

ScratchDir::~ScratchDir()
{
    std::error_code ec;
    fs::remove_all(_path, ec);
}

// ---- chains ----------------------------------------------------------------

std::string write_fw_rules(const fs::path &dir, uint32_t n)
{
    const fs::path path = dir / fmt::format("fw-{}.rules", n);
    if (fs::exists(path)) {
        return path.string();
    }
    std::ofstream out(path);
    out << "# serpens-bench: " << n << " rules; the traffic (198.18/16 <-> 198.19/16) matches none but the default\n";
    out << "default allow\n";
    // Rules in 10.0.0.0/8 and 172.16.0.0/12: never the generator's addresses.
    static const int src_len[] = {24, 16, 32, 20};
    static const int dst_len[] = {32, 24, 0, 16};
    for (uint32_t i = 1; i < n; ++i) {
        const int sl = src_len[i % 4];
        const int dl = dst_len[(i / 4) % 4];
        const uint32_t a = 0x0a000000u | ((i * 2654435761u) & 0x00ffffffu);
        const uint32_t srcmask = sl == 0 ? 0 : ~0u << (32 - sl);
        const uint32_t b = 0xac100000u | ((i * 40503u) & 0x000fffffu);
        const uint32_t dstmask = dl == 0 ? 0 : ~0u << (32 - dl);
        auto ip = [](uint32_t v) { return fmt::format("{}.{}.{}.{}", v >> 24, (v >> 16) & 255, (v >> 8) & 255, v & 255); };
        out << fmt::format("{} proto={} src={}/{}", i % 3 ? "deny " : "allow", i % 2 ? "tcp" : "udp", ip(a & srcmask), sl);
        if (dl > 0) {
            out << fmt::format(" dst={}/{}", ip(b & dstmask), dl);
        }
        if (i % 5 == 0) {
            out << fmt::format(" dport={}", 1 + i % 60000);
        }
        out << '\n';
    }
    if (!out) {
        throw Error("cannot write " + path.string());
    }
    return path.string();
}

namespace {

const char *ids_rules_text =
    "alert tcp any any -> any 21 (msg:\"FTP cleartext root login\"; content:\"USER root\"; nocase; sid:1000001;)\n"
    "alert tcp any any -> any 23 (msg:\"telnet session\"; content:\"|ff fb 18|\"; sid:1000002;)\n"
    "alert tcp any any -> any any (msg:\"shell download in a URL\"; pcre:\"/GET \\/[^ ]*\\.(sh|elf)( |\\?)/i\"; "
    "sid:1000003;)\n"
    "alert tcp any any -> any any (msg:\"directory traversal\"; content:\"../../\"; sid:1000004;)\n"
    "alert udp any any -> any any (msg:\"DNS tunnel-like label\"; pcre:\"/[a-z0-9]{48,}\\./i\"; sid:1000005;)\n"
    "alert ip any any <> any any (msg:\"EICAR test string\"; "
    "content:\"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR\"; sid:1000006;)\n";

std::string nf_config(const fs::path &dir, const std::string &plugin, const NfParams &p)
{
    const uint64_t cap = std::max<uint64_t>(65536, p.flows * 2);
    if (plugin == "fw") {
        return fmt::format("rules = \"{}\"\nstateful = false\nnon_ip = \"allow\"\ncache_size = {}\nstate = \"{}\"\n",
                           write_fw_rules(dir, p.fw_rules), cap, p.fw_state);
    }
    if (plugin == "nat") {
        return fmt::format("inside = [\"198.18.0.0/16\"]\nexternal = \"{}\"\nmax_mappings = {}\n", p.nat_external,
                           cap);
    }
    if (plugin == "mon") {
        return fmt::format("max_flows = {}\nmax_hosts = {}\n", cap,
                           p.mon_hosts ? p.mon_hosts : std::min<uint64_t>(1u << 22, cap));
    }
    if (plugin == "ids") {
        const fs::path rules = dir / "ids.rules";
        if (!fs::exists(rules)) {
            std::ofstream(rules) << ids_rules_text;
        }
        return fmt::format("rules = \"{}\"\nmax_flows = {}\n", rules.string(), std::min<uint64_t>(cap, 1u << 20));
    }
    if (plugin == "lb") {
        return fmt::format("vips = [\"198.19.0.0/16\"]\nbackends = [\"10.1.0.1\", \"10.1.0.2\", \"10.1.0.3\", "
                           "\"10.1.0.4:8080\"]\nmax_flows = {}\n",
                           cap);
    }
    if (plugin == "lookup" || plugin == "count") {
        return fmt::format("flow_state = \"{}\"\nmax_flows = {}\n", plugin, cap);
    }
    if (plugin == "vpn") {
        // Site A (the generator's clients) tunnelled to the peer; example keys.
        return "state = \"auto\"\n"
               "[[nf.config.sa]]\nspi = 0x00001001\ndirection = \"out\"\n"
               "key = \"0x0123456789abcdef0123456789abcdef01020304\"\nlocal = \"192.0.2.1\"\n"
               "remote = \"198.51.100.2\"\nsrc = \"198.18.0.0/16\"\n"
               "[[nf.config.sa]]\nspi = 0x00002001\ndirection = \"in\"\n"
               "key = \"0x00112233445566778899aabbccddeeff0a0b0c0d\"\nlocal = \"192.0.2.1\"\n"
               "remote = \"198.51.100.2\"\n";
    }
    return "";
}

} // namespace

std::vector<std::string> split_chain(const std::string &name)
{
    std::vector<std::string> out;
    for (std::size_t start = 0;;) {
        const std::size_t dash = name.find('-', start);
        out.push_back(name.substr(start, dash == std::string::npos ? std::string::npos : dash - start));
        if (dash == std::string::npos) {
            return out;
        }
        start = dash + 1;
    }
}

std::string lab_plugin(const std::string &nf)
{
    return nf == "lookup" || nf == "count" ? "noop" : nf;
}

std::string lab_chain_toml(const fs::path &dir, const std::vector<std::string> &nfs, const NfParams &params,
                           const std::string &chain_name)
{
    std::string text = fmt::format("name = \"{}\"\nchain = [", chain_name);
    for (std::size_t i = 0; i < nfs.size(); ++i) {
        text += fmt::format("{}\"{}{}\"", i ? ", " : "", nfs[i], i);
    }
    text += "]\n";
    for (std::size_t i = 0; i < nfs.size(); ++i) {
        text += fmt::format("\n[[nf]]\nname = \"{}{}\"\nplugin = \"{}\"\n", nfs[i], i, lab_plugin(nfs[i]));
        const std::string cfg = nf_config(dir, nfs[i], params);
        if (!cfg.empty()) {
            text += "[nf.config]\n" + cfg;
        }
    }
    return text;
}

NfChain::NfChain(const Options &opts, const ScratchDir &dir, const std::vector<std::string> &nfs,
                 const NfParams &params, const std::string &chain_name, bool load)
    : _nfs(nfs), _name(chain_name), _api(make_host_api(mem_packet_ops()))
{
    for (const std::string &nf : nfs) {
        const std::string path = find_plugin(opts.plugin_dir, lab_plugin(nf));
        if (path.empty()) {
            throw Error(fmt::format("no serpens_nf_{0}.so in {1} or {1}/{0}/: build it or pass --plugins",
                                    lab_plugin(nf), opts.plugin_dir));
        }
        if (std::find(_paths.begin(), _paths.end(), path) != _paths.end()) {
            continue;
        }
        _paths.push_back(path);
        if (load && !_registry.load_file(path)) {
            throw Error("plugin refused: " + _registry.refusals().back().message);
        }
    }
    state::StoreOptions so;
    so.root = dir.path() / ("state-" + chain_name);
    _state_root = so.root;
    so.host_id = "bench";
    so.flow_idle_timeout_ns = 0;
    _store = std::make_unique<state::StateStore>(so);
    _text = lab_chain_toml(dir.path(), nfs, params, chain_name);
    _file = (dir.path() / (chain_name + ".toml")).string();
    std::ofstream(_file) << _text;
    if (load) {
        auto root = std::make_shared<const toml::table>(toml::parse(_text, _file));
        _chain = compile_chain(parse_chain_toml(root, _file), _registry);
    }
}

ExecutorResolver NfChain::resolver()
{
    state::StateStore *store = _store.get();
    return [store](const std::string &chain, const std::string &nf) { return &store->executor(chain, nf); };
}

uint32_t NfChain::run_cold(const serpens_host_api *api, LabBatch &b)
{
    // One cold load at a time: loading, parsing and init from several stage
    // threads at once crashed inside toml++ (seen here); on one core they
    // would only interleave anyway.
    static std::mutex cold_mu;
    std::lock_guard<std::mutex> lock(cold_mu);
    PluginRegistry registry; // destroyed last: dlclose after fini
    for (const std::string &p : _paths) {
        if (!registry.load_file(p)) {
            throw Error("plugin refused: " + registry.refusals().back().message);
        }
    }
    auto root = std::make_shared<const toml::table>(toml::parse(_text, _file));
    auto chain = compile_chain(parse_chain_toml(root, _file), registry);
    ChainInstance inst(chain, 0, api != nullptr ? api : &_api, resolver());
    return inst.run(b.pkts.data(), b.n, b.labels.data(), now_ns());
}

NfChain::~NfChain()
{
    _chain.reset(); // NF fini and table handles before the store goes
    _store.reset();
    std::error_code ec;
    std::filesystem::remove_all(_state_root, ec);
}

std::unique_ptr<ChainInstance> NfChain::instance(uint32_t id, const serpens_host_api *api)
{
    return std::make_unique<ChainInstance>(_chain, id, api != nullptr ? api : &_api, resolver());
}

std::string NfChain::describe() const
{
    std::string s;
    for (std::size_t i = 0; i < _nfs.size(); ++i) {
        s += (i ? " -> " : "") + _nfs[i];
    }
    return s;
}

// ---- traffic ---------------------------------------------------------------

Traffic make_traffic(uint32_t flows, uint64_t packets, uint32_t frame_size, uint64_t seed)
{
    net::TrafficConfig cfg;
    cfg.seed = seed;
    cfg.flows = flows;
    cfg.packets = std::max<uint64_t>(packets, flows);
    cfg.mix = net::parse_traffic_mix("tcp=50,udp=50");
    cfg.vlan_ratio = 0;
    cfg.malformed_ratio = 0;
    cfg.size_min = frame_size;
    cfg.size_max = frame_size;
    net::TrafficGenerator gen(cfg);
    Traffic t;
    t.flows = flows;
    t.bytes.reserve(cfg.packets * frame_size);
    t.offset.reserve(cfg.packets);
    t.length.reserve(cfg.packets);
    while (auto p = gen.next()) {
        t.offset.push_back(t.bytes.size());
        t.length.push_back(static_cast<uint32_t>(p->data.size()));
        t.bytes.insert(t.bytes.end(), p->data.begin(), p->data.end());
    }
    return t;
}

LabBatch::LabBatch(uint32_t cap) : storage(cap), pkts(cap), labels(cap) {}

void LabBatch::load(const Traffic &t, std::size_t &cursor, uint32_t count) noexcept
{
    net::FlowKey key;
    n = count;
    for (uint32_t i = 0; i < count; ++i) {
        if (cursor >= t.size()) {
            cursor = 0;
        }
        pkts[i] = storage[i].load(std::span<const uint8_t>(t.bytes.data() + t.offset[cursor], t.length[cursor]));
        net::parse_packet(pkts[i], key);
        ++cursor;
    }
}

void LabBatch::compact() noexcept
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; ++i) {
        if (labels[i] == SERPENS_LABEL_OUT) {
            pkts[k++] = pkts[i];
        }
    }
    n = k;
}

Summary time_in_place(const Options &opts, NfChain &chain, const Traffic &traffic, uint32_t batch)
{
    auto inst = chain.instance(0);
    LabBatch b(batch);
    std::size_t cursor = 0;
    for (std::size_t i = 0; i < traffic.size(); i += batch) {
        b.load(traffic, cursor, batch);
        inst->run(b.pkts.data(), b.n, b.labels.data(), now_ns());
    }
    return summarize(measure(opts, [&](uint64_t iters) {
        for (uint64_t i = 0; i < iters; ++i) {
            b.load(traffic, cursor, batch);
            keep(inst->run(b.pkts.data(), b.n, b.labels.data(), now_ns()));
        }
    }));
}

// ---- redis -----------------------------------------------------------------

bool have_hiredis() noexcept
{
    return SERPENS_BENCH_HAVE_HIREDIS != 0;
}

namespace {

int free_port()
{
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) == 0) {
        port = ntohs(a.sin_port);
    }
    close(fd);
    return port;
}

bool can_connect(int port)
{
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    const bool ok = connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0;
    close(fd);
    return ok;
}

std::string which_exe(const std::string &exe)
{
    const char *path = std::getenv("PATH");
    std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
    dirs += ":/usr/sbin:/usr/bin";
    std::size_t start = 0;
    while (start <= dirs.size()) {
        const std::size_t end = dirs.find(':', start);
        const std::string d = dirs.substr(start, end == std::string::npos ? std::string::npos : end - start);
        const fs::path p = fs::path(d.empty() ? "." : d) / exe;
        if (access(p.c_str(), X_OK) == 0) {
            return p.string();
        }
        if (end == std::string::npos) {
            break;
        }
        start = end + 1;
    }
    return {};
}

} // namespace

RedisServer::RedisServer()
{
    if (!have_hiredis()) {
        _why = "hiredis not found at build time (apt-get install libhiredis-dev, then reconfigure)";
        return;
    }
    const std::string exe = which_exe("redis-server");
    if (exe.empty()) {
        _why = "redis-server not on PATH (apt-get install redis-server)";
        return;
    }
    _dir = std::make_unique<ScratchDir>("redis");
    for (int attempt = 0; attempt < 3 && _port == 0; ++attempt) {
        const int port = free_port();
        const std::string log = (_dir->path() / "redis.log").string();
        std::vector<std::string> args = {exe,          "--port",       std::to_string(port),
                                         "--bind",     "127.0.0.1",    "--save",
                                         "",           "--appendonly", "no",
                                         "--dir",      _dir->path().string(), "--logfile",
                                         log,          "--daemonize",  "no",
                                         "--protected-mode", "yes"};
        std::vector<char *> argv;
        for (auto &a : args) {
            argv.push_back(a.data());
        }
        argv.push_back(nullptr);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        pid_t pid = -1;
        const int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&fa);
        if (rc != 0) {
            _why = std::string("cannot start redis-server: ") + std::strerror(rc);
            return;
        }
        for (int i = 0; i < 500; ++i) {
            if (can_connect(port)) {
                _pid = pid;
                _port = port;
                break;
            }
            int status = 0;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                break; // lost the port race: try another
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        if (_port == 0 && _pid < 0) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
    }
    if (_port == 0) {
        _why = "redis-server did not accept connections";
    }
}

RedisServer::~RedisServer()
{
    if (_pid > 0) {
        kill(_pid, SIGTERM);
        int status = 0;
        for (int i = 0; i < 300 && waitpid(_pid, &status, WNOHANG) == 0; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        if (waitpid(_pid, &status, WNOHANG) == 0) {
            kill(_pid, SIGKILL);
            waitpid(_pid, &status, 0);
        }
    }
}

#if SERPENS_BENCH_HAVE_HIREDIS

struct RemoteClient::Impl {
    redisContext *redis = nullptr;
    const serpens_host_api *local = nullptr;
    uint32_t pending = 0;
    uint32_t next_table = 1;
    std::string keybuf;
};

namespace {

struct RemoteTable {
    serpens_table *local;
    RemoteClient::Impl *client;
    uint32_t id;
    uint32_t key_size;
    uint32_t value_size;
};

thread_local RemoteClient::Impl *building = nullptr;

// One RemoteTable per created table; kept for the process' life (small).
std::vector<std::unique_ptr<RemoteTable>> &remote_tables()
{
    static std::vector<std::unique_ptr<RemoteTable>> tables;
    return tables;
}

RemoteTable *rt(serpens_table *t)
{
    return reinterpret_cast<RemoteTable *>(t);
}

void key_of(RemoteTable *t, const void *key)
{
    std::string &k = t->client->keybuf;
    k.assign(reinterpret_cast<const char *>(&t->id), sizeof t->id);
    k.append(static_cast<const char *>(key), t->key_size);
}

serpens_table *remote_create(serpens_nf_ctx *ctx, const char *name, uint32_t flags, uint32_t ks, uint32_t vs,
                             uint64_t cap)
{
    RemoteClient::Impl *c = building;
    serpens_table *local = c->local->create_table(ctx, name, flags, ks, vs, cap);
    if (local == nullptr) {
        return nullptr;
    }
    // A re-created instance (load per batch) gets its table's shim back.
    for (const auto &t : remote_tables()) {
        if (t->local == local && t->client == c) {
            return reinterpret_cast<serpens_table *>(t.get());
        }
    }
    auto t = std::make_unique<RemoteTable>(RemoteTable{local, c, c->next_table++, ks, vs});
    RemoteTable *raw = t.get();
    remote_tables().push_back(std::move(t));
    return reinterpret_cast<serpens_table *>(raw);
}

int remote_get(serpens_table *tab, const void *key, void *value)
{
    RemoteTable *t = rt(tab);
    key_of(t, key);
    redisAppendCommand(t->client->redis, "GET %b", t->client->keybuf.data(), t->client->keybuf.size());
    ++t->client->pending;
    return t->client->local->get_state(t->local, key, value);
}

int remote_put(serpens_table *tab, const void *key, const void *value)
{
    RemoteTable *t = rt(tab);
    key_of(t, key);
    redisAppendCommand(t->client->redis, "SET %b %b", t->client->keybuf.data(), t->client->keybuf.size(), value,
                       static_cast<size_t>(t->value_size));
    ++t->client->pending;
    return t->client->local->put_state(t->local, key, value);
}

int remote_delete(serpens_table *tab, const void *key)
{
    RemoteTable *t = rt(tab);
    key_of(t, key);
    redisAppendCommand(t->client->redis, "DEL %b", t->client->keybuf.data(), t->client->keybuf.size());
    ++t->client->pending;
    return t->client->local->delete_state(t->local, key);
}

uint64_t remote_bulk(serpens_table *tab, const void *keys, uint32_t n, void *values)
{
    RemoteTable *t = rt(tab);
    for (uint32_t i = 0; i < n; ++i) {
        key_of(t, static_cast<const char *>(keys) + static_cast<std::size_t>(i) * t->key_size);
        redisAppendCommand(t->client->redis, "GET %b", t->client->keybuf.data(), t->client->keybuf.size());
    }
    t->client->pending += n;
    return t->client->local->get_state_bulk(t->local, keys, n, values);
}

#define REMOTE_FORWARD(name, sig, call)                                                                             \
    int remote_##name sig { return rt(t)->client->local->name(rt(t)->local, call); }
REMOTE_FORWARD(split, (serpens_table * t, const void *key), key)
REMOTE_FORWARD(merge, (serpens_table * t, const void *key), key)
REMOTE_FORWARD(update, (serpens_table * t, const void *key), key)
REMOTE_FORWARD(trigger, (serpens_table * t, const void *key), key)
int remote_timer(serpens_table *t, const void *key, uint64_t period)
{
    return rt(t)->client->local->timer(rt(t)->local, key, period);
}

// A redis-backed NF would expire entries by key TTL, which costs its data
// path nothing; so the remote table walk finds nothing, at no cost.  (Without
// a walk, nat falls back to looking every pool item up in turn, ~1000 redis
// round trips per batch: a cost of this emulation, not of the platforms it
// stands for.)
int remote_scan_nothing(serpens_table *, uint64_t *cursor, uint32_t, void *, void *)
{
    *cursor = 0;
    return SERPENS_ENOENT;
}
uint64_t remote_one_slot(serpens_table *) { return 1; }

} // namespace

RemoteClient::RemoteClient(const RedisServer &server, const serpens_host_api &local)
    : _impl(std::make_unique<Impl>()), _api(local)
{
    _impl->local = &local;
    _impl->redis = redisConnect("127.0.0.1", server.port());
    if (_impl->redis == nullptr || _impl->redis->err) {
        throw Error(std::string("redis connect: ") + (_impl->redis ? _impl->redis->errstr : "out of memory"));
    }
    _api.create_table = remote_create;
    _api.get_state = remote_get;
    _api.put_state = remote_put;
    _api.delete_state = remote_delete;
    _api.get_state_bulk = remote_bulk;
    _api.split = remote_split;
    _api.merge = remote_merge;
    _api.update = remote_update;
    _api.timer = remote_timer;
    _api.trigger = remote_trigger;
    // No remote form of the counter add: mon falls back to get + put, which
    // go to redis.  Left as the local entry, it would be handed this shim's
    // table handles.
    _api.add_state_bulk = nullptr;
    _api.add_state_bulk_v2 = nullptr;
    _api.scan_state = remote_scan_nothing;
    _api.table_slots = remote_one_slot;
    building = _impl.get(); // tables created on this thread bind to this client
}

RemoteClient::~RemoteClient()
{
    if (building == _impl.get()) {
        building = nullptr;
    }
    if (_impl->redis != nullptr) {
        redisFree(_impl->redis);
    }
}

void RemoteClient::bind() noexcept
{
    building = _impl.get();
}

uint32_t RemoteClient::flush()
{
    const uint32_t n = _impl->pending;
    for (uint32_t i = 0; i < n; ++i) {
        void *reply = nullptr;
        if (redisGetReply(_impl->redis, &reply) != REDIS_OK) {
            throw Error(std::string("redis: ") + _impl->redis->errstr);
        }
        freeReplyObject(reply);
    }
    _impl->pending = 0;
    _requests += n;
    return n;
}

#else

struct RemoteClient::Impl {};
RemoteClient::RemoteClient(const RedisServer &, const serpens_host_api &local) : _api(local)
{
    throw Error("built without hiredis");
}
RemoteClient::~RemoteClient() = default;
void RemoteClient::bind() noexcept {}
uint32_t RemoteClient::flush()
{
    return 0;
}

#endif

// ---- rings -----------------------------------------------------------------

Ring::Ring(uint32_t cap)
{
    uint32_t c = 1;
    while (c < cap) {
        c <<= 1;
    }
    _slots.resize(c);
    _mask = c - 1;
}

bool Ring::push(LabBatch *b) noexcept
{
    const uint32_t t = _tail.load(std::memory_order_relaxed);
    if (t - _head.load(std::memory_order_acquire) > _mask) {
        return false;
    }
    _slots[t & _mask] = b;
    _tail.store(t + 1, std::memory_order_release);
    return true;
}

LabBatch *Ring::pop() noexcept
{
    const uint32_t h = _head.load(std::memory_order_relaxed);
    if (h == _tail.load(std::memory_order_acquire)) {
        return nullptr;
    }
    LabBatch *b = _slots[h & _mask];
    _head.store(h + 1, std::memory_order_release);
    return b;
}

LabBatch *Ring::pop_wait(const std::atomic<bool> &stop) noexcept
{
    for (unsigned spin = 0;; ++spin) {
        if (LabBatch *b = pop()) {
            return b;
        }
        if (stop.load(std::memory_order_relaxed)) {
            return nullptr;
        }
        if (spin > 64) {
            sched_yield();
        }
    }
}

void Ring::push_wait(LabBatch *b) noexcept
{
    while (!push(b)) {
        sched_yield();
    }
}

void pin_like(const Options &opts)
{
    if (opts.cpu >= 0) {
        pin_self(opts.cpu);
    }
}

int first_worker_cpu(const Options &opts)
{
    for (int c = 0; c < CPU_SETSIZE; ++c) {
        if (CPU_ISSET(c, &opts.worker_cpus)) {
            return c;
        }
    }
    return -1;
}

} // namespace serpens::bench

namespace serpens::bench {

const char *model_name(Model m) noexcept
{
    switch (m) {
    case Model::fork_batch:
        return "fork per batch";
    case Model::kthread_create:
        return "kThread create";
    case Model::kthread_pool:
        return "kThread pool";
    case Model::uthread_pool:
        return "uThread pool";
    case Model::function_call:
        return "function call";
    }
    return "?";
}

Launcher::Launcher(Model m, const Options &opts) : _model(m), _affinity(opts.worker_cpus)
{
    if (m == Model::kthread_pool) {
        _kpool = std::make_unique<KThreadPool>(1, _affinity);
    } else if (m == Model::uthread_pool) {
        _upool = std::make_unique<UThreadPool>(1, 256 * 1024);
    }
}

void Launcher::run(const Job &job)
{
    switch (_model) {
    case Model::fork_batch:
        run_in_child(job);
        break;
    case Model::kthread_create:
        run_in_new_thread(job, _affinity);
        break;
    case Model::kthread_pool:
        _kpool->run(job);
        break;
    case Model::uthread_pool:
        _upool->run(job);
        break;
    case Model::function_call:
        job.fn(job.arg, 0);
        break;
    }
}

} // namespace serpens::bench

namespace serpens::bench {

const char *chaining_name(Chaining c) noexcept
{
    switch (c) {
    case Chaining::executor:
        return "executor-based";
    case Chaining::gateway:
        return "gateway-based";
    case Chaining::direct:
        return "direct";
    }
    return "?";
}

Pipeline::Pipeline(Chaining c, unsigned stages, Hop hop, int cpu) : _c(c), _stages(stages), _hop(std::move(hop)), _cpu(cpu)
{
    for (unsigned i = 0; i < stages; ++i) {
        _in.push_back(std::make_unique<Ring>());
        _out.push_back(std::make_unique<Ring>());
    }
    for (unsigned i = 0; i < stages; ++i) {
        _threads.emplace_back([this, i] { stage_main(i); });
    }
    if (c != Chaining::direct) {
        _threads.emplace_back([this, c] { central_main(c == Chaining::gateway); });
    }
    if (c == Chaining::executor) {
        _threads.emplace_back([this] { router_main(); });
    }
}

Pipeline::~Pipeline()
{
    _stop.store(true);
    for (auto &t : _threads) {
        t.join();
    }
}

void Pipeline::submit(LabBatch *b)
{
    b->hop = 0;
    if (_c == Chaining::direct) {
        _in[0]->push_wait(b);
    } else {
        _submit.push_wait(b);
    }
}

LabBatch *Pipeline::wait()
{
    std::atomic<bool> never{false};
    return _done.pop_wait(never);
}

void Pipeline::stage_main(unsigned i)
{
    if (_cpu >= 0) {
        pin_self(_cpu);
    }
    while (LabBatch *b = _in[i]->pop_wait(_stop)) {
        if (b->n > 0) {
            _hop(i, *b);
        }
        b->hop = i + 1;
        if (_c == Chaining::direct) {
            if (i + 1 == _stages) {
                _done.push_wait(b);
            } else {
                _in[i + 1]->push_wait(b);
            }
        } else {
            _out[i]->push_wait(b);
        }
    }
}

void Pipeline::central_main(bool reclassify)
{
    if (_cpu >= 0) {
        pin_self(_cpu);
    }
    auto dispatch = [&](LabBatch *b) {
        if (b->hop >= _stages) {
            _done.push_wait(b);
            return;
        }
        if (reclassify) {
            // The gateway matches every request again.
            net::FlowKey key;
            for (uint32_t k = 0; k < b->n; ++k) {
                net::parse_packet(b->pkts[k], key);
            }
        }
        if (_c == Chaining::executor) {
            _to_router.push_wait(b);
        } else {
            _in[b->hop]->push_wait(b);
        }
    };
    for (unsigned spin = 0; !_stop.load(std::memory_order_relaxed); ++spin) {
        bool any = false;
        if (LabBatch *b = _submit.pop()) {
            dispatch(b);
            any = true;
        }
        for (unsigned i = 0; i < _stages; ++i) {
            if (LabBatch *b = _out[i]->pop()) {
                dispatch(b);
                any = true;
            }
        }
        if (any) {
            spin = 0;
        } else if (spin > 64) {
            sched_yield();
        }
    }
}

void Pipeline::router_main()
{
    if (_cpu >= 0) {
        pin_self(_cpu);
    }
    while (LabBatch *b = _to_router.pop_wait(_stop)) {
        _in[b->hop]->push_wait(b);
    }
}

} // namespace serpens::bench
