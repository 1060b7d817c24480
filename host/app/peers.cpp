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

peer::Envelope error_reply(peer::Error::Code code, std::string text)
{
    peer::Envelope reply;
    peer::Error *error = reply.mutable_error();
    error->set_code(code);
    error->set_text(std::move(text));
    return reply;
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

Cluster::Cluster(const HostConfig &cfg, Dataplane &dataplane, InstanceManager &manager,
                 std::map<std::string, uint32_t> chains)
    : _cfg(cfg), _dp(dataplane), _manager(manager), _chains(std::move(chains))
{
    const PeerConfig &pc = cfg.peer;
    if (!pc.enabled) {
        return;
    }
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
    std::lock_guard lock(_mutex);
    for (const peer::PeerStatus &status : _service->peers()) {
        const uint8_t number = peer_number(status.id);
        const bool up = status.up && status.incarnation != 0;
        if (up) {
            const PeerHostConfig &host = _cfg.peer.hosts[number - 1];
            std::array<uint8_t, 6> mac{};
            const std::string &announced = status.hello.underlay_mac(); // 6 bytes: the codec checked
            std::copy(announced.begin(), announced.end(), mac.begin());
            _dp.underlay()->set_peer(number, htonl(status.hello.underlay_ipv4()), host.next_hop_mac.value_or(mac),
                                     static_cast<uint16_t>(status.hello.vxlan_port()));
        }
        // A peer serves our flows only in the incarnation that accepted
        // them: one that restarted has lost their state, so they come back
        // here as new flows, as from a peer that died.
        for (const auto &[name, tag] : _chains) {
            auto serving = _serving_incarnation.find({tag, number});
            const bool serves = up && serving != _serving_incarnation.end() && serving->second == status.incarnation;
            _dp.peering(tag).steering.peer_up[number].store(serves, std::memory_order_release);
        }
    }
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
    const uint64_t started = monotonic_ns();
    peer::Envelope request;
    peer::ScaleOutRequest *ask = request.mutable_scale_out_request();
    ask->set_chain(chain);
    ask->set_instances(1);
    ask->set_lease_ms(_cfg.peer.lease_ms);
    ask->set_origin_tag(tag);
    const peer::Envelope reply = _service->request(peer_id, std::move(request), peer_reply_timeout);
    if (reply.has_error()) {
        throw Error(fmt::format("peer '{}' refused to run chain '{}': {}", peer_id, chain, reply.error().text()));
    }
    if (!reply.has_scale_out_accept()) {
        throw Error(fmt::format("peer '{}' answered the scale-out of chain '{}' with {}", peer_id, chain,
                                peer::body_name(reply)));
    }
    const uint32_t tag_there = reply.scale_out_accept().tag();

    ChainPeering &peering = _dp.peering(tag);
    FlowSteering &steering = peering.steering;
    peering.tag_at_peer_plus_one[number].store(tag_there + 1, std::memory_order_relaxed);
    _serving_incarnation[{tag, number}] = status->incarnation;
    steering.peer_up[number].store(true, std::memory_order_release);

    // The peer takes new flows as one more instance would: an equal share
    // of the buckets, taken evenly from those whose new flows stay here.
    uint32_t local = 1;
    for (const ChainSummary &s : _manager.chain_summaries()) {
        if (s.name == chain) {
            local = std::max<uint32_t>(1, s.active + s.parked);
        }
    }
    std::set<uint8_t> serving_peers;
    std::vector<uint32_t> here;
    for (uint32_t b = 0; b < steering.new_flows.size(); ++b) {
        const uint8_t p = steering.new_flows[b].load(std::memory_order_relaxed);
        p == 0 ? here.push_back(b) : void(serving_peers.insert(p));
    }
    const auto instances = static_cast<uint32_t>(local + serving_peers.size() + 1);
    const auto share = std::min<uint32_t>(static_cast<uint32_t>(steering.new_flows.size()) / instances,
                                          static_cast<uint32_t>(here.size()));
    for (uint32_t i = 0; i < share; ++i) {
        steering.new_flows[here[i * here.size() / share]].store(number, std::memory_order_relaxed);
    }
    steering.steers.store(share > 0, std::memory_order_release);
    _serving_buckets[{tag, number}] = share;
    const double ms = static_cast<double>(monotonic_ns() - started) / 1e6;
    spdlog::info("chain '{}' scaled onto peer '{}' (its tag {}): new flows of {} of {} buckets go there ({:.1f} ms)",
                 chain, peer_id, tag_there, share, steering.new_flows.size(), ms);
    return {{"chain", chain},   {"peer", peer_id}, {"tag_at_peer", tag_there},
            {"buckets", share}, {"local", local},  {"of_buckets", steering.new_flows.size()},
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
    FlowSteering &steering = _dp.peering(tag).steering;
    bool steers = false;
    for (auto &bucket : steering.new_flows) {
        if (bucket.load(std::memory_order_relaxed) == number) {
            bucket.store(0, std::memory_order_relaxed);
        }
        steers = steers || bucket.load(std::memory_order_relaxed) != 0;
    }
    steering.steers.store(steers, std::memory_order_release);
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

peer::Envelope Cluster::answer(const std::string &peer_id, const peer::Envelope &request)
{
    if (request.has_scale_out_request()) {
        const peer::ScaleOutRequest &ask = request.scale_out_request();
        auto chain = _chains.find(ask.chain());
        if (chain == _chains.end()) {
            return error_reply(peer::Error::CODE_UNKNOWN,
                               fmt::format("chain '{}' does not run on host '{}'", ask.chain(), _cfg.id));
        }
        // Packets of it that we process for the peer go back with its tag.
        _dp.peering(chain->second)
            .tag_at_peer_plus_one[peer_number(peer_id)]
            .store(ask.origin_tag() + 1, std::memory_order_relaxed);
        spdlog::info("peer '{}' scales chain '{}' onto this host", peer_id, ask.chain());
        peer::Envelope reply;
        peer::ScaleOutAccept *accept = reply.mutable_scale_out_accept();
        accept->set_chain(ask.chain());
        accept->set_instances(1);
        accept->set_tag(chain->second);
        return reply;
    }
    if (request.has_scale_in()) {
        spdlog::info("peer '{}' sends no more new flows of chain '{}' here; those that came finish here", peer_id,
                     request.scale_in().chain());
        peer::Envelope reply;
        reply.mutable_ack();
        return reply;
    }
    spdlog::warn("peer '{}' sent request {} ({}), which this host does not take yet", peer_id, request.request_id(),
                 peer::body_name(request));
    return error_reply(peer::Error::CODE_UNSUPPORTED,
                       fmt::format("host '{}' does not take {} requests yet", _cfg.id, peer::body_name(request)));
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
