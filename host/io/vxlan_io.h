#pragma once
// VXLAN over mbufs, a burst at a time: the router encapsulates the packets
// whose bucket a peer owns (encap_burst, then TX on the underlay port), the
// dispatcher decapsulates what arrives on the underlay port (decap_burst,
// then the inner frames go the way of any received packet).  The headers
// themselves are net/vxlan.h's.
//
// Both work in place on single mbufs, write one result per packet and count
// each result once; a packet refused is left exactly as it was (neither
// freed nor changed) for the caller to drop, count or pass on by its result's
// class (net::vxlan_result_class: not_vxlan is ordinary underlay traffic
// such as ARP, malformed and refused are drops).
//
// Hot path: no allocation, no exceptions, no locks, no per-packet indirect
// call.  Thread-safety: a burst's mbufs and `counters` belong to the calling
// lcore; the tunnels (immutable) and the config may be shared by all lcores.

#include "net/vxlan.h"

#include <rte_mbuf.h>

#include <cstdint>
#include <span>

namespace serpens::io {

// Encapsulates pkts[i] for i < pkts.size() in place (rte_pktmbuf_prepend of
// the 50 outer bytes) into tunnels[i], with chain tag tags[i], the UDP source
// port from flow_hashes[i] (the inner flow's symmetric hash) and `flags`
// (net::kVxlanReturned or 0) in the header.  results[i] says what happened:
// ok, no_headroom, or net::VxlanEncap::check's refusals (too_big for a packet
// the underlay MTU cannot carry).  tags, flow_hashes, tunnels and results
// hold at least pkts.size() entries.
void encap_burst(std::span<rte_mbuf *const> pkts, const net::VxlanEncap *const *tunnels, const uint32_t *tags,
                 const uint32_t *flow_hashes, uint8_t flags, net::VxlanResult *results,
                 net::VxlanCounters &counters) noexcept;

// Decapsulates pkts[i] for i < pkts.size() in place (rte_pktmbuf_adj of the
// outer headers, and the outer bytes after the inner frame trimmed) when
// net::vxlan_decap accepts it under `config`; out[i] says what it found
// (result, chain tag, flags, VNI, the sending peer's address; inner_offset is
// how many bytes were removed in front).  A chained mbuf is refused
// (segmented): the host receives into single mbufs.  After ok the mbuf's
// packet_type is cleared: the NIC's classification was the outer packet's.
// `out` holds at least pkts.size() entries.
void decap_burst(std::span<rte_mbuf *const> pkts, const net::VxlanDecapConfig &config, net::VxlanDecapped *out,
                 net::VxlanCounters &counters) noexcept;

} // namespace serpens::io
