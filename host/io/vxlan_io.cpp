// VXLAN over mbufs; see vxlan_io.h.
#include "io/vxlan_io.h"

#include "config/host_config.h"

namespace serpens::io {

// [peer]'s limits are net's, written again because config does not include net.
static_assert(PeerConfig::min_underlay_mtu == net::kVxlanMinMtu);
static_assert(PeerConfig::max_underlay_mtu == net::kVxlanMaxMtu);
static_assert(PeerConfig::max_vni == net::kVxlanMaxVni);

void encap_burst(std::span<rte_mbuf *const> pkts, const net::VxlanEncap *const *tunnels, const uint32_t *tags,
                 const uint32_t *flow_hashes, uint8_t flags, net::VxlanResult *results,
                 net::VxlanCounters &counters) noexcept
{
    for (std::size_t i = 0; i < pkts.size(); ++i) {
        rte_mbuf *m = pkts[i];
        const net::VxlanEncap &tunnel = *tunnels[i];
        // Checked before the prepend, so a refused packet is left as it was.
        net::VxlanResult r = tunnel.check(m->pkt_len, tags[i], flags);
        if (r == net::VxlanResult::ok && rte_pktmbuf_headroom(m) < net::kVxlanOuterLen) {
            r = net::VxlanResult::no_headroom;
        }
        if (r == net::VxlanResult::ok) {
            const uint32_t inner_len = m->pkt_len;
            auto *outer = reinterpret_cast<uint8_t *>(rte_pktmbuf_prepend(m, net::kVxlanOuterLen));
            r = tunnel.encap(outer, inner_len, tags[i], flags, flow_hashes[i]);
        }
        results[i] = r;
        counters.count(r);
    }
}

void decap_burst(std::span<rte_mbuf *const> pkts, const net::VxlanDecapConfig &config, net::VxlanDecapped *out,
                 net::VxlanCounters &counters) noexcept
{
    for (std::size_t i = 0; i < pkts.size(); ++i) {
        rte_mbuf *m = pkts[i];
        if (m->nb_segs != 1) {
            out[i] = net::VxlanDecapped{};
            out[i].result = net::VxlanResult::segmented;
        } else {
            out[i] = net::vxlan_decap(rte_pktmbuf_mtod(m, const uint8_t *), m->data_len, config);
        }
        const net::VxlanDecapped &d = out[i];
        if (d.result == net::VxlanResult::ok) {
            // vxlan_decap checked that the inner frame lies within data_len.
            rte_pktmbuf_adj(m, d.inner_offset);
            rte_pktmbuf_trim(m, static_cast<uint16_t>(m->data_len - d.inner_len)); // the outer frame's padding
            m->packet_type = 0;
        }
        counters.count(d.result);
    }
}

} // namespace serpens::io
