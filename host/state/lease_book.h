#pragma once
// LeaseBook — the RELEASE leases this host has granted to peers, and the
// EVENTUAL replica deltas it has merged from them, kept in
// <store root>/leases.json so both survive a restart of this host.
//
// A lease lends part of a RELEASE entry (Executor::lease_out) until a wall
// clock deadline; the peer gives back what it did not use (give_back), or at
// the deadline this host takes the whole grant back (expire).  The peer must
// stop handing items out before the deadline; a lease is live while
// now < expires_unix_ms and an expired lease is never renewed.
//
// Ordering against a crash, chosen so an item is never in two places:
//  - grant: the share leaves the cells, then the record is written; a crash
//    in between loses the share (never lends it twice).
//  - give_back / expire: the record is removed on disk, then the items go
//    back; a crash in between loses them rather than returning them twice.
//  - apply_replica: the sequence is written, then the delta applied; a crash
//    in between drops that delta rather than counting it twice.
//
// Replica merges are recorded per (peer, chain, nf, table), not per key, so
// the book does not grow with every key a peer ever merged: the newest merge
// sequence, and the keys merged under it.  That relies on the peer sending
// its merges of a table in sequence order, each one until acknowledged
// before any later one (Cluster::send_returns): a merge under an older
// sequence than the newest is then a replay.
//
// Tables are resolved when used: after a restart a chain's table exists only
// once its instances created it again.  A give_back or expiry whose table is
// not there yet keeps its record (marked returned, so it cannot be renewed)
// and is retried by every later expire() call.
//
// Thread-safe (one mutex); cold path.  Errors throw serpens::Error naming the
// file or the chain/nf/table.

#include "state/executor.h"

#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <vector>

namespace serpens::state {

struct Lease {
    uint64_t id = 0;
    std::string peer, chain, nf, table;
    std::vector<uint8_t> key;
    std::vector<uint8_t> value;   // what was lent (value_size bytes)
    uint64_t expires_unix_ms = 0; // wall clock: survives restarts
    // Given back or expired, waiting for its table: the items to return.
    std::optional<std::vector<uint8_t>> returning;
};

class LeaseBook {
public:
    // Loads <store.root()>/leases.json when present.  Throws Error with the
    // file name when it cannot be read or parsed.
    explicit LeaseBook(StateStore &store);

    // Lends a share of (chain, nf, table)[key] to `peer` until now +
    // duration.  Throws Error when the table or key is unknown, the key has
    // the wrong size, lease_out fails or the book cannot be written (the
    // share is then taken back).
    Lease grant(const std::string &peer, const std::string &chain, const std::string &nf, const std::string &table,
                std::span<const uint8_t> key, uint64_t duration_ms, uint64_t now_unix_ms);
    // grant for several keys of one table, written once (a pool has hundreds
    // of keys): all of them, or none and Error.
    std::vector<Lease> grant_all(const std::string &peer, const std::string &chain, const std::string &nf,
                                 const std::string &table, const std::vector<std::vector<uint8_t>> &keys,
                                 uint64_t duration_ms, uint64_t now_unix_ms);
    // Moves a live lease's deadline to now + duration.  false: unknown id,
    // expired or already given back.
    bool renew(uint64_t id, uint64_t duration_ms, uint64_t now_unix_ms);
    // renew for several, written once; one answer per id.
    std::vector<bool> renew_all(const std::vector<uint64_t> &ids, uint64_t duration_ms, uint64_t now_unix_ms);
    // The peer returns `unused` (value_size bytes, a subset of the grant) and
    // the lease ends.  false: unknown id (also when given back before).
    // Throws Error on a wrong length.
    bool give_back(uint64_t id, std::span<const uint8_t> unused);
    // give_back for several (id, unused), written once; returns how many were
    // live.  Throws Error on a wrong length (before any is given back).  In
    // the default format only items the lease lent are taken back.
    std::size_t give_back_all(const std::vector<std::pair<uint64_t, std::vector<uint8_t>>> &returns);
    // Takes back every lease whose deadline passed (the whole grant) and
    // finishes give_backs that waited for their table.  Returns the leases
    // whose items went back in this call (`returning` set for give_backs).
    std::vector<Lease> expire(uint64_t now_unix_ms);
    std::vector<Lease> leases() const;

    // Merges a peer's EVENTUAL delta for (chain, nf, table)[key] unless it is
    // a replay: a sequence older than the newest from that peer for the
    // table, or the newest again for a key merged under it.  Returns whether
    // it applied.  Throws Error when the table is unknown or apply_delta
    // refuses (the key is then not recorded as merged).
    bool apply_replica(const std::string &peer, const std::string &chain, const std::string &nf,
                       const std::string &table, std::span<const uint8_t> key, std::span<const uint8_t> delta,
                       uint64_t merge_sequence);
    // One EVENTUAL change of a peer, for apply_replicas.
    struct ReplicaDelta {
        std::string chain, nf, table;
        std::span<const uint8_t> key, delta;
        uint64_t merge_sequence = 0;
    };
    // apply_replica for each, with one write of the book for all of them.
    // Returns which applied (the others were replays).  Checks every table
    // and key first and throws Error before anything changed; when an
    // apply_delta refuses, the others stay applied and Error names it.
    std::vector<bool> apply_replicas(const std::string &peer, const std::vector<ReplicaDelta> &deltas);

    const std::filesystem::path &path() const noexcept { return _path; }

private:
    using ReplicaTable = std::tuple<std::string, std::string, std::string, std::string>; // peer, chain, nf, table
    // A peer's newest merge sequence for a table, and the keys merged under it.
    struct ReplicaProgress {
        uint64_t sequence = 0;
        std::set<std::vector<uint8_t>> keys;
    };

    void load();
    void save() const; // temp file, fsync, rename
    Table *find_table(const std::string &chain, const std::string &nf, const std::string &table);
    // Returns `items` of `l` into its table: false when the table is not
    // there yet; throws Error when take_back fails.
    bool return_items(const Lease &l, const std::vector<uint8_t> &items);

    StateStore &_store;
    std::filesystem::path _path;
    mutable std::mutex _mu;
    uint64_t _next_id = 1;
    std::map<uint64_t, Lease> _leases;
    std::map<ReplicaTable, ReplicaProgress> _replicas;
};

} // namespace serpens::state
