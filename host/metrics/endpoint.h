#pragma once
// The host's Prometheus endpoint as host.toml's [metrics] asks for it.

#include "metrics/server.h"

#include <memory>

namespace serpens {
struct HostConfig;
class Dataplane;
class InstanceManager;
namespace state {
class StateStore;
}
namespace peer {
class PeerService;
}
} // namespace serpens

namespace serpens::metrics {

// nullptr when [metrics] has no `listen`; else a server on a DPDK control
// thread (off the worker lcores) scraping `dp`, `manager`, `store` and
// `peers` (nullptr: no [peer]), which must outlive it, as must the ports
// (destroy it before they close).  Throws Error naming host.toml's line when
// it cannot listen.
std::unique_ptr<MetricsServer> start_endpoint(const HostConfig &cfg, const Dataplane &dp,
                                              const InstanceManager &manager, state::StateStore &store,
                                              const peer::PeerService *peers);

} // namespace serpens::metrics
