#pragma once
// The underlay: the port a host reaches its peers on, and the VXLAN tunnels
// to them (net/vxlan.h).  The peer protocol's side of the host fills it in
// as peers announce themselves (Hello: address, MAC, VXLAN port); the data
// path reads it: dispatchers decapsulate what arrives on the port and name
// the peer by the outer source address, instances encapsulate what goes to a
// peer with its tunnel.
//
// Peers are numbered 1..max_peer in host.toml's [[peer.host]] order, the
// number a flow-table entry keeps for the peer that serves its flow
// (state/flow_table.h); 0 is this host.
//
// Threads: one control thread writes (set_peer), every lcore reads.  A
// tunnel once published is never freed while the host runs, so a reader
// may use what it loaded for as long as its burst lasts.

#include "net/vxlan.h"

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace serpens::io {

inline constexpr uint8_t max_peer = 127; // what a flow-table entry can name (instance/dataplane.cpp checks)

// What a packet's mark says about where it came from: bits 0-6 the peer
// whose tunnel brought it (0: a traffic port of this host), bit 7 that it
// comes back processed (the VXLAN header's kVxlanReturned).
inline constexpr uint8_t peer_mark_returned = 0x80;
inline constexpr uint8_t peer_of_mark(uint8_t mark) noexcept { return mark & 0x7f; }

class Underlay {
public:
    Underlay(uint16_t port_index, net::VxlanTunnel local, net::VxlanDecapConfig decap)
        : _port_index(port_index), _local(local), _decap(decap)
    {}

    uint16_t port_index() const noexcept { return _port_index; }
    const net::VxlanDecapConfig &decap() const noexcept { return _decap; }

    // Control side: peer `peer` (1..max_peer) is reached at underlay address
    // `ip` (network order), MAC `mac`, UDP port `udp_port`.  Builds its tunnel
    // from this host's side (`local`) when anything changed.  Throws
    // std::invalid_argument for a peer number out of range.
    void set_peer(uint8_t peer, uint32_t ip, const std::array<uint8_t, 6> &mac, uint16_t udp_port);

    // Hot path.  The tunnel to `peer`, nullptr while it has not announced
    // itself.
    const net::VxlanEncap *tunnel(uint8_t peer) const noexcept
    {
        return peer <= max_peer ? _tunnels[peer].load(std::memory_order_acquire) : nullptr;
    }
    // The peer whose underlay address is `ip` (network order); 0: none.
    uint8_t peer_at(uint32_t ip) const noexcept
    {
        const uint8_t known = _known.load(std::memory_order_acquire);
        for (uint8_t p = 1; p <= known; ++p) {
            if (_peer_ip[p].load(std::memory_order_relaxed) == ip) {
                return p;
            }
        }
        return 0;
    }

private:
    uint16_t _port_index;
    net::VxlanTunnel _local; // this host's side: src MAC and address, VNI, MTU
    net::VxlanDecapConfig _decap;
    std::array<std::atomic<const net::VxlanEncap *>, max_peer + 1> _tunnels{};
    std::array<std::atomic<uint32_t>, max_peer + 1> _peer_ip{};
    std::atomic<uint8_t> _known{0}; // highest peer number set so far
    std::mutex _mutex;              // control side
    std::array<net::VxlanTunnel, max_peer + 1> _announced{};
    std::vector<std::unique_ptr<net::VxlanEncap>> _built; // every tunnel published, kept for readers
};

} // namespace serpens::io
