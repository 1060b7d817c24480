// VXLAN encapsulation and decapsulation; see vxlan.h for the header layout.
#include "net/vxlan.h"

#include "net/result_table.h"
#include "net/wire.h"

#include <serpens/nf_util.h>

#include <cstring>
#include <stdexcept>
#include <string>

namespace serpens::net {

namespace {

using VxlanRow = detail::ResultRow<VxlanClass>;

constexpr VxlanRow kVxlanResults[] = {
#define SERPENS_NET_VXLAN_RESULT(sym, cls, desc) {#sym, desc, VxlanClass::cls},
#include "net/vxlan_results.def"
#undef SERPENS_NET_VXLAN_RESULT
};
static_assert(std::size(kVxlanResults) == kVxlanResultCount);
static_assert(kVxlanResults[0].cls == VxlanClass::ok);

// Past the end: "?", and malformed, the class nothing should act on.
constexpr VxlanRow kVxlanUnknown{"?", "?", VxlanClass::malformed};

// Offsets in the outer packet Serpens sends.
constexpr uint32_t kIp = 14;
constexpr uint32_t kUdp = kIp + 20;
constexpr uint32_t kVxlan = kUdp + 8;
static_assert(kVxlan + 8 == kVxlanOuterLen);

} // namespace

const char *vxlan_result_name(VxlanResult r) noexcept
{
    return detail::result_row(kVxlanResults, r, kVxlanUnknown).name;
}

const char *vxlan_result_description(VxlanResult r) noexcept
{
    return detail::result_row(kVxlanResults, r, kVxlanUnknown).description;
}

VxlanClass vxlan_result_class(VxlanResult r) noexcept
{
    return detail::result_row(kVxlanResults, r, kVxlanUnknown).cls;
}

void VxlanCounters::add(const VxlanCounters &other) noexcept
{
    for (std::size_t i = 0; i < kVxlanResultCount; ++i) {
        by_result[i] += other.load(i);
    }
}

VxlanEncap::VxlanEncap(const VxlanTunnel &tunnel)
{
    if (tunnel.vni > kVxlanMaxVni) {
        throw std::invalid_argument("VXLAN network id " + std::to_string(tunnel.vni) + " does not fit 24 bits");
    }
    if (tunnel.mtu < kVxlanMinMtu || tunnel.mtu > kVxlanMaxMtu) {
        throw std::invalid_argument("underlay MTU " + std::to_string(tunnel.mtu) + " is outside " +
                                    std::to_string(kVxlanMinMtu) + ".." + std::to_string(kVxlanMaxMtu));
    }
    _max_inner = tunnel.mtu - kVxlanIpOverhead;
    uint8_t *h = _header.data();
    std::memcpy(h, tunnel.dst_mac.data(), 6);
    std::memcpy(h + 6, tunnel.src_mac.data(), 6);
    serpens_st_be16(h + 12, kEtherIpv4);

    uint8_t *ip = h + kIp;
    ip[0] = 0x45;                    // version 4, IHL 5
    ip[1] = 0;                       // TOS
    serpens_st_be16(ip + 2, 0);      // total length: per packet
    serpens_st_be16(ip + 4, 0);      // id 0: DF is set, so never reassembled (RFC 6864 §4.1)
    serpens_st_be16(ip + 6, 0x4000); // DF: an underlay that cannot carry it says so rather than fragmenting
    ip[8] = 64;                      // TTL
    ip[9] = kProtoUdp;
    std::memcpy(ip + 12, &tunnel.src_ip, 4);
    std::memcpy(ip + 16, &tunnel.dst_ip, 4);
    serpens_st16(ip + 10, 0);
    _checksum = serpens_csum(ip, 20);

    uint8_t *udp = h + kUdp;
    serpens_st_be16(udp + 2, tunnel.udp_port); // source port and length: per packet; checksum 0

    uint8_t *vx = h + kVxlan;
    vx[0] = kVxlanFlagI;
    serpens_st_be32(vx + 4, tunnel.vni << 8); // VNI, then the flags byte (per packet)
}

VxlanResult VxlanEncap::encap(uint8_t *outer, uint32_t inner_len, uint32_t chain_tag, uint8_t flags,
                              uint32_t flow_hash) const noexcept
{
    const VxlanResult r = check(inner_len, chain_tag, flags);
    if (r != VxlanResult::ok) {
        return r;
    }
    std::memcpy(outer, _header.data(), kVxlanOuterLen);
    // check() bounded inner_len by the MTU, so both lengths fit 16 bits.
    const auto ip_len = static_cast<uint16_t>(inner_len + kVxlanIpOverhead);
    uint8_t *ip = outer + kIp;
    serpens_st_be16(ip + 2, ip_len);
    // The template's checksum was taken over a zero total length: one word changes.
    serpens_st16(ip + 10, serpens_csum_replace16(_checksum, 0, serpens_ld16(ip + 2)));
    uint8_t *udp = outer + kUdp;
    serpens_st_be16(udp, vxlan_source_port(flow_hash));
    serpens_st_be16(udp + 4, static_cast<uint16_t>(ip_len - 20));
    uint8_t *vx = outer + kVxlan;
    vx[1] = static_cast<uint8_t>(chain_tag >> 16);
    vx[2] = static_cast<uint8_t>(chain_tag >> 8);
    vx[3] = static_cast<uint8_t>(chain_tag);
    vx[7] = flags;
    return VxlanResult::ok;
}

VxlanDecapped vxlan_decap(const uint8_t *data, uint32_t len, const VxlanDecapConfig &config) noexcept
{
    VxlanDecapped out;
    auto fail = [&out](VxlanResult r) {
        out.result = r;
        return out;
    };
    if (data == nullptr || len < 14) {
        return fail(VxlanResult::truncated_l2);
    }
    uint32_t off = 14;
    uint16_t type = serpens_ld_be16(data + 12);
    if (type == kEtherVlan) {
        if (len < 18) {
            return fail(VxlanResult::truncated_l2);
        }
        type = serpens_ld_be16(data + 16);
        off = 18;
    }
    if (type != kEtherIpv4) {
        return fail(VxlanResult::not_ipv4);
    }

    if (len - off < 20) {
        return fail(VxlanResult::truncated_ipv4);
    }
    const uint8_t *ip = data + off;
    const uint32_t hlen = static_cast<uint32_t>(ip[0] & 0x0f) * 4;
    if ((ip[0] >> 4) != 4 || hlen < 20) {
        return fail(VxlanResult::bad_ipv4_header);
    }
    // Not UDP, or not to us: not VXLAN for this host, whatever else is wrong
    // with it (an af_packet capture truncates the kernel's own large TCP
    // segments, which are no concern of ours).
    if (ip[9] != kProtoUdp) {
        return fail(VxlanResult::not_udp);
    }
    if (config.local_ip != 0 && std::memcmp(ip + 16, &config.local_ip, 4) != 0) {
        return fail(VxlanResult::not_for_us);
    }
    if (hlen > len - off) {
        return fail(VxlanResult::truncated_ipv4);
    }
    const uint32_t total = serpens_ld_be16(ip + 2);
    if (total < hlen || total > len - off) {
        return fail(VxlanResult::bad_ipv4_length);
    }
    if (serpens_csum(ip, hlen) != 0) {
        return fail(VxlanResult::bad_ipv4_checksum);
    }
    if ((serpens_ld_be16(ip + 6) & 0x3fff) != 0) { // MF or a fragment offset
        return fail(VxlanResult::ipv4_fragment);
    }

    const uint32_t l4 = total - hlen; // the IPv4 payload, within the frame
    if (l4 < 8) {
        return fail(VxlanResult::truncated_udp);
    }
    const uint8_t *udp = ip + hlen;
    if (serpens_ld_be16(udp + 2) != config.udp_port) {
        return fail(VxlanResult::not_vxlan_port);
    }
    if (serpens_ld_be16(udp + 4) != l4) {
        return fail(VxlanResult::bad_udp_length);
    }

    if (l4 < 16) {
        return fail(VxlanResult::truncated_vxlan);
    }
    const uint8_t *vx = udp + 8;
    if ((vx[0] & kVxlanFlagI) == 0) {
        return fail(VxlanResult::no_vni_flag);
    }
    if (vx[0] != kVxlanFlagI || (vx[7] & ~kVxlanKnownFlags) != 0) {
        return fail(VxlanResult::unknown_vxlan_flags);
    }
    const uint32_t vni = serpens_ld_be32(vx + 4) >> 8;
    if (config.vni != kVxlanAnyVni && vni != config.vni) {
        return fail(VxlanResult::wrong_vni);
    }
    if (l4 - 16 < kVxlanMinInnerFrame) {
        return fail(VxlanResult::truncated_inner);
    }
    out.result = VxlanResult::ok;
    out.flags = vx[7];
    out.inner_offset = static_cast<uint16_t>(off + hlen + 16); // at most 18 + 60 + 16
    out.inner_len = l4 - 16;
    out.vni = vni;
    out.chain_tag = serpens_ld_be32(vx) & 0xffffff;
    std::memcpy(&out.outer_src, ip + 12, 4);
    return out;
}

} // namespace serpens::net
