#include "app/peers.h"

#include "core/clock.h"
#include "core/error.h"
#include "net/addr_text.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <set>

namespace serpens {
namespace {

// How long a scale request waits for the peer's answer.
constexpr std::chrono::milliseconds peer_reply_timeout{5000};

std::string ipv4_text(uint32_t host_order)
{
    return fmt::format("{}.{}.{}.{}", host_order >> 24, host_order >> 16 & 0xff, host_order >> 8 & 0xff,
                       host_order & 0xff);
}

uint64_t unix_ms()
{
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
}

state::Executor *executor_of(state::StateStore &store, const std::string &chain, const std::string &nf)
{
    for (state::Executor *ex : store.executors()) {
        if (ex->chain() == chain && ex->nf() == nf) {
            return ex;
        }
    }
    return nullptr;
}

void set_entry(peer::TableKey *entry, const std::string &chain, const std::string &nf, std::string_view table,
               std::string key)
{
    entry->set_chain(chain);
    entry->set_nf(nf);
    entry->set_table(std::string(table));
    entry->set_key(std::move(key));
}

std::string bytes_of(const std::vector<uint8_t> &v) { return {v.begin(), v.end()}; }

// EVENTUAL entries are uint64 counters (the default format apply_delta
// takes): now - then, word by word, wrapping.
std::string counter_delta(const std::string &now, const std::string &then)
{
    std::string delta(now.size(), '\0');
    for (std::size_t w = 0; w + 8 <= now.size(); w += 8) {
        uint64_t a = 0;
        uint64_t b = 0;
        std::memcpy(&a, now.data() + w, 8);
        if (w + 8 <= then.size()) {
            std::memcpy(&b, then.data() + w, 8);
        }
        const uint64_t d = a - b;
        std::memcpy(delta.data() + w, &d, 8);
    }
    return delta;
}

uint16_t underlay_port_index(const HostConfig &cfg, const Dataplane &dp)
{
    const auto &ports = dp.ports();
    auto it =
        std::find_if(ports.begin(), ports.end(), [&](const io::Port &p) { return p.name == cfg.peer.underlay_port; });
    if (it == ports.end()) {
        throw Error(fmt::format("{}:{}: [peer] underlay_port '{}' is not a started port", cfg.file, cfg.peer.line,
                                cfg.peer.underlay_port));
    }
    return static_cast<uint16_t>(it - ports.begin());
}

} // namespace

Cluster::Cluster(const HostConfig &cfg, Dataplane &dataplane, InstanceManager &manager, state::StateStore &store,
                 std::map<std::string, uint32_t> chains)
    : _cfg(cfg), _dp(dataplane), _manager(manager), _chains(std::move(chains)), _store(store), _read_state(store)
{
    const PeerConfig &pc = cfg.peer;
    if (!pc.enabled) {
        return;
    }
    _leases = std::make_unique<state::LeaseBook>(store);
    const uint16_t underlay = underlay_port_index(cfg, dataplane);
    rte_ether_addr mac{};
    if (int rc = rte_eth_macaddr_get(dataplane.ports()[underlay].id, &mac); rc != 0) {
        throw Error(fmt::format("[peer] underlay_port '{}': no MAC address ({})", pc.underlay_port, rte_strerror(-rc)));
    }
    net::VxlanTunnel local;
    std::copy(std::begin(mac.addr_bytes), std::end(mac.addr_bytes), local.src_mac.begin());
    local.src_ip = pc.underlay_ip;
    local.vni = pc.vni;
    local.mtu = pc.underlay_mtu;
    net::VxlanDecapConfig decap;
    decap.udp_port = pc.vxlan_udp_port;
    decap.local_ip = pc.underlay_ip;
    decap.vni = pc.vni;
    _dp.set_underlay(std::make_unique<io::Underlay>(underlay, local, decap));

    peer::PeerServiceOptions o;
    o.host_id = cfg.id;
    o.listen_address = pc.listen_address;
    o.listen_port = pc.listen_port;
    o.tls = {pc.certificate, pc.private_key, pc.ca};
    o.underlay_ipv4 = ntohl(pc.underlay_ip);
    o.underlay_mac = local.src_mac;
    o.vxlan_port = pc.vxlan_udp_port;
    for (const PeerHostConfig &h : pc.hosts) {
        o.peers.push_back({h.id, h.address, h.port});
    }
    o.heartbeat_interval = std::chrono::milliseconds(pc.heartbeat_ms);
    o.dead_after = std::chrono::milliseconds(pc.dead_after_ms);
    o.start_thread = [](pthread_t *thread, void *(*body)(void *), void *arg) {
        return rte_ctrl_thread_create(thread, "serpens-peer", nullptr, body, arg);
    };
    // Last: its thread calls answer() at once.
    _service = std::make_unique<peer::PeerService>(
        std::move(o),
        [this](const std::string &peer_id, const peer::Envelope &request) { return answer(peer_id, request); });
    spdlog::info("peer protocol listening on {}:{} for {} peer(s)", pc.listen_address, _service->port(),
                 pc.hosts.size());
}

Cluster::~Cluster()
{
    _service.reset(); // its thread calls answer(), which uses the members
}

uint8_t Cluster::peer_number(const std::string &peer_id) const
{
    const auto &hosts = _cfg.peer.hosts;
    auto it = std::find_if(hosts.begin(), hosts.end(), [&](const PeerHostConfig &h) { return h.id == peer_id; });
    if (it == hosts.end()) {
        throw Error(fmt::format("no peer '{}' in [[peer.host]] of {}", peer_id, _cfg.file));
    }
    return static_cast<uint8_t>(it - hosts.begin() + 1);
}

uint32_t Cluster::chain_tag(const std::string &chain) const
{
    auto it = _chains.find(chain);
    if (it == _chains.end()) {
        throw Error(fmt::format("chain '{}' does not run on host '{}'", chain, _cfg.id));
    }
    return it->second;
}

void Cluster::tick()
{
    if (_service == nullptr) {
        return;
    }
    {
        std::lock_guard lock(_mutex);
        follow_peers();
    }
    // Off the lock: these wait on peers, and scale requests must not.
    for (const state::Lease &lease : _leases->expire(unix_ms())) {
        if (lease.returning) {
            spdlog::info("lease {} of {}/{}/{} returned by peer '{}'", lease.id, lease.chain, lease.nf, lease.table,
                         lease.peer);
        } else {
            spdlog::warn("lease {} of {}/{}/{} to peer '{}' expired unrenewed: its items are this host's again",
                         lease.id, lease.chain, lease.nf, lease.table, lease.peer);
        }
    }
    tick_held_leases(unix_ms());
}

void Cluster::follow_peers()
{
    for (const peer::PeerStatus &status : _service->peers()) {
        const uint8_t number = peer_number(status.id);
        const bool up = status.up && status.incarnation != 0;
        if (up) {
            const PeerHostConfig &host = _cfg.peer.hosts[number - 1];
            std::array<uint8_t, 6> mac{};
            const std::string &announced = status.hello.underlay_mac(); // 6 bytes: the codec checked
            std::copy_n(announced.begin(), std::min(announced.size(), mac.size()), mac.begin());
            _dp.underlay()->set_peer(number, htonl(status.hello.underlay_ipv4()), host.next_hop_mac.value_or(mac),
                                     static_cast<uint16_t>(status.hello.vxlan_port()));
        }
        // A peer serves our flows only in the incarnation that accepted
        // them: one that restarted has lost their state, so they come back
        // here as new flows, as from a peer that died.
        for (const auto &[name, tag] : _chains) {
            auto serving = _serving_incarnation.find({tag, number});
            if (serving == _serving_incarnation.end()) {
                continue;
            }
            const bool serves = up && serving->second == status.incarnation;
            _dp.peering(tag).steering.peer_up[number].store(serves, std::memory_order_release);
            if (!serves) {
                end_serving(tag, number, status.id);
            }
        }
    }
}

void Cluster::keep_new_flows_here(uint32_t tag, uint8_t number)
{
    FlowSteering &steering = _dp.peering(tag).steering;
    bool steers = false;
    for (auto &bucket : steering.new_flows) {
        if (bucket.load(std::memory_order_relaxed) == number) {
            bucket.store(0, std::memory_order_relaxed);
        }
        steers = steers || bucket.load(std::memory_order_relaxed) != 0;
    }
    steering.steers.store(steers, std::memory_order_release);
}

void Cluster::end_serving(uint32_t tag, uint8_t number, const std::string &peer_id)
{
    keep_new_flows_here(tag, number);
    _serving_incarnation.erase({tag, number});
    _serving_buckets.erase({tag, number});
    spdlog::warn("peer '{}' went down or restarted: its flows come back here as new flows, and it takes no new ones",
                 peer_id);
}

nlohmann::ordered_json Cluster::scale_out(const std::string &chain, const std::string &peer_id)
{
    if (_service == nullptr) {
        throw Error(fmt::format("host '{}' has no [peer] in {}: there is no peer to scale onto", _cfg.id, _cfg.file));
    }
    const uint32_t tag = chain_tag(chain);
    const uint8_t number = peer_number(peer_id);
    std::lock_guard lock(_mutex);
    if (_serving_buckets[{tag, number}] > 0) {
        throw Error(fmt::format("chain '{}' already sends new flows to peer '{}'; scale it in first", chain, peer_id));
    }
    const std::optional<peer::PeerStatus> status = _service->peer(peer_id);
    if (!status || !status->up || status->incarnation == 0) {
        throw Error(fmt::format("peer '{}' is down (serpensctl peers shows why)", peer_id));
    }
    // The flow table is what keeps a flow where it started.
    uint32_t local = 1;
    bool pins_flows = false;
    for (const ChainSummary &s : _manager.chain_summaries()) {
        if (s.name == chain) {
            local = std::max<uint32_t>(1, s.active + s.parked);
            pins_flows = s.has_flows;
        }
    }
    if (!pins_flows) {
        throw Error(fmt::format("chain '{}' keeps no per-flow state, so nothing would keep its flows on one host; "
                                "only chains with a flow table scale onto a peer",
                                chain));
    }
    for (const state::Lease &lease : _leases->leases()) {
        if (lease.peer == peer_id && lease.chain == chain) {
            throw Error(fmt::format("peer '{}' still holds lease {} of chain '{}' from its last scale-out; it "
                                    "returns it once its flows are gone, or it expires",
                                    peer_id, lease.id, chain));
        }
    }
    const uint64_t started = monotonic_ns();
    peer::Envelope request;
    peer::ScaleOutRequest *ask = request.mutable_scale_out_request();
    ask->set_chain(chain);
    ask->set_instances(1);
    ask->set_lease_ms(_cfg.peer.lease_ms);
    ask->set_origin_tag(tag);
    for (peer::ReadStateDigest &digest : digests_of(_store, chain)) {
        *ask->add_read_state() = std::move(digest);
    }
    const peer::Envelope reply = _service->request(peer_id, std::move(request), peer_reply_timeout);
    if (reply.has_error()) {
        throw Error(fmt::format("peer '{}' refused to run chain '{}': {}", peer_id, chain, reply.error().text()));
    }
    if (!reply.has_scale_out_accept()) {
        throw Error(fmt::format("peer '{}' answered the scale-out of chain '{}' with {}", peer_id, chain,
                                peer::body_name(reply)));
    }
    const uint32_t tag_there = reply.scale_out_accept().tag();
    const auto &copies = reply.scale_out_accept().read_state_wanted();
    try {
        send_copies(*_service, peer_id, _store, chain, copies, peer_reply_timeout);
        grant_leases(chain, peer_id);
    } catch (const Error &) {
        // What it took comes back when it drains, or when the leases expire.
        peer::Envelope undo;
        undo.mutable_scale_in()->set_chain(chain);
        try {
            _service->request(peer_id, std::move(undo), peer_reply_timeout);
        } catch (const Error &) {
        }
        throw;
    }

    ChainPeering &peering = _dp.peering(tag);
    FlowSteering &steering = peering.steering;
    peering.tag_at_peer_plus_one[number].store(tag_there + 1, std::memory_order_relaxed);
    _serving_incarnation[{tag, number}] = status->incarnation;
    steering.peer_up[number].store(true, std::memory_order_release);

    // The chain outgrew this host: the peer takes its new flows, those of
    // every bucket whose new flows stay here.  When other peers take them
    // all already, it takes an equal share of theirs, evenly.
    std::set<uint8_t> serving_peers;
    std::vector<uint32_t> here;
    std::vector<uint32_t> elsewhere;
    for (uint32_t b = 0; b < steering.new_flows.size(); ++b) {
        const uint8_t p = steering.new_flows[b].load(std::memory_order_relaxed);
        p == 0 ? here.push_back(b) : (serving_peers.insert(p), elsewhere.push_back(b));
    }
    std::vector<uint32_t> taken = here;
    if (taken.empty()) {
        const auto share = static_cast<uint32_t>(elsewhere.size() / (serving_peers.size() + 1));
        for (uint32_t i = 0; i < share; ++i) {
            const uint32_t b = elsewhere[i * elsewhere.size() / share];
            taken.push_back(b);
            --_serving_buckets[{tag, steering.new_flows[b].load(std::memory_order_relaxed)}];
        }
    }
    for (uint32_t b : taken) {
        steering.new_flows[b].store(number, std::memory_order_relaxed);
    }
    const auto share = static_cast<uint32_t>(taken.size());
    steering.steers.store(share > 0 || !elsewhere.empty(), std::memory_order_release);
    _serving_buckets[{tag, number}] = share;
    const double ms = static_cast<double>(monotonic_ns() - started) / 1e6;
    spdlog::info("chain '{}' scaled onto peer '{}' (its tag {}): new flows of {} of {} buckets go there ({:.1f} ms)",
                 chain, peer_id, tag_there, share, steering.new_flows.size(), ms);
    return {{"chain", chain},
            {"peer", peer_id},
            {"started_ns", started}, // monotonic: when the command came
            {"tag_at_peer", tag_there},
            {"buckets", share},
            {"local", local},
            {"of_buckets", steering.new_flows.size()},
            {"read_state_copied", copies.size()},
            {"ms", ms}};
}

nlohmann::ordered_json Cluster::scale_in(const std::string &chain, const std::string &peer_id)
{
    if (_service == nullptr) {
        throw Error(fmt::format("host '{}' has no [peer] in {}: no chain runs on a peer", _cfg.id, _cfg.file));
    }
    const uint32_t tag = chain_tag(chain);
    const uint8_t number = peer_number(peer_id);
    std::lock_guard lock(_mutex);
    uint32_t &buckets = _serving_buckets[{tag, number}];
    if (buckets == 0) {
        throw Error(fmt::format("chain '{}' sends no new flows to peer '{}'", chain, peer_id));
    }
    keep_new_flows_here(tag, number);
    const uint32_t returned = buckets;
    buckets = 0;
    // The flows it serves finish there: the tag and tunnel stay.
    std::string told = "yes";
    try {
        peer::Envelope request;
        request.mutable_scale_in()->set_chain(chain);
        const peer::Envelope reply = _service->request(peer_id, std::move(request), peer_reply_timeout);
        if (reply.has_error()) {
            told = reply.error().text();
        }
    } catch (const Error &e) {
        told = e.what();
    }
    spdlog::info("chain '{}' scaled back from peer '{}': new flows of {} buckets stay here again", chain, peer_id,
                 returned);
    return {{"chain", chain}, {"peer", peer_id}, {"buckets", returned}, {"peer_told", told}};
}

void Cluster::grant_leases(const std::string &chain, const std::string &peer_id)
{
    for (state::Executor *ex : _store.executors()) {
        if (ex->chain() != chain) {
            continue;
        }
        for (state::Table *t : ex->tables()) {
            if (t->kind() != state::TableKind::release) {
                continue;
            }
            const std::vector<state::Lease> leases = _leases->grant_all(
                peer_id, chain, ex->nf(), std::string(t->name()), ex->keys(*t), _cfg.peer.lease_ms, unix_ms());
            for (std::size_t first = 0; first < leases.size();) {
                peer::Envelope request;
                peer::LeaseGrants *grants = request.mutable_lease_grants();
                std::size_t bytes = 0;
                for (; first < leases.size() && bytes < peer::kBatchBytes &&
                       static_cast<std::size_t>(grants->grants_size()) < peer::kMaxBatchItems;
                     ++first) {
                    const state::Lease &lease = leases[first];
                    peer::LeaseGrant *grant = grants->add_grants();
                    grant->set_lease_id(lease.id);
                    set_entry(grant->mutable_entry(), chain, ex->nf(), t->name(), bytes_of(lease.key));
                    grant->set_value(bytes_of(lease.value));
                    grant->set_duration_ms(_cfg.peer.lease_ms);
                    bytes += lease.key.size() + lease.value.size();
                }
                const peer::Envelope reply = _service->request(peer_id, std::move(request), peer_reply_timeout);
                if (reply.has_error()) {
                    throw Error(fmt::format("peer '{}' did not take the leases of {}/{}/{}: {}", peer_id, chain,
                                            ex->nf(), t->name(), reply.error().text()));
                }
            }
            spdlog::info("chain '{}': {} lease(s) of {}/{} lent to peer '{}'", chain, leases.size(), ex->nf(),
                         t->name(), peer_id);
        }
    }
}

peer::Envelope Cluster::take_leases(const std::string &grantor, const peer::LeaseGrants &grants)
{
    // Every grant is checked before any is taken over: all, or none.
    std::vector<std::pair<state::Executor *, state::Table *>> targets;
    for (const peer::LeaseGrant &grant : grants.grants()) {
        const peer::TableKey &entry = grant.entry();
        state::Executor *ex = executor_of(_store, entry.chain(), entry.nf());
        state::Table *t = ex != nullptr ? ex->find(entry.table()) : nullptr;
        if (t == nullptr || t->kind() != state::TableKind::release) {
            return peer::error_reply(peer::Error::CODE_UNKNOWN,
                                     fmt::format("host '{}' has no RELEASE table {}/{}/{}", _cfg.id, entry.chain(),
                                                 entry.nf(), entry.table()));
        }
        if (entry.key().size() != t->key_size() || grant.value().size() != t->value_size()) {
            return peer::error_reply(peer::Error::CODE_BAD_REQUEST,
                                     fmt::format("{}/{}/{} has {}-byte keys and {}-byte values", entry.chain(),
                                                 entry.nf(), entry.table(), t->key_size(), t->value_size()));
        }
        targets.emplace_back(ex, t);
    }
    std::lock_guard lock(_held_mutex);
    const uint64_t now = unix_ms();
    for (int i = 0; i < grants.grants_size(); ++i) {
        const peer::LeaseGrant &grant = grants.grants(i);
        const peer::TableKey &entry = grant.entry();
        if (std::any_of(_held.begin(), _held.end(),
                        [&](const HeldLease &h) { return h.grantor == grantor && h.id == grant.lease_id(); })) {
            continue; // a retry
        }
        auto [ex, t] = targets[static_cast<std::size_t>(i)];
        if (int rc = ex->adopt(*t, entry.key().data(), grant.value().data(), grant.value().size()); rc != SERPENS_OK) {
            return peer::error_reply(peer::Error::CODE_REFUSED,
                                     fmt::format("{}/{}/{}: taking lease {} over failed ({})", entry.chain(),
                                                 entry.nf(), entry.table(), grant.lease_id(), rc));
        }
        // It stops handing out from it well before the grantor's deadline,
        // which started earlier than this host's (the message's way here).
        const uint32_t d = grant.duration_ms();
        _held.push_back({grantor, grant.lease_id(), entry.chain(), entry.nf(), entry.table(), entry.key(), d,
                         now + d * 3 / 4, now + d / 4, std::nullopt});
    }
    return peer::ack_reply();
}

peer::Envelope Cluster::answer_lease_request(const std::string &peer_id, const peer::Envelope &request)
{
    // A peer renews and returns only what was lent to it.  The book is read
    // once per request: a renewal names every lease of a pool.
    std::set<uint64_t> lent_to_peer;
    for (const state::Lease &lease : _leases->leases()) {
        if (lease.peer == peer_id) {
            lent_to_peer.insert(lease.id);
        }
    }
    auto granted_to_peer = [&](uint64_t id) { return lent_to_peer.count(id) != 0; };
    auto bytes = [](const std::string &b) {
        return std::span<const uint8_t>(reinterpret_cast<const uint8_t *>(b.data()), b.size());
    };
    try {
        if (request.has_lease_renews()) {
            std::vector<uint64_t> ids;
            for (const peer::LeaseRenew &renew : request.lease_renews().renews()) {
                if (granted_to_peer(renew.lease_id())) {
                    ids.push_back(renew.lease_id());
                }
            }
            const std::vector<bool> renewed = _leases->renew_all(ids, _cfg.peer.lease_ms, unix_ms());
            peer::Envelope reply;
            peer::LeaseRenews *done = reply.mutable_lease_renews();
            for (std::size_t i = 0; i < ids.size(); ++i) {
                if (renewed[i]) {
                    peer::LeaseRenew *r = done->add_renews();
                    r->set_lease_id(ids[i]);
                    r->set_duration_ms(_cfg.peer.lease_ms);
                }
            }
            return reply;
        }
        if (request.has_lease_returns()) {
            // Unknown ids (returned before, or expired): their items are here already.
            std::vector<std::pair<uint64_t, std::vector<uint8_t>>> returns;
            for (const peer::LeaseReturn &back : request.lease_returns().returns()) {
                if (granted_to_peer(back.lease_id())) {
                    const auto unused = bytes(back.value());
                    returns.emplace_back(back.lease_id(), std::vector<uint8_t>(unused.begin(), unused.end()));
                }
            }
            const std::size_t back = _leases->give_back_all(returns);
            spdlog::info("peer '{}' returned {} lease(s)", peer_id, back);
            return peer::ack_reply();
        }
        // One merge, or a batch of them.
        std::vector<state::LeaseBook::ReplicaDelta> deltas;
        auto take = [&](const peer::ReplicaMerge &merge) {
            const peer::TableKey &e = merge.entry();
            deltas.push_back(
                {e.chain(), e.nf(), e.table(), bytes(e.key()), bytes(merge.delta()), merge.merge_sequence()});
            return _chains.count(e.chain()) != 0;
        };
        const bool known = request.has_replica_merges() ? std::all_of(request.replica_merges().merges().begin(),
                                                                      request.replica_merges().merges().end(), take)
                                                        : take(request.replica_merge());
        if (!known) {
            return peer::error_reply(peer::Error::CODE_UNKNOWN,
                                     fmt::format("chain '{}' does not run on host '{}'", deltas.back().chain, _cfg.id));
        }
        const std::vector<bool> applied = _leases->apply_replicas(peer_id, deltas);
        const auto merged = std::count(applied.begin(), applied.end(), true);
        spdlog::info("peer '{}': {} change(s) of EVENTUAL state merged, {} merged before (skipped)", peer_id, merged,
                     static_cast<long>(applied.size()) - merged);
        return peer::ack_reply();
    } catch (const Error &e) {
        return peer::error_reply(peer::Error::CODE_REFUSED, e.what());
    }
}

void Cluster::tick_held_leases(uint64_t now)
{
    std::vector<HeldLease> due;
    {
        std::lock_guard lock(_held_mutex);
        for (auto it = _held.begin(); it != _held.end();) {
            // Past its stop, unrenewed: nothing more is handed out from it.
            if (now >= it->stop_at_ms && !it->unused) {
                state::Executor *ex = executor_of(_store, it->chain, it->nf);
                state::Table *t = ex != nullptr ? ex->find(it->table) : nullptr;
                std::vector<uint8_t> dropped;
                if (t != nullptr) {
                    ex->surrender(*t, it->key.data(), dropped);
                }
                spdlog::warn("lease {} of {}/{}/{} from peer '{}' was not renewed: no more of it is handed out here",
                             it->id, it->chain, it->nf, it->table, it->grantor);
                it = _held.erase(it);
                continue;
            }
            if (now >= it->renew_at_ms && !it->unused) {
                due.push_back(*it);
            }
            ++it;
        }
        // Scaled-in chains whose flows are gone: their state goes home.
        for (auto it = _served.begin(); it != _served.end();) {
            bool flows_left = false;
            for (const ChainSummary &summary :
                 it->draining ? _manager.chain_summaries() : std::vector<ChainSummary>{}) {
                flows_left = flows_left || (summary.name == it->chain && summary.flows_live > 0);
            }
            if (!it->draining || flows_left) {
                ++it;
                continue;
            }
            pack_state_to_return(*it);
            it = _served.erase(it);
        }
    }
    std::map<std::string, std::vector<uint64_t>> renew_by_grantor;
    for (const HeldLease &lease : due) {
        renew_by_grantor[lease.grantor].push_back(lease.id);
    }
    for (const auto &[grantor, ids] : renew_by_grantor) {
        peer::Envelope request;
        for (uint64_t id : ids) {
            request.mutable_lease_renews()->add_renews()->set_lease_id(id);
        }
        std::set<uint64_t> renewed;
        bool answered = false;
        try {
            const peer::Envelope reply = _service->request(grantor, std::move(request), peer_reply_timeout);
            answered = reply.has_lease_renews();
            for (const peer::LeaseRenew &r : reply.lease_renews().renews()) {
                renewed.insert(r.lease_id());
            }
        } catch (const Error &) {
        }
        std::lock_guard lock(_held_mutex);
        for (HeldLease &held : _held) {
            if (held.grantor != grantor || std::find(ids.begin(), ids.end(), held.id) == ids.end()) {
                continue;
            }
            if (renewed.count(held.id) != 0) {
                // From when the renewal was asked: the grantor's deadline runs from later.
                held.stop_at_ms = now + held.duration_ms * 3 / 4;
                held.renew_at_ms = unix_ms() + held.duration_ms / 4;
            } else if (answered) {
                held.stop_at_ms = 0; // expired there: stopped at the next tick
            } else {
                held.renew_at_ms = unix_ms() + held.duration_ms / 16; // try again soon
            }
        }
    }
    send_returns();
}

void Cluster::pack_state_to_return(const ServedChain &served)
{
    for (HeldLease &held : _held) {
        if (held.grantor == served.origin && held.chain == served.chain && !held.unused) {
            state::Executor *ex = executor_of(_store, held.chain, held.nf);
            state::Table *t = ex != nullptr ? ex->find(held.table) : nullptr;
            std::vector<uint8_t> unused;
            if (t != nullptr && ex->surrender(*t, held.key.data(), unused) == SERPENS_OK) {
                held.unused = bytes_of(unused);
            }
        }
    }
    for (state::Executor *ex : _store.executors()) {
        if (ex->chain() != served.chain) {
            continue;
        }
        for (state::Table *t : ex->tables()) {
            if (t->kind() != state::TableKind::eventual) {
                continue;
            }
            for (const std::vector<uint8_t> &key : ex->keys(*t)) {
                std::vector<uint8_t> now;
                if (ex->surrender(*t, key.data(), now) != SERPENS_OK) {
                    continue;
                }
                auto base = served.baselines.find({ex->nf(), std::string(t->name()), bytes_of(key)});
                std::string delta = counter_delta(bytes_of(now), base != served.baselines.end() ? base->second : "");
                if (delta.find_first_not_of('\0') != std::string::npos) {
                    _replicas_out.push_back({served.origin, served.chain, ex->nf(), std::string(t->name()),
                                             bytes_of(key), std::move(delta), unix_ms()});
                }
            }
        }
    }
}

void Cluster::send_returns()
{
    std::vector<HeldLease> returns;
    std::vector<ReplicaOut> merges;
    {
        std::lock_guard lock(_held_mutex);
        std::copy_if(_held.begin(), _held.end(), std::back_inserter(returns),
                     [](const HeldLease &h) { return h.unused.has_value(); });
        merges = _replicas_out;
    }
    // What is not acknowledged goes again next tick, the same bytes and
    // sequence: at worst a lease expires at its grantor meanwhile.  Items go
    // in batches (a pool has hundreds of keys, a drained mon a change per
    // host it saw), in order, stopping at the first batch not acknowledged.
    auto send_batches = [&](const std::string &to, const auto &items, auto add, auto acknowledged) {
        for (std::size_t first = 0; first < items.size();) {
            peer::Envelope request;
            const std::size_t begin = first;
            for (std::size_t bytes = 0;
                 first < items.size() && bytes < peer::kBatchBytes && first - begin < peer::kMaxBatchItems; ++first) {
                bytes += add(request, *items[first]);
            }
            try {
                if (_service->request(to, std::move(request), peer_reply_timeout).has_error()) {
                    return;
                }
            } catch (const Error &) {
                return;
            }
            acknowledged(std::span(items).subspan(begin, first - begin));
        }
    };
    std::map<std::string, std::vector<const HeldLease *>> leases_by_grantor;
    for (const HeldLease &lease : returns) {
        leases_by_grantor[lease.grantor].push_back(&lease);
    }
    // Named variables, not bindings: lambdas capture no binding before clang 16.
    for (const auto &by_grantor : leases_by_grantor) {
        const std::string &grantor = by_grantor.first;
        const auto &leases = by_grantor.second;
        send_batches(
            grantor, leases,
            [](peer::Envelope &request, const HeldLease &lease) {
                peer::LeaseReturn *back = request.mutable_lease_returns()->add_returns();
                back->set_lease_id(lease.id);
                back->set_value(*lease.unused);
                return lease.unused->size();
            },
            [&](std::span<const HeldLease *const> done) {
                spdlog::info("{} lease(s) returned to peer '{}'", done.size(), grantor);
                std::set<uint64_t> ids;
                for (const HeldLease *lease : done) {
                    ids.insert(lease->id);
                }
                std::lock_guard lock(_held_mutex);
                std::erase_if(_held, [&](const HeldLease &h) { return h.grantor == grantor && ids.count(h.id) != 0; });
            });
    }
    std::map<std::string, std::vector<const ReplicaOut *>> merges_by_origin;
    for (const ReplicaOut &merge : merges) {
        merges_by_origin[merge.origin].push_back(&merge);
    }
    for (const auto &by_origin : merges_by_origin) {
        const std::string &origin = by_origin.first;
        const auto &changes = by_origin.second;
        send_batches(
            origin, changes,
            [](peer::Envelope &request, const ReplicaOut &merge) {
                peer::ReplicaMerge *body = request.mutable_replica_merges()->add_merges();
                set_entry(body->mutable_entry(), merge.chain, merge.nf, merge.table, merge.key);
                body->set_delta(merge.delta);
                body->set_merge_sequence(merge.sequence);
                return merge.key.size() + merge.delta.size();
            },
            [&](std::span<const ReplicaOut *const> done) {
                using Id = std::tuple<std::string, std::string, std::string, std::string, uint64_t>;
                std::set<Id> ids;
                for (const ReplicaOut *m : done) {
                    ids.emplace(m->chain, m->nf, m->table, m->key, m->sequence);
                }
                std::lock_guard lock(_held_mutex);
                std::erase_if(_replicas_out, [&](const ReplicaOut &r) {
                    return r.origin == origin && ids.count(Id{r.chain, r.nf, r.table, r.key, r.sequence}) != 0;
                });
            });
    }
}

peer::Envelope Cluster::answer(const std::string &peer_id, const peer::Envelope &request)
{
    if (request.has_lease_grants()) {
        return take_leases(peer_id, request.lease_grants());
    }
    if (request.has_lease_renews() || request.has_lease_returns() || request.has_replica_merge() ||
        request.has_replica_merges()) {
        return answer_lease_request(peer_id, request);
    }
    if (request.has_state_copies()) {
        return _read_state.take(peer_id, request.state_copies());
    }
    if (request.has_scale_out_request()) {
        const uint64_t started = monotonic_ns();
        const peer::ScaleOutRequest &ask = request.scale_out_request();
        auto chain = _chains.find(ask.chain());
        if (chain == _chains.end()) {
            return peer::error_reply(peer::Error::CODE_UNKNOWN,
                                     fmt::format("chain '{}' does not run on host '{}'", ask.chain(), _cfg.id));
        }
        {
            // One owner at a time: a second one's leases would replace the
            // first one's state here, and what went back to either would be wrong.
            std::lock_guard lock(_held_mutex);
            for (const HeldLease &held : _held) {
                if (held.chain == ask.chain() && held.grantor != peer_id) {
                    return peer::error_reply(peer::Error::CODE_REFUSED,
                                             fmt::format("host '{}' runs chain '{}' for peer '{}' still", _cfg.id,
                                                         ask.chain(), held.grantor));
                }
            }
        }
        std::vector<peer::TableName> differ;
        try {
            differ = tables_that_differ(_store, ask.chain(), ask.read_state());
        } catch (const Error &e) {
            return peer::error_reply(peer::Error::CODE_REFUSED, e.what());
        }
        // Packets of it that we process for the peer go back with its tag.
        ChainPeering &peering = _dp.peering(chain->second);
        const uint8_t number = peer_number(peer_id);
        peering.tag_at_peer_plus_one[number].store(ask.origin_tag() + 1, std::memory_order_relaxed);
        peering.first_served_ns[number].store(0, std::memory_order_relaxed);
        // Where its EVENTUAL entries stand now: what goes back is the change.
        ServedChain served{peer_id, ask.chain(), false, monotonic_ns(), {}};
        std::size_t served_baselines = 0;
        for (state::Executor *ex : _store.executors()) {
            if (ex->chain() != ask.chain()) {
                continue;
            }
            for (state::Table *t : ex->tables()) {
                if (t->kind() != state::TableKind::eventual) {
                    continue;
                }
                for (const std::vector<uint8_t> &key : ex->keys(*t)) {
                    std::vector<uint8_t> value(t->value_size());
                    if (ex->read_global(*t, key.data(), value.data()) == SERPENS_OK) {
                        served.baselines[{ex->nf(), std::string(t->name()), bytes_of(key)}] = bytes_of(value);
                    }
                }
            }
        }
        {
            std::lock_guard lock(_held_mutex);
            std::erase_if(_served, [&](const ServedChain &s) { return s.origin == peer_id && s.chain == ask.chain(); });
            served_baselines = served.baselines.size();
            _served.push_back(std::move(served));
        }
        spdlog::info("peer '{}' scales chain '{}' onto this host ({} global/read table(s) to copy, {} EVENTUAL "
                     "entries recorded to send back their change later; {:.1f} ms)",
                     peer_id, ask.chain(), differ.size(), served_baselines,
                     static_cast<double>(monotonic_ns() - started) / 1e6);
        peer::Envelope reply;
        peer::ScaleOutAccept *accept = reply.mutable_scale_out_accept();
        accept->set_chain(ask.chain());
        accept->set_instances(1);
        accept->set_tag(chain->second);
        for (peer::TableName &name : differ) {
            *accept->add_read_state_wanted() = std::move(name);
        }
        return reply;
    }
    if (request.has_scale_in()) {
        spdlog::info("peer '{}' sends no more new flows of chain '{}' here; those that came finish here, then its "
                     "state goes back",
                     peer_id, request.scale_in().chain());
        std::lock_guard lock(_held_mutex);
        for (ServedChain &served : _served) {
            served.draining =
                served.draining || (served.origin == peer_id && served.chain == request.scale_in().chain());
        }
        return peer::ack_reply();
    }
    spdlog::warn("peer '{}' sent request {} ({}), which this host does not take yet", peer_id, request.request_id(),
                 peer::body_name(request));
    return peer::error_reply(peer::Error::CODE_UNSUPPORTED,
                             fmt::format("host '{}' does not take {} requests yet", _cfg.id, peer::body_name(request)));
}

nlohmann::ordered_json Cluster::chains_run_for(const std::string &peer_id, uint8_t number) const
{
    nlohmann::ordered_json chains = nlohmann::ordered_json::object();
    std::lock_guard lock(_held_mutex);
    for (const ServedChain &served : _served) {
        if (served.origin != peer_id) {
            continue;
        }
        const uint64_t first = _dp.peering(_chains.at(served.chain)).first_served_ns[number].load();
        nlohmann::ordered_json &c = chains[served.chain];
        c["draining"] = served.draining;
        // Monotonic clock values, for a benchmark that reads both hosts of one machine.
        c["asked_ns"] = served.asked_ns;
        c["first_packet_ns"] = first != 0 ? nlohmann::ordered_json(first) : nlohmann::ordered_json(nullptr);
        c["first_packet_after_ms"] = first >= served.asked_ns
                                         ? nlohmann::ordered_json(static_cast<double>(first - served.asked_ns) / 1e6)
                                         : nlohmann::ordered_json(nullptr);
    }
    return chains;
}

nlohmann::ordered_json Cluster::peers_json() const
{
    nlohmann::ordered_json out;
    out["enabled"] = _service != nullptr;
    out["host_id"] = _cfg.id;
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    if (_service == nullptr) {
        out["peers"] = list;
        return out;
    }
    out["listen"] = fmt::format("{}:{}", _cfg.peer.listen_address, _service->port());
    out["incarnation"] = _service->incarnation();
    const auto now = peer::Clock::now();
    const std::vector<state::Lease> leases = _leases->leases();
    std::lock_guard lock(_mutex);
    for (const peer::PeerStatus &p : _service->peers()) {
        nlohmann::ordered_json entry{{"id", p.id}, {"up", p.up}, {"sessions", p.sessions}};
        entry["last_seen_ms"] =
            p.last_seen == peer::Clock::time_point{}
                ? nlohmann::ordered_json(nullptr)
                : nlohmann::ordered_json(
                      std::chrono::duration_cast<std::chrono::milliseconds>(now - p.last_seen).count());
        if (p.incarnation != 0) {
            entry["incarnation"] = p.incarnation;
            entry["underlay"] = ipv4_text(p.hello.underlay_ipv4());
            // The codec accepts a Hello only with a 6-byte MAC.
            entry["underlay_mac"] = net::mac_text(reinterpret_cast<const uint8_t *>(p.hello.underlay_mac().data()));
            entry["vxlan_port"] = p.hello.vxlan_port();
        }
        // This host's chains whose new flows it takes, and how many buckets'.
        nlohmann::ordered_json chains = nlohmann::ordered_json::object();
        const uint8_t number = peer_number(p.id);
        for (const auto &[name, tag] : _chains) {
            auto it = _serving_buckets.find({tag, number});
            if (it != _serving_buckets.end() && it->second > 0) {
                chains[name] = it->second;
            }
        }
        entry["new_flows_of"] = std::move(chains);
        entry["runs_for_it"] = chains_run_for(p.id, number);
        entry["leases_granted"] =
            std::count_if(leases.begin(), leases.end(), [&](const state::Lease &l) { return l.peer == p.id; });
        list.push_back(std::move(entry));
    }
    out["peers"] = std::move(list);
    const peer::PeerCounters c = _service->counters();
    out["counters"] = {{"envelopes_in", c.envelopes_in},
                       {"envelopes_out", c.envelopes_out},
                       {"sessions_refused", c.sessions_refused},
                       {"handler_calls", c.handler_calls},
                       {"replies_from_cache", c.replies_from_cache}};
    return out;
}

} // namespace serpens
