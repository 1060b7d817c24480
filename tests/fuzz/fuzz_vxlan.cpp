// libFuzzer target: net::vxlan_decap on arbitrary bytes (what any host on the
// underlay can send), and encap/decap round trips.  Besides ASan/UBSan
// catching out-of-bounds reads, it checks the contract of vxlan.h on every
// input and traps when it is broken.
#include "net/vxlan.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

using namespace serpens::net;

namespace {

void check(bool ok)
{
    if (!ok) {
        __builtin_trap();
    }
}

// What vxlan.h promises about any decapsulation.
void check_decapped(const VxlanDecapped &d, std::size_t size)
{
    check(static_cast<std::size_t>(d.result) < kVxlanResultCount);
    check(vxlan_result_name(d.result)[0] != '?');
    if (d.result == VxlanResult::ok) {
        check(d.inner_offset >= kVxlanOuterLen && d.inner_offset <= kVxlanOuterLen + 4 + 40);
        check(d.inner_len >= kVxlanMinInnerFrame);
        check(std::size_t{d.inner_offset} + d.inner_len <= size);
        check(d.chain_tag <= kVxlanMaxTag && d.vni <= kVxlanMaxVni);
        check((d.flags & ~kVxlanKnownFlags) == 0);
    } else {
        // Decapsulation never answers with an encapsulation's refusal.
        const VxlanClass c = vxlan_result_class(d.result);
        check(c == VxlanClass::not_vxlan || c == VxlanClass::malformed);
    }
}

VxlanTunnel tunnel(uint32_t vni, uint32_t mtu)
{
    VxlanTunnel t;
    t.src_mac = {0x02, 0, 0, 0, 0, 1};
    t.dst_mac = {0x02, 0, 0, 0, 0, 2};
    t.src_ip = 0x0100000a; // 10.0.0.1 as it sits in memory
    t.dst_ip = 0x0200000a;
    t.vni = vni;
    t.mtu = mtu;
    return t;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, std::size_t size)
{
    if (size > 65535) {
        return 0;
    }
    const auto len = static_cast<uint32_t>(size);

    // 1. Arbitrary bytes as an arriving frame, under a strict and a lax config.
    const VxlanDecapConfig strict{kVxlanUdpPort, 0x0200000a, 1};
    const VxlanDecapped d = vxlan_decap(data, len, strict);
    check_decapped(d, size);
    const VxlanDecapped any = vxlan_decap(data, len, VxlanDecapConfig{});
    check_decapped(any, size);
    if (d.result == VxlanResult::ok) {
        check(any.result == VxlanResult::ok && any.chain_tag == d.chain_tag && any.inner_len == d.inner_len);
    }

    // 2. What decap accepted, sent on again: decap gives back the same.
    if (any.result == VxlanResult::ok) {
        const VxlanEncap encap(tunnel(any.vni, kVxlanMaxMtu));
        std::vector<uint8_t> again(kVxlanOuterLen + any.inner_len);
        std::memcpy(again.data() + kVxlanOuterLen, data + any.inner_offset, any.inner_len);
        check(encap.encap(again, any.chain_tag, any.flags, any.outer_src) == VxlanResult::ok);
        const VxlanDecapped back = vxlan_decap(again.data(), static_cast<uint32_t>(again.size()),
                                               strict.vni == any.vni ? strict : VxlanDecapConfig{});
        check(back.result == VxlanResult::ok);
        check(back.chain_tag == any.chain_tag && back.flags == any.flags && back.vni == any.vni);
        check(back.inner_len == any.inner_len &&
              std::memcmp(again.data() + back.inner_offset, data + any.inner_offset, any.inner_len) == 0);
    }

    // 3. The bytes as an inner frame, with tag, flags and MTU from its first
    //    bytes: encap refuses exactly what check() refuses, and what it sends
    //    decapsulates to the same frame.
    if (size >= 6) {
        const uint32_t tag =
            (uint32_t{data[0]} << 24 | uint32_t{data[1]} << 16 | uint32_t{data[2]} << 8 | data[3]) >> 7;
        const uint8_t flags = data[4] & 0x03;
        const uint32_t mtu = kVxlanMinMtu + data[5] * 4u;
        const VxlanEncap encap(tunnel(1, mtu));
        std::vector<uint8_t> packet(kVxlanOuterLen + size);
        std::memcpy(packet.data() + kVxlanOuterLen, data, size);
        const VxlanResult r = encap.encap(packet, tag, flags, tag ^ 0x9e3779b9u);
        check(r == encap.check(len, tag, flags));
        const VxlanDecapped e = vxlan_decap(packet.data(), static_cast<uint32_t>(packet.size()), strict);
        if (r == VxlanResult::ok) {
            check(size + kVxlanIpOverhead <= mtu);
            check(e.result == VxlanResult::ok && e.chain_tag == tag && e.flags == flags && e.inner_len == len);
            check(std::memcmp(packet.data() + e.inner_offset, data, size) == 0);
        } else {
            check(vxlan_result_class(r) == VxlanClass::refused || r == VxlanResult::truncated_inner);
        }
    }
    return 0;
}
