#include "remote_state.h"

#include "core/error.h"
#include "process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <exception>
#include <filesystem>
#include <thread>
#include <vector>

#if SERPENS_BENCH_HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif

namespace serpens::bench {

bool have_hiredis() noexcept { return SERPENS_BENCH_HAVE_HIREDIS != 0; }

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

} // namespace

RedisServer::RedisServer()
{
    if (!have_hiredis()) {
        _why = "hiredis not found at build time (apt-get install libhiredis-dev, then reconfigure)";
        return;
    }
    const std::string exe = which("redis-server");
    if (exe.empty()) {
        _why = "redis-server not on PATH (apt-get install redis-server)";
        return;
    }
    _dir = std::make_unique<ScratchDir>("redis");
    for (int attempt = 0; attempt < 3 && _port == 0; ++attempt) {
        const int port = free_port();
        const std::string log = (_dir->path() / "redis.log").string();
        const std::vector<std::string> args = {
            exe,  "--port", std::to_string(port),  "--bind",    "127.0.0.1", "--save",      "",   "--appendonly",
            "no", "--dir",  _dir->path().string(), "--logfile", log,         "--daemonize", "no", "--protected-mode",
            "yes"};
        std::unique_ptr<Child> child;
        try {
            // On the caller's CPUs: a one-core experiment's redis shares its core.
            child = std::make_unique<Child>(args, _dir->path() / "redis.out", false, ChildCpus::inherit);
        } catch (const std::exception &e) {
            _why = std::string("cannot start redis-server: ") + e.what();
            return;
        }
        for (int i = 0; i < 500; ++i) {
            if (can_connect(port)) {
                _child = std::move(child);
                _port = port;
                break;
            }
            if (!child->running()) {
                break; // lost the port race: try another
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        // A redis-server that never listened is killed and reaped with `child`.
    }
    if (_port == 0) {
        _why = "redis-server did not accept connections";
    }
}

RedisServer::~RedisServer()
{
    if (_child) {
        _child->stop(3);
    }
}

#if SERPENS_BENCH_HAVE_HIREDIS

namespace {

struct RemoteTable {
    serpens_table *local;
    RemoteClient::Impl *client;
    uint32_t id;
    uint32_t key_size;
    uint32_t value_size;
};

} // namespace

struct RemoteClient::Impl {
    redisContext *redis = nullptr;
    const serpens_host_api *local = nullptr;
    uint32_t pending = 0;
    uint32_t next_table = 1;
    std::string keybuf;
    // The shims of the tables made through this client, gone with it: kept
    // for the process instead, a later client and table allocated at freed
    // addresses matched a dead shim and took its key and value sizes.
    std::vector<std::unique_ptr<RemoteTable>> tables;
};

namespace {

thread_local RemoteClient::Impl *building = nullptr;

RemoteTable *rt(serpens_table *t) { return reinterpret_cast<RemoteTable *>(t); }

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
    for (const auto &t : c->tables) {
        if (t->local == local) {
            return reinterpret_cast<serpens_table *>(t.get());
        }
    }
    auto t = std::make_unique<RemoteTable>(RemoteTable{local, c, c->next_table++, ks, vs});
    RemoteTable *raw = t.get();
    c->tables.push_back(std::move(t));
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

// What a redis-backed NF pays for a bulk read-modify-write: a GET and a SET
// of the new row per key.  The values themselves are the local table's.
void append_read_modify_write(RemoteTable *t, const void *keys, uint32_t n, const void *rows)
{
    for (uint32_t i = 0; i < n; ++i) {
        key_of(t, static_cast<const char *>(keys) + static_cast<std::size_t>(i) * t->key_size);
        redisAppendCommand(t->client->redis, "GET %b", t->client->keybuf.data(), t->client->keybuf.size());
        redisAppendCommand(t->client->redis, "SET %b %b", t->client->keybuf.data(), t->client->keybuf.size(),
                           static_cast<const char *>(rows) + static_cast<std::size_t>(i) * t->value_size,
                           static_cast<size_t>(t->value_size));
    }
    t->client->pending += 2 * n;
}

int remote_update_bulk_v2(serpens_table *tab, const void *keys, uint32_t n, const uint64_t *rows, const uint8_t *ops,
                          void *values_out, uint64_t *written)
{
    RemoteTable *t = rt(tab);
    const int rc = t->client->local->update_state_bulk_v2(t->local, keys, n, rows, ops, values_out, written);
    if (rc == SERPENS_OK || rc == SERPENS_ENOSPC) {
        append_read_modify_write(t, keys, n, rows);
    }
    return rc;
}

// The EVENTUAL counter add, the same way.
int remote_add_bulk_v2(serpens_table *tab, const void *keys, uint32_t n, const uint64_t *deltas, uint64_t *written)
{
    RemoteTable *t = rt(tab);
    const int rc = t->client->local->add_state_bulk_v2(t->local, keys, n, deltas, written);
    if (rc == SERPENS_OK || rc == SERPENS_ENOSPC) {
        append_read_modify_write(t, keys, n, deltas);
    }
    return rc;
}

uint64_t remote_update_bulk(serpens_table *tab, const void *keys, uint32_t n, const uint64_t *rows, const uint8_t *ops,
                            void *values_out)
{
    uint64_t written = 0;
    remote_update_bulk_v2(tab, keys, n, rows, ops, values_out, &written);
    return written;
}

#define REMOTE_FORWARD(name, sig, call)                                                                                \
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
// path nothing; so the remote table walk finds nothing, at no cost.
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
    // The 1.1 counter add has no remote form (no NF of this tree uses it);
    // left as the local entry it would be handed this shim's table handles.
    _api.add_state_bulk = nullptr;
    _api.add_state_bulk_v2 = remote_add_bulk_v2;
    _api.update_state_bulk = remote_update_bulk;
    _api.update_state_bulk_v2 = remote_update_bulk_v2;
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

void RemoteClient::bind() noexcept { building = _impl.get(); }

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
uint32_t RemoteClient::flush() { return 0; }

#endif

} // namespace serpens::bench
