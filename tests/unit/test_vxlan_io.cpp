// VXLAN over mbufs (io/vxlan_io.h): bursts encapsulated and decapsulated in
// place, one result per packet, refused packets left exactly as they were.
// The mbufs are plain memory laid out as DPDK's (no EAL needed: prepend, adj
// and trim are inline arithmetic on the mbuf).

#include "io/vxlan_io.h"

#include <doctest/doctest.h>

#include <arpa/inet.h>

#include <array>
#include <cstring>
#include <memory>
#include <vector>

using namespace serpens;
using net::VxlanResult;

namespace {

using Bytes = std::vector<uint8_t>;

// One single-segment mbuf over its own buffer.
struct FakeMbuf {
    rte_mbuf m{};
    std::array<uint8_t, 2048> buf{};

    FakeMbuf(const Bytes &frame, uint16_t headroom = RTE_PKTMBUF_HEADROOM)
    {
        m.buf_addr = buf.data();
        m.buf_len = static_cast<uint16_t>(buf.size());
        m.data_off = headroom;
        m.nb_segs = 1;
        m.data_len = static_cast<uint16_t>(frame.size());
        m.pkt_len = static_cast<uint32_t>(frame.size());
        m.packet_type = RTE_PTYPE_L2_ETHER | RTE_PTYPE_L3_IPV4 | RTE_PTYPE_L4_UDP;
        rte_mbuf_refcnt_set(&m, 1);
        std::memcpy(buf.data() + headroom, frame.data(), frame.size());
    }
    Bytes bytes() const
    {
        const uint8_t *p = buf.data() + m.data_off;
        return Bytes(p, p + m.data_len);
    }
};

// An inner Ethernet/IPv4/UDP frame of `len` bytes (contents do not matter to VXLAN).
Bytes inner_frame(std::size_t len, uint8_t fill)
{
    Bytes f(len, fill);
    const uint8_t head[] = {0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00};
    std::memcpy(f.data(), head, sizeof head);
    return f;
}

net::VxlanTunnel tunnel_to(const char *dst, uint32_t mtu = 1500)
{
    net::VxlanTunnel t;
    t.src_mac = {0x02, 0xaa, 0, 0, 0, 1};
    t.dst_mac = {0x02, 0xbb, 0, 0, 0, 2};
    inet_pton(AF_INET, "10.0.0.1", &t.src_ip);
    inet_pton(AF_INET, dst, &t.dst_ip);
    t.vni = 77;
    t.mtu = mtu;
    return t;
}

} // namespace

TEST_CASE("encap_burst prepends each packet's tunnel, and leaves a refused packet as it was")
{
    const net::VxlanEncap to_b(tunnel_to("10.0.0.2"));
    const net::VxlanEncap to_c(tunnel_to("10.0.0.3", 600));
    const Bytes small = inner_frame(100, 0x11);
    const Bytes big = inner_frame(600 - 36 + 1, 0x22); // one byte over to_c's MTU
    FakeMbuf a(small);
    FakeMbuf b(big);
    FakeMbuf c(small, 49); // one byte short of headroom
    FakeMbuf d(big);       // the same size fits to_b
    rte_mbuf *const pkts[] = {&a.m, &b.m, &c.m, &d.m};
    const net::VxlanEncap *tunnels[] = {&to_b, &to_c, &to_b, &to_b};
    const uint32_t tags[] = {1, 2, 3, 4};
    const uint32_t hashes[] = {0x1111, 0x2222, 0x3333, 0x4444};
    VxlanResult results[4];
    net::VxlanCounters counters;
    io::encap_burst(pkts, tunnels, tags, hashes, net::kVxlanReturned, results, counters);

    CHECK(results[0] == VxlanResult::ok);
    CHECK(results[1] == VxlanResult::too_big);
    CHECK(results[2] == VxlanResult::no_headroom);
    CHECK(results[3] == VxlanResult::ok);
    CHECK(counters[VxlanResult::ok] == 2);
    CHECK(counters[VxlanResult::too_big] == 1);
    CHECK(counters[VxlanResult::no_headroom] == 1);

    CHECK(a.m.data_len == small.size() + 50);
    CHECK(a.m.pkt_len == small.size() + 50);
    CHECK(a.m.data_off == RTE_PKTMBUF_HEADROOM - 50);
    const net::VxlanDecapped da = net::vxlan_decap(a.bytes(), net::VxlanDecapConfig{});
    REQUIRE(da.result == VxlanResult::ok);
    CHECK(da.chain_tag == 1);
    CHECK(da.flags == net::kVxlanReturned);
    CHECK(da.vni == 77);
    const Bytes sent = a.bytes();
    CHECK(Bytes(sent.begin() + 50, sent.end()) == small);
    CHECK(sent[33] == 2); // to_b's address
    CHECK((sent[34] << 8 | sent[35]) == net::vxlan_source_port(0x1111));
    CHECK(d.bytes()[33] == 2);

    CHECK(b.bytes() == big);
    CHECK(b.m.data_off == RTE_PKTMBUF_HEADROOM);
    CHECK(c.bytes() == small);
    CHECK(c.m.data_off == 49);
}

TEST_CASE("decap_burst strips the outer headers and padding, and leaves what it refuses alone")
{
    const net::VxlanEncap encap(tunnel_to("10.0.0.2"));
    const Bytes inner = inner_frame(60, 0x33);
    Bytes outer(50 + inner.size());
    std::memcpy(outer.data() + 50, inner.data(), inner.size());
    REQUIRE(encap.encap(outer, 42, 0, 0xabcd) == VxlanResult::ok);
    Bytes padded = outer;
    padded.resize(outer.size() + 6, 0); // Ethernet padding after the outer IPv4 packet

    FakeMbuf a(outer);
    FakeMbuf b(padded);
    FakeMbuf arp(inner_frame(60, 0x44));
    arp.buf[arp.m.data_off + 12] = 0x08;
    arp.buf[arp.m.data_off + 13] = 0x06;
    const Bytes arp_before = arp.bytes();
    FakeMbuf chained(outer);
    chained.m.nb_segs = 2; // its second segment is never touched: refused first
    FakeMbuf other_vni(outer);
    rte_mbuf *const pkts[] = {&a.m, &b.m, &arp.m, &chained.m, &other_vni.m};
    other_vni.buf[other_vni.m.data_off + 48] = 78;

    net::VxlanDecapConfig config;
    inet_pton(AF_INET, "10.0.0.2", &config.local_ip);
    config.vni = 77;
    net::VxlanDecapped out[5];
    net::VxlanCounters counters;
    io::decap_burst(pkts, config, out, counters);

    CHECK(out[0].result == VxlanResult::ok);
    CHECK(out[1].result == VxlanResult::ok);
    CHECK(out[2].result == VxlanResult::not_ipv4);
    CHECK(out[3].result == VxlanResult::segmented);
    CHECK(out[4].result == VxlanResult::wrong_vni);
    CHECK(counters[VxlanResult::ok] == 2);
    CHECK(counters[VxlanResult::not_ipv4] == 1);
    CHECK(counters[VxlanResult::segmented] == 1);
    CHECK(counters[VxlanResult::wrong_vni] == 1);

    for (FakeMbuf *m : {&a, &b}) {
        CHECK(m->bytes() == inner);
        CHECK(m->m.pkt_len == inner.size());
        CHECK(m->m.packet_type == 0);
    }
    CHECK(out[0].chain_tag == 42);
    CHECK(out[0].inner_offset == 50);
    uint32_t sender = 0;
    inet_pton(AF_INET, "10.0.0.1", &sender);
    CHECK(out[1].outer_src == sender);
    CHECK(arp.bytes() == arp_before);
    CHECK(arp.m.packet_type != 0);
    CHECK(chained.bytes() == outer);
    CHECK(other_vni.m.data_len == outer.size());
}

TEST_CASE("a burst encapsulated and decapsulated again is what it was")
{
    const net::VxlanEncap encap(tunnel_to("10.0.0.2"));
    std::vector<std::unique_ptr<FakeMbuf>> mbufs;
    std::vector<rte_mbuf *> pkts;
    std::vector<Bytes> frames;
    for (uint8_t i = 0; i < 32; ++i) {
        frames.push_back(inner_frame(60 + i * 40u, i));
        mbufs.push_back(std::make_unique<FakeMbuf>(frames.back()));
        pkts.push_back(&mbufs.back()->m);
    }
    std::vector<const net::VxlanEncap *> tunnels(pkts.size(), &encap);
    std::vector<uint32_t> tags(pkts.size());
    std::vector<uint32_t> hashes(pkts.size());
    for (std::size_t i = 0; i < pkts.size(); ++i) {
        tags[i] = static_cast<uint32_t>(i * 1000);
        hashes[i] = static_cast<uint32_t>(i * 2654435761u);
    }
    std::vector<VxlanResult> results(pkts.size());
    std::vector<net::VxlanDecapped> out(pkts.size());
    net::VxlanCounters counters;
    io::encap_burst(pkts, tunnels.data(), tags.data(), hashes.data(), 0, results.data(), counters);
    io::decap_burst(pkts, net::VxlanDecapConfig{}, out.data(), counters);
    CHECK(counters[VxlanResult::ok] == 2 * pkts.size());
    for (std::size_t i = 0; i < pkts.size(); ++i) {
        CAPTURE(i);
        CHECK(mbufs[i]->bytes() == frames[i]);
        CHECK(mbufs[i]->m.data_off == RTE_PKTMBUF_HEADROOM);
        CHECK(out[i].chain_tag == tags[i]);
    }
}
