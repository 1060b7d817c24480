#pragma once
// This host's part in a cluster of serpens-hosts: the peer service started
// from host.toml's [peer], and what serpensctl peers shows of it.

#include "config/host_config.h"
#include "io/port.h"
#include "peer/service.h"

#include <nlohmann/json.hpp>

#include <memory>
#include <span>

namespace serpens {

// Starts the peer service on an EAL control thread when [peer] is there
// (nullptr otherwise): its listener, the peers it dials, and its Hello with
// the underlay port's address and MAC.  Throws Error naming the file or
// address it cannot use.
std::unique_ptr<peer::PeerService> start_peers(const HostConfig &cfg, std::span<const io::Port> ports);

// serpensctl peers: every peer of [peer] with its liveness and what it
// announced, and the service's counters.  `service` may be nullptr ([peer]
// absent).
nlohmann::ordered_json peers_json(const HostConfig &cfg, const peer::PeerService *service);

} // namespace serpens
