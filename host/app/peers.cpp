#include "app/peers.h"

#include "core/error.h"
#include "net/addr_text.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace serpens {
namespace {

// Requests from peers.  Scaling a chain onto this host is not built yet
// (issue 19): a peer asking for it is told so, not left waiting.
peer::Envelope answer(const std::string &peer_id, const peer::Envelope &request)
{
    spdlog::warn("peer '{}' sent request {} ({}), which this host does not take yet", peer_id, request.request_id(),
                 peer::body_name(request));
    peer::Envelope reply;
    peer::Error *error = reply.mutable_error();
    error->set_code(peer::Error::CODE_UNSUPPORTED);
    error->set_text("this host does not take scale, state or lease requests yet");
    return reply;
}

std::string ipv4_text(uint32_t host_order)
{
    return fmt::format("{}.{}.{}.{}", host_order >> 24, host_order >> 16 & 0xff, host_order >> 8 & 0xff,
                       host_order & 0xff);
}

} // namespace

std::unique_ptr<peer::PeerService> start_peers(const HostConfig &cfg, std::span<const io::Port> ports)
{
    const PeerConfig &pc = cfg.peer;
    if (!pc.enabled) {
        return nullptr;
    }
    peer::PeerServiceOptions o;
    o.host_id = cfg.id;
    o.listen_address = pc.listen_address;
    o.listen_port = pc.listen_port;
    o.tls = {pc.certificate, pc.private_key, pc.ca};
    o.underlay_ipv4 = ntohl(pc.underlay_ip);
    o.vxlan_port = pc.vxlan_udp_port;
    // host.toml has named an existing port here: config checked it.
    auto underlay =
        std::find_if(ports.begin(), ports.end(), [&](const io::Port &p) { return p.name == pc.underlay_port; });
    if (underlay == ports.end()) {
        throw Error(
            fmt::format("{}:{}: [peer] underlay_port '{}' is not a started port", cfg.file, pc.line, pc.underlay_port));
    }
    rte_ether_addr mac{};
    if (int rc = rte_eth_macaddr_get(underlay->id, &mac); rc != 0) {
        throw Error(fmt::format("[peer] underlay_port '{}': no MAC address ({})", pc.underlay_port, rte_strerror(-rc)));
    }
    std::copy(std::begin(mac.addr_bytes), std::end(mac.addr_bytes), o.underlay_mac.begin());
    for (const PeerHostConfig &h : pc.hosts) {
        o.peers.push_back({h.id, h.address, h.port});
    }
    o.heartbeat_interval = std::chrono::milliseconds(pc.heartbeat_ms);
    o.dead_after = std::chrono::milliseconds(pc.dead_after_ms);
    o.start_thread = [](pthread_t *thread, void *(*body)(void *), void *arg) {
        return rte_ctrl_thread_create(thread, "serpens-peer", nullptr, body, arg);
    };
    auto service = std::make_unique<peer::PeerService>(std::move(o), answer);
    spdlog::info("peer protocol listening on {}:{} for {} peer(s)", pc.listen_address, service->port(),
                 pc.hosts.size());
    return service;
}

nlohmann::ordered_json peers_json(const HostConfig &cfg, const peer::PeerService *service)
{
    nlohmann::ordered_json out;
    out["enabled"] = service != nullptr;
    out["host_id"] = cfg.id;
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    if (service == nullptr) {
        out["peers"] = list;
        return out;
    }
    out["listen"] = fmt::format("{}:{}", cfg.peer.listen_address, service->port());
    out["incarnation"] = service->incarnation();
    const auto now = peer::Clock::now();
    for (const peer::PeerStatus &p : service->peers()) {
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
        list.push_back(std::move(entry));
    }
    out["peers"] = std::move(list);
    const peer::PeerCounters c = service->counters();
    out["counters"] = {{"envelopes_in", c.envelopes_in},
                       {"envelopes_out", c.envelopes_out},
                       {"sessions_refused", c.sessions_refused},
                       {"handler_calls", c.handler_calls},
                       {"replies_from_cache", c.replies_from_cache}};
    return out;
}

} // namespace serpens
