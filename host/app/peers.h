#pragma once
// This host's part in a cluster of serpens-hosts (host.toml's [peer]): the
// peer service, the VXLAN underlay to the other hosts, and the chains scaled
// onto them (paper §III-A2, migration avoidance):
//
//  - scale_out(chain, peer) asks the peer to run the chain for this host,
//    learns the chain's tag there, and steers the chain's new flows to it
//    (with other peers taking them already: an equal share of theirs);
//    flows already here stay here (the flow table pins them).  The peer processes them and sends them back through
//    the tunnel, marked as returned; this host transmits them on the
//    chain's egress, and remembers the translated flow as the peer's so
//    its replies go there too.
//  - scale_in(chain, peer) steers new flows back here; the flows the peer
//    serves finish there.
//  - A peer that goes down serves nothing: its flows come back here as new
//    flows (their state on it is lost) — FlowSteering::peer_up — and the
//    scale-out ends: a peer that comes back gets no flows until scaled again.
//
// Global/read state is copied first where the peer's differs
// (app/read_state_copy.h).  Global/write state goes with a scale-out (paper
// §III-A2):
//  - RELEASE state (nat's port pool) is lent: every key's share, as one more
//    instance would get it, leaves this host's cells as a lease
//    (state/lease_book.h, kept in the state directory), and the peer takes
//    it over as that key's whole state there.  The peer renews its leases;
//    one not renewed comes back here after lease_ms, and the peer stops
//    handing out from it earlier (at three quarters of it), so an item is
//    never handed out on both hosts.
//  - After a scale-in, once the peer's flows of the chain are gone, it gives
//    back what it did not hand out (LeaseReturn) and the change of each
//    EVENTUAL entry (mon's counts) since it began (ReplicaMerge, applied once
//    per merge sequence).
//
// Peers are numbered 1..127 in [[peer.host]] order: that number is what a
// flow-table entry keeps for the peer that serves it, so reordering the
// list while flows are pinned sends them to the wrong peer.

#include "app/read_state_copy.h"
#include "config/host_config.h"
#include "instance/dataplane.h"
#include "instance/manager.h"
#include "peer/service.h"
#include "state/executor.h"
#include "state/lease_book.h"

#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <vector>

namespace serpens {

class Cluster {
public:
    // Sets the dataplane's underlay (call before Dataplane::prepare()) and
    // starts the peer service on an EAL control thread, when [peer] is
    // there.  `chains` are the chains this host runs, by name; `store` holds
    // their state.  Throws Error naming the file or address it cannot use.
    Cluster(const HostConfig &cfg, Dataplane &dataplane, InstanceManager &manager, state::StateStore &store,
            std::map<std::string, uint32_t> chains);
    ~Cluster();

    // nullptr without [peer].
    const peer::PeerService *service() const noexcept { return _service.get(); }

    // Follows the peers' liveness and what they announced (their tunnels,
    // whether each may serve flows), takes back leases past their deadline,
    // renews the leases this host holds and sends back the state of chains
    // it no longer serves.  Call every ~100 ms from a control thread.
    void tick();

    // serpensctl scale <chain> +1 --peer <id> / -1 --peer <id>.  Throw Error
    // with the reason (no [peer], unknown chain or peer, peer down, it refused).
    nlohmann::ordered_json scale_out(const std::string &chain, const std::string &peer_id);
    nlohmann::ordered_json scale_in(const std::string &chain, const std::string &peer_id);

    // serpensctl peers: every peer of [peer] with its liveness and what it
    // announced, the chains it serves for this host, those this host runs
    // for it (with when its first packet ran here), and the counters.
    nlohmann::ordered_json peers_json() const;

private:
    // A lease this host holds from a peer (the serving side).
    struct HeldLease {
        std::string grantor;
        uint64_t id = 0;
        std::string chain, nf, table, key;
        uint32_t duration_ms = 0;
        uint64_t stop_at_ms = 0;           // unix ms: stop handing out from it (before the grantor takes it back)
        uint64_t renew_at_ms = 0;          // unix ms
        std::optional<std::string> unused; // surrendered, not yet acknowledged: resent as it is
    };
    // A change of an EVENTUAL entry on its way to the peer it came from:
    // resent with the same sequence until acknowledged, so it counts once.
    struct ReplicaOut {
        std::string origin, chain, nf, table, key, delta;
        uint64_t sequence = 0;
    };
    // A chain this host runs for a peer: where its EVENTUAL entries stood
    // when it began, so what comes back is only this host's change.
    struct ServedChain {
        std::string origin, chain;
        bool draining = false; // scaled in: returns its state once its flows are gone
        uint64_t asked_ns = 0; // monotonic: when the scale-out request came
        std::map<std::tuple<std::string, std::string, std::string>, std::string> baselines; // (nf, table, key)
    };

    // Requests from peers, on the service thread.
    peer::Envelope answer(const std::string &peer_id, const peer::Envelope &request);
    peer::Envelope take_leases(const std::string &grantor, const peer::LeaseGrants &grants);
    peer::Envelope answer_lease_request(const std::string &peer_id, const peer::Envelope &request);
    // Lends every RELEASE key of `chain` to the peer; throws Error.
    void grant_leases(const std::string &chain, const std::string &peer_id);
    // The serving side's clock: renewals, leases past their stop, and the
    // state of drained chains going home.
    void tick_held_leases(uint64_t now_ms);
    // A drained chain: its leases' unused parts and its EVENTUAL changes
    // are made ready to go back (under _held_mutex).
    void pack_state_to_return(const ServedChain &served);
    void send_returns();
    // tick's part under _mutex: tunnels, liveness, scale-outs that end.
    void follow_peers();
    // New flows of the chain's buckets that `number` takes stay here from now.
    void keep_new_flows_here(uint32_t tag, uint8_t number);
    // A peer that went down while taking new flows: the scale-out ends.
    void end_serving(uint32_t tag, uint8_t number, const std::string &peer_id);
    // 1.. in [[peer.host]] order; throws Error for an id not there.
    uint8_t peer_number(const std::string &peer_id) const;
    uint32_t chain_tag(const std::string &chain) const;
    // peers_json's view of the chains this host runs for `peer_id`.
    nlohmann::ordered_json chains_run_for(const std::string &peer_id, uint8_t number) const;

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
    state::StateStore &_store;
    std::unique_ptr<state::LeaseBook> _leases; // what this host lent (with [peer] only)
    ReadStateReceiver _read_state;             // copies of global/read tables from chains' owners
    mutable std::mutex _held_mutex;            // the serving side: service thread and tick
    std::vector<HeldLease> _held;
    std::vector<ServedChain> _served;
    std::vector<ReplicaOut> _replicas_out;
};

} // namespace serpens
