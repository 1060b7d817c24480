#pragma once
// This host's part in a cluster of serpens-hosts (host.toml's [peer]): the
// peer service, the VXLAN underlay to the other hosts, and the chains scaled
// onto them (paper §III-A2, migration avoidance):
//
//  - scale_out(chain, peer) asks the peer to run the chain for this host,
//    learns the chain's tag there, and steers the new flows of a share of
//    the chain's buckets to it; flows already here stay here (the flow
//    table pins them).  The peer processes them and sends them back through
//    the tunnel, marked as returned; this host transmits them on the
//    chain's egress, and remembers the translated flow as the peer's so
//    its replies go there too.
//  - scale_in(chain, peer) steers new flows back here; the flows the peer
//    serves finish there.
//  - A peer that goes down serves nothing: its flows come back here as new
//    flows (their state on it is lost) — FlowSteering::peer_up.
//
// Peers are numbered 1..127 in [[peer.host]] order: that number is what a
// flow-table entry keeps for the peer that serves it, so reordering the
// list while flows are pinned sends them to the wrong peer.

#include "config/host_config.h"
#include "instance/dataplane.h"
#include "instance/manager.h"
#include "peer/service.h"

#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>

namespace serpens {

class Cluster {
public:
    // Sets the dataplane's underlay (call before Dataplane::prepare()) and
    // starts the peer service on an EAL control thread, when [peer] is
    // there.  `chains` are the chains this host runs, by name.  Throws Error
    // naming the file or address it cannot use.
    Cluster(const HostConfig &cfg, Dataplane &dataplane, InstanceManager &manager,
            std::map<std::string, uint32_t> chains);
    ~Cluster();

    // nullptr without [peer].
    const peer::PeerService *service() const noexcept { return _service.get(); }

    // Follows the peers' liveness and what they announced: their tunnels,
    // and whether each may serve flows.  Call every ~100 ms from a control
    // thread.
    void tick();

    // serpensctl scale <chain> +1 --peer <id> / -1 --peer <id>.  Throw Error
    // with the reason (no [peer], unknown chain or peer, peer down, it refused).
    nlohmann::ordered_json scale_out(const std::string &chain, const std::string &peer_id);
    nlohmann::ordered_json scale_in(const std::string &chain, const std::string &peer_id);

    // serpensctl peers: every peer of [peer] with its liveness and what it
    // announced, the chains it serves for this host, and the counters.
    nlohmann::ordered_json peers_json() const;

private:
    // Requests from peers, on the service thread.
    peer::Envelope answer(const std::string &peer_id, const peer::Envelope &request);
    // 1.. in [[peer.host]] order; throws Error for an id not there.
    uint8_t peer_number(const std::string &peer_id) const;
    uint32_t chain_tag(const std::string &chain) const;

    const HostConfig &_cfg;
    Dataplane &_dp;
    InstanceManager &_manager;
    std::map<std::string, uint32_t> _chains;
    std::unique_ptr<peer::PeerService> _service;
    mutable std::mutex _mutex; // scale events and tick, one at a time
    // Per (chain tag, peer): the buckets whose new flows it takes, and the
    // incarnation of it that accepted them (its flows are served only by it).
    std::map<std::pair<uint32_t, uint8_t>, uint32_t> _serving_buckets;
    std::map<std::pair<uint32_t, uint8_t>, uint64_t> _serving_incarnation;
};

} // namespace serpens
