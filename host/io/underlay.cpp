#include "io/underlay.h"

#include "config/host_config.h"

#include <stdexcept>
#include <string>

namespace serpens::io {

static_assert(PeerConfig::max_peer_hosts == max_peer, "host.toml takes as many peers as a flow entry can name");

void Underlay::set_peer(uint8_t peer, uint32_t ip, const std::array<uint8_t, 6> &mac, uint16_t udp_port)
{
    if (peer == 0 || peer > max_peer) {
        throw std::invalid_argument("peer number " + std::to_string(peer) + " is outside 1.." +
                                    std::to_string(max_peer));
    }
    std::lock_guard lock(_mutex);
    net::VxlanTunnel tunnel = _local;
    tunnel.dst_mac = mac;
    tunnel.dst_ip = ip;
    tunnel.udp_port = udp_port;
    net::VxlanTunnel &announced = _announced[peer];
    if (_tunnels[peer].load() != nullptr && announced.dst_mac == mac && announced.dst_ip == ip &&
        announced.udp_port == udp_port) {
        return; // the same Hello again: nothing to rebuild
    }
    announced = tunnel;
    _built.push_back(std::make_unique<net::VxlanEncap>(tunnel));
    _peer_ip[peer].store(ip, std::memory_order_relaxed);
    _tunnels[peer].store(_built.back().get(), std::memory_order_release);
    if (peer > _known.load()) {
        _known.store(peer, std::memory_order_release);
    }
}

} // namespace serpens::io
