#pragma once
// What the control socket's commands do on a running host: the one place
// that turns a parsed request (control/request.h) into a reply, reading the
// dataplane, the instance manager and what the host was started from.

#include "control/server.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace serpens {

class Dataplane;
class InstanceManager;
namespace metering {
class Meter;
}
class Reloader;
class Cluster;

// Who this host is, for "status" and "version".
struct HostIdentity {
    std::string id;
    std::string config_file;
    std::string state_dir;
    std::string control_socket;
    std::string plugin_dir;
    std::string chains_dir;
    std::chrono::system_clock::time_point started = std::chrono::system_clock::now();
};

class ControlCommands {
public:
    // `reloader` also says which plugins and chains the host runs from now;
    // `cluster` answers "peers" and scales chains onto peers (app/peers.h).
    ControlCommands(Dataplane &dataplane, InstanceManager &manager, metering::Meter &meter, Reloader &reloader,
                    HostIdentity identity, Cluster &cluster);

    // The control server's handler: one request line in, one reply line out.
    std::string handle(std::string_view line, const ControlPeer &peer);

private:
    nlohmann::ordered_json status() const;
    nlohmann::ordered_json chains() const;
    nlohmann::ordered_json plugins() const;
    nlohmann::ordered_json instances() const;
    nlohmann::ordered_json live_stats() const; // counters as they are, before "clear" is taken off

    Dataplane &_dp;
    InstanceManager &_manager;
    metering::Meter &_meter;
    Reloader &_reloader;
    HostIdentity _identity;
    Cluster &_cluster;
    // "clear": the counters then, taken off every later "stats".
    nlohmann::ordered_json _cleared;
    std::chrono::system_clock::time_point _cleared_at{};
};

} // namespace serpens
