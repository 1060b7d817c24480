// LeaseBook: leases granted to peers and replica merges, persisted as JSON.

// GCC 12 at -O3 takes the byte-vector compares of ReplicaProgress::keys (a
// std::set's, inlined from <bits/stl_algobase.h>, so this must precede the
// includes) for memcmp calls of unbounded length: -Wstringop-overread, a
// false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overread"
#endif

#include "state/lease_book.h"

#include "core/error.h"
#include "state/segment_file.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace serpens::state {

namespace {

constexpr int book_version = 2; // 1: replica sequences per key (still read)

std::string to_hex(std::span<const uint8_t> b)
{
    static const char digits[] = "0123456789abcdef";
    std::string s;
    s.reserve(b.size() * 2);
    for (uint8_t c : b) {
        s += digits[c >> 4];
        s += digits[c & 15];
    }
    return s;
}

std::vector<uint8_t> from_hex(const std::string &s)
{
    auto nibble = [&](char c) -> uint8_t {
        if (c >= '0' && c <= '9') {
            return static_cast<uint8_t>(c - '0');
        }
        if (c >= 'a' && c <= 'f') {
            return static_cast<uint8_t>(c - 'a' + 10);
        }
        throw Error("not a hex digit: '" + std::string(1, c) + "'");
    };
    if (s.size() % 2 != 0) {
        throw Error("hex string of odd length " + std::to_string(s.size()));
    }
    std::vector<uint8_t> b(s.size() / 2);
    for (std::size_t i = 0; i < b.size(); ++i) {
        b[i] = static_cast<uint8_t>(nibble(s[2 * i]) << 4 | nibble(s[2 * i + 1]));
    }
    return b;
}

std::string where(const std::string &chain, const std::string &nf, const std::string &table)
{
    return "chain '" + chain + "' nf '" + nf + "' table '" + table + "'";
}

bool write_all(int fd, const std::string &text)
{
    std::size_t off = 0;
    while (off < text.size()) {
        ssize_t n = ::write(fd, text.data() + off, text.size() - off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        off += static_cast<std::size_t>(n);
    }
    return true;
}

} // namespace

LeaseBook::LeaseBook(StateStore &store) : _store(store), _path(store.root() / "leases.json") { load(); }

void LeaseBook::load()
{
    std::ifstream in(_path);
    if (!in) {
        if (std::filesystem::exists(_path)) {
            throw Error(_path.string() + ": cannot read: " + errno_text(errno));
        }
        return; // no lease granted yet
    }
    std::stringstream ss;
    ss << in.rdbuf();
    try {
        const nlohmann::json j = nlohmann::json::parse(ss.str());
        const int version = j.at("version").get<int>();
        if (version != book_version && version != 1) {
            throw Error("version " + std::to_string(j.at("version").get<int>()) + ", this host reads " +
                        std::to_string(book_version));
        }
        _next_id = j.at("next_id").get<uint64_t>();
        for (const auto &r : j.at("leases")) {
            Lease l;
            l.id = r.at("id").get<uint64_t>();
            l.peer = r.at("peer").get<std::string>();
            l.chain = r.at("chain").get<std::string>();
            l.nf = r.at("nf").get<std::string>();
            l.table = r.at("table").get<std::string>();
            l.key = from_hex(r.at("key").get<std::string>());
            l.value = from_hex(r.at("value").get<std::string>());
            l.expires_unix_ms = r.at("expires_unix_ms").get<uint64_t>();
            if (r.contains("returning")) {
                l.returning = from_hex(r.at("returning").get<std::string>());
            }
            if (l.id >= _next_id) {
                throw Error("lease id " + std::to_string(l.id) + " not below next_id " + std::to_string(_next_id));
            }
            _leases.emplace(l.id, std::move(l));
        }
        for (const auto &r : j.at("replicas")) {
            ReplicaProgress &p =
                _replicas[ReplicaTable{r.at("peer").get<std::string>(), r.at("chain").get<std::string>(),
                                       r.at("nf").get<std::string>(), r.at("table").get<std::string>()}];
            const uint64_t sequence = r.at("sequence").get<uint64_t>();
            if (sequence > p.sequence) {
                p = ReplicaProgress{sequence, {}};
            }
            if (sequence == p.sequence) {
                // Version 1 kept one record per key.
                for (const auto &key : version == 1 ? nlohmann::json::array({r.at("key")}) : r.at("keys")) {
                    p.keys.insert(from_hex(key.get<std::string>()));
                }
            }
        }
    } catch (const nlohmann::json::exception &e) {
        throw Error(_path.string() + ": corrupt lease book: " + e.what());
    } catch (const Error &e) {
        throw Error(_path.string() + ": corrupt lease book: " + e.what());
    }
}

void LeaseBook::save() const
{
    nlohmann::json leases = nlohmann::json::array();
    for (const auto &[id, l] : _leases) {
        nlohmann::json r = {{"id", l.id},
                            {"peer", l.peer},
                            {"chain", l.chain},
                            {"nf", l.nf},
                            {"table", l.table},
                            {"key", to_hex(l.key)},
                            {"value", to_hex(l.value)},
                            {"expires_unix_ms", l.expires_unix_ms}};
        if (l.returning) {
            r["returning"] = to_hex(*l.returning);
        }
        leases.push_back(std::move(r));
    }
    nlohmann::json replicas = nlohmann::json::array();
    for (const auto &[t, progress] : _replicas) {
        nlohmann::json keys = nlohmann::json::array();
        for (const std::vector<uint8_t> &key : progress.keys) {
            keys.push_back(to_hex(key));
        }
        replicas.push_back({{"peer", std::get<0>(t)},
                            {"chain", std::get<1>(t)},
                            {"nf", std::get<2>(t)},
                            {"table", std::get<3>(t)},
                            {"sequence", progress.sequence},
                            {"keys", std::move(keys)}});
    }
    const nlohmann::json j = {
        {"version", book_version}, {"next_id", _next_id}, {"leases", leases}, {"replicas", replicas}};

    std::error_code ec;
    std::filesystem::create_directories(_path.parent_path(), ec);
    if (ec) {
        throw Error("cannot create " + _path.parent_path().string() + " for the lease book: " + ec.message());
    }
    // A reader (or a restart) sees the old book or the new one, never half.
    const std::filesystem::path temp = _path.string() + ".tmp";
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        throw Error("cannot write the lease book " + temp.string() + ": " + errno_text(errno));
    }
    const bool written = write_all(fd, j.dump(1) + "\n") && ::fsync(fd) == 0;
    const int saved = errno;
    ::close(fd);
    if (!written || ::rename(temp.c_str(), _path.c_str()) != 0) {
        const std::string why = errno_text(written ? errno : saved);
        ::unlink(temp.c_str());
        throw Error("cannot write the lease book " + _path.string() + ": " + why);
    }
    // The rename itself is durable only once the directory is.
    if (int dfd = ::open(_path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
}

Table *LeaseBook::find_table(const std::string &chain, const std::string &nf, const std::string &table)
{
    return _store.executor(chain, nf).find(table);
}

bool LeaseBook::return_items(const Lease &l, const std::vector<uint8_t> &items)
{
    Table *t = find_table(l.chain, l.nf, l.table);
    if (t == nullptr) {
        return false;
    }
    const int rc = _store.executor(l.chain, l.nf).take_back(*t, l.key.data(), items.data(), items.size());
    if (rc != SERPENS_OK) {
        throw Error(where(l.chain, l.nf, l.table) + ": taking back lease " + std::to_string(l.id) + " of peer '" +
                    l.peer + "' failed with " + std::to_string(rc));
    }
    return true;
}

Lease LeaseBook::grant(const std::string &peer, const std::string &chain, const std::string &nf,
                       const std::string &table, std::span<const uint8_t> key, uint64_t duration_ms,
                       uint64_t now_unix_ms)
{
    return grant_all(peer, chain, nf, table, {std::vector<uint8_t>(key.begin(), key.end())}, duration_ms, now_unix_ms)
        .front();
}

std::vector<Lease> LeaseBook::grant_all(const std::string &peer, const std::string &chain, const std::string &nf,
                                        const std::string &table, const std::vector<std::vector<uint8_t>> &keys,
                                        uint64_t duration_ms, uint64_t now_unix_ms)
{
    std::lock_guard lk(_mu);
    const std::string w = where(chain, nf, table);
    Table *t = find_table(chain, nf, table);
    if (t == nullptr) {
        throw Error(w + ": no such table to lease from (has the NF created it?)");
    }
    Executor &ex = _store.executor(chain, nf);
    std::vector<Lease> granted;
    // Not recorded, so not lent: on any failure the items lent so far go back.
    auto undo = [&] {
        for (const Lease &l : granted) {
            _leases.erase(l.id);
            ex.take_back(*t, l.key.data(), l.value.data(), l.value.size());
        }
    };
    for (const std::vector<uint8_t> &key : keys) {
        if (key.size() != t->key_size()) {
            undo();
            throw Error(w + ": key of " + std::to_string(key.size()) + " bytes, the table's are " +
                        std::to_string(t->key_size()));
        }
        Lease l;
        const int rc = ex.lease_out(*t, key.data(), l.value);
        if (rc != SERPENS_OK) {
            undo();
            throw Error(w + (rc == SERPENS_ENOENT ? ": no such key to lease"
                                                  : ": lease_out failed with " + std::to_string(rc)));
        }
        l.id = _next_id++;
        l.peer = peer;
        l.chain = chain;
        l.nf = nf;
        l.table = table;
        l.key = key;
        l.expires_unix_ms = now_unix_ms + duration_ms;
        _leases.emplace(l.id, l);
        granted.push_back(std::move(l));
    }
    try {
        save(); // once for all of them: a pool has hundreds of keys
    } catch (const Error &) {
        undo();
        throw;
    }
    return granted;
}

bool LeaseBook::renew(uint64_t id, uint64_t duration_ms, uint64_t now_unix_ms)
{
    return renew_all({id}, duration_ms, now_unix_ms).front();
}

std::vector<bool> LeaseBook::renew_all(const std::vector<uint64_t> &ids, uint64_t duration_ms, uint64_t now_unix_ms)
{
    std::lock_guard lk(_mu);
    std::vector<bool> renewed;
    std::vector<std::pair<Lease *, uint64_t>> old;
    for (uint64_t id : ids) {
        auto it = _leases.find(id);
        const bool live = it != _leases.end() && !it->second.returning && now_unix_ms < it->second.expires_unix_ms;
        renewed.push_back(live);
        if (live) {
            old.emplace_back(&it->second, it->second.expires_unix_ms);
            it->second.expires_unix_ms = now_unix_ms + duration_ms;
        }
    }
    if (!old.empty()) {
        try {
            save();
        } catch (const Error &) {
            for (auto &[l, expires] : old) {
                l->expires_unix_ms = expires;
            }
            throw;
        }
    }
    return renewed;
}

bool LeaseBook::give_back(uint64_t id, std::span<const uint8_t> unused)
{
    return give_back_all({{id, std::vector<uint8_t>(unused.begin(), unused.end())}}) == 1;
}

std::size_t LeaseBook::give_back_all(const std::vector<std::pair<uint64_t, std::vector<uint8_t>>> &returns)
{
    std::lock_guard lk(_mu);
    for (const auto &[id, unused] : returns) {
        auto it = _leases.find(id);
        if (it != _leases.end() && unused.size() != it->second.value.size()) {
            throw Error(where(it->second.chain, it->second.nf, it->second.table) + ": lease " + std::to_string(id) +
                        " given back with " + std::to_string(unused.size()) + " bytes, " +
                        std::to_string(it->second.value.size()) + " were lent");
        }
    }
    std::vector<Lease> back;
    for (const auto &[id, unused] : returns) {
        auto it = _leases.find(id);
        if (it == _leases.end() || it->second.returning) {
            continue;
        }
        Lease l = it->second;
        l.returning = unused;
        if (_store.executor(l.chain, l.nf).default_format()) {
            // Bitmaps of free items: only what was lent comes back, so a
            // faulty peer cannot return items it never had (they would
            // then be in two places).
            bool foreign = false;
            for (std::size_t b = 0; b < l.value.size(); ++b) {
                foreign = foreign || ((*l.returning)[b] & ~l.value[b]) != 0;
                (*l.returning)[b] &= l.value[b];
            }
            if (foreign) {
                spdlog::warn("state: {}: peer '{}' returned items lease {} never lent; only the lent ones are taken",
                             where(l.chain, l.nf, l.table), l.peer, l.id);
            }
        }
        if (find_table(l.chain, l.nf, l.table) == nullptr) {
            it->second = l; // expire() finishes it once the table is back
        } else {
            _leases.erase(it);
        }
        back.push_back(std::move(l));
    }
    if (back.empty()) {
        return 0;
    }
    // Off the disk first, then the items go back: a crash in between loses
    // them rather than returning them twice.
    try {
        save();
    } catch (const Error &) {
        for (const Lease &l : back) {
            _leases.insert_or_assign(l.id, l); // still on disk, so still ours to return
        }
        throw;
    }
    for (const Lease &l : back) {
        if (_leases.count(l.id) != 0) {
            continue; // waits for its table
        }
        try {
            return_items(l, *l.returning);
        } catch (const Error &) {
            _leases.emplace(l.id, l); // retried by expire()
            save();
            throw;
        }
    }
    return back.size();
}

std::vector<Lease> LeaseBook::expire(uint64_t now_unix_ms)
{
    std::lock_guard lk(_mu);
    std::vector<Lease> done;
    std::vector<uint64_t> due;
    for (const auto &[id, l] : _leases) {
        if (l.returning || now_unix_ms >= l.expires_unix_ms) {
            due.push_back(id);
        }
    }
    std::vector<Lease> going;
    for (uint64_t id : due) {
        const Lease &l = _leases.at(id);
        if (find_table(l.chain, l.nf, l.table) == nullptr) {
            continue; // not created again since the restart: next call
        }
        going.push_back(l);
        _leases.erase(id);
    }
    if (going.empty()) {
        return done;
    }
    // Off the disk first, all at once, then the items go back.
    try {
        save();
    } catch (const Error &) {
        for (const Lease &l : going) {
            _leases.emplace(l.id, l);
        }
        throw;
    }
    for (Lease &l : going) {
        const std::vector<uint8_t> items = l.returning ? *l.returning : l.value;
        try {
            return_items(l, items);
        } catch (const Error &e) {
            spdlog::error("state: {}; kept in {} to retry", e.what(), _path.string());
            l.returning = items;
            _leases.emplace(l.id, l);
            save();
            continue;
        }
        done.push_back(std::move(l));
    }
    return done;
}

std::vector<Lease> LeaseBook::leases() const
{
    std::lock_guard lk(_mu);
    std::vector<Lease> v;
    for (const auto &[id, l] : _leases) {
        v.push_back(l);
    }
    return v;
}

bool LeaseBook::apply_replica(const std::string &peer, const std::string &chain, const std::string &nf,
                              const std::string &table, std::span<const uint8_t> key, std::span<const uint8_t> delta,
                              uint64_t merge_sequence)
{
    return apply_replicas(peer, {ReplicaDelta{chain, nf, table, key, delta, merge_sequence}}).front();
}

std::vector<bool> LeaseBook::apply_replicas(const std::string &peer, const std::vector<ReplicaDelta> &deltas)
{
    std::lock_guard lk(_mu);
    std::vector<Table *> tables;
    for (const ReplicaDelta &d : deltas) {
        Table *t = find_table(d.chain, d.nf, d.table);
        if (t == nullptr) {
            throw Error(where(d.chain, d.nf, d.table) + ": no such table to merge peer '" + peer + "' into");
        }
        if (d.key.size() != t->key_size()) {
            throw Error(where(d.chain, d.nf, d.table) + ": key of " + std::to_string(d.key.size()) +
                        " bytes, the table's are " + std::to_string(t->key_size()));
        }
        tables.push_back(t);
    }
    // The sequences are written before the deltas apply: a crash in between
    // loses a change rather than counting it twice.
    std::vector<bool> applied(deltas.size(), false);
    for (std::size_t i = 0; i < deltas.size(); ++i) {
        const ReplicaDelta &d = deltas[i];
        ReplicaProgress &p = _replicas[ReplicaTable{peer, d.chain, d.nf, d.table}];
        std::vector<uint8_t> key(d.key.begin(), d.key.end());
        if (d.merge_sequence < p.sequence || (d.merge_sequence == p.sequence && p.keys.count(key) != 0)) {
            continue; // a replay
        }
        if (d.merge_sequence > p.sequence) {
            p = ReplicaProgress{d.merge_sequence, {}};
        }
        p.keys.insert(std::move(key));
        applied[i] = true;
    }
    save();
    std::string failed;
    for (std::size_t i = 0; i < deltas.size(); ++i) {
        const ReplicaDelta &d = deltas[i];
        if (!applied[i]) {
            continue;
        }
        const int rc =
            _store.executor(d.chain, d.nf).apply_delta(*tables[i], d.key.data(), d.delta.data(), d.delta.size());
        if (rc == SERPENS_OK) {
            continue;
        }
        _replicas[ReplicaTable{peer, d.chain, d.nf, d.table}].keys.erase(
            std::vector<uint8_t>(d.key.begin(), d.key.end()));
        applied[i] = false;
        if (failed.empty()) {
            failed = where(d.chain, d.nf, d.table) + ": merging sequence " + std::to_string(d.merge_sequence) +
                     " of peer '" + peer + "' failed with " + std::to_string(rc);
        }
    }
    if (!failed.empty()) {
        save();
        throw Error(failed);
    }
    return applied;
}

} // namespace serpens::state

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
