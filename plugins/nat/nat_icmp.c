/*
 * nat_icmp.c — the nat NF's translation of ICMP errors (RFC 5508 REQ-3).
 *
 *   ICMP errors (destination unreachable, time exceeded, parameter problem)
 *   about a mapped flow are translated too (RFC 5508 REQ-3), so traceroute
 *   and path MTU discovery work through the NAT: one from outside, quoting a
 *   translated packet, goes to the inside host with the quoted source set
 *   back; one from inside, quoting a translated reply, leaves from the
 *   external address with the quoted destination set to the item.  The
 *   quote's IP checksum, its L4 checksum when quoted, and the ICMP checksum
 *   are kept right.  Errors about no mapping, or from outside quoting another
 *   remote endpoint than the flow's, are dropped.
 */
#include "nat_internal.h"

#include <string.h>

/* Stores a 16- or 32-bit field inside an ICMP message and keeps the
 * message's checksum (at icmp + 2) right.  Fields sit at even offsets. */
static void nat_icmp_set16(uint8_t *icmp, uint8_t *field, uint16_t now)
{
    const uint16_t old = serpens_ld16(field);
    serpens_st16(field, now);
    serpens_st16(icmp + 2, serpens_csum_replace16(serpens_ld16(icmp + 2), old, now));
}

static void nat_icmp_set32(uint8_t *icmp, uint8_t *field, uint32_t now)
{
    const uint32_t old = serpens_ld32(field);
    serpens_st32(field, now);
    serpens_st16(icmp + 2, serpens_csum_replace32(serpens_ld16(icmp + 2), old, now));
}

/* The quoted packet: its IPv4 header and the part of its L4 header the
 * error carries (at least the 8 bytes RFC 792 asks for). */
struct nat_quote {
    uint8_t *ip;
    uint8_t *l4;
    uint32_t l4_len;
    uint8_t proto;
};

/* Rewrites the quoted packet's address at addr_at (12 source, 16
 * destination) and its port or echo id at port_at, with its IP checksum and,
 * when quoted, its L4 checksum; every change also goes into the ICMP
 * checksum, which covers the quote. */
static void nat_quote_rewrite(uint8_t *icmp, const struct nat_quote *q, unsigned addr_at, unsigned port_at,
                              uint32_t new_ip, uint16_t new_port)
{
    const uint32_t old_ip = serpens_ld32(q->ip + addr_at);
    const uint16_t old_port = serpens_ld16(q->l4 + port_at);
    const unsigned csum_at = q->proto == NAT_PROTO_TCP ? 16u : q->proto == NAT_PROTO_UDP ? 6u : 2u;
    if (q->l4_len >= csum_at + 2u) {
        const uint16_t hc = serpens_ld16(q->l4 + csum_at);
        const int udp = q->proto == NAT_PROTO_UDP;
        if (!udp || hc != 0) { /* a zero UDP checksum: none was sent, nothing to change */
            nat_icmp_set16(
                icmp, q->l4 + csum_at,
                serpens_l4_csum_update(hc, q->proto != NAT_PROTO_ICMP, udp, old_ip, new_ip, old_port, new_port));
        }
    }
    nat_icmp_set16(icmp, q->l4 + port_at, new_port);
    nat_icmp_set16(icmp, q->ip + 10, serpens_csum_replace32(serpens_ld16(q->ip + 10), old_ip, new_ip));
    nat_icmp_set32(icmp, q->ip + addr_at, new_ip);
}

/* Finds the quoted packet; 0 on success, else the counter to bump.  The
 * quote must be an unfragmented (or first-fragment) TCP, UDP or ICMP echo
 * packet with its ports or echo id: `echo_type` is the echo type the flow's
 * packet has in that direction (8 going out, 0 coming in). */
static int nat_quote_of(struct serpens_pkt *p, const uint8_t *ip, uint8_t echo_type, struct nat_quote *q)
{
    const uint32_t ihl = (ip[0] & 0x0fu) * 4u;
    const uint32_t total = ntohs(serpens_ld16(ip + 2));
    uint32_t avail = p->len - p->l4_offset;
    if (total >= ihl && total - ihl < avail) {
        avail = total - ihl; /* not the Ethernet padding */
    }
    if (avail < 8u + 20u) {
        return NAT_C_MALFORMED;
    }
    q->ip = p->data + p->l4_offset + 8;
    const uint32_t qihl = (q->ip[0] & 0x0fu) * 4u;
    if ((q->ip[0] >> 4) != 4 || qihl < 20u || avail < 8u + qihl + 8u) {
        return NAT_C_MALFORMED;
    }
    if ((ntohs(serpens_ld16(q->ip + 6)) & 0x1fffu) != 0) {
        return NAT_C_UNSUPPORTED; /* a later fragment quotes no ports */
    }
    q->l4 = q->ip + qihl;
    q->l4_len = avail - 8u - qihl;
    q->proto = q->ip[9];
    if (q->proto == NAT_PROTO_ICMP) {
        return q->l4[0] == echo_type && q->l4[1] == 0 ? 0 : NAT_C_UNSUPPORTED;
    }
    return q->proto == NAT_PROTO_TCP || q->proto == NAT_PROTO_UDP ? 0 : NAT_C_UNSUPPORTED;
}

/* An ICMP error about a mapped flow quotes the flow's packet as it was on
 * the error's side of the NAT.  From outside (to an external address): the
 * quote is an outbound packet, source = the external item; it goes to the
 * inside host with the quote's source set back.  From inside: the quote is
 * a translated reply, destination = the inside host; it goes out from the
 * external address with the quote's destination set to the item.  Errors
 * about no mapping, or (from outside) quoting another remote endpoint than
 * the flow's, are dropped.  Looked up one by one: errors are rare. */
uint8_t nat_icmp_error(struct nat *n, struct serpens_pkt *p, uint8_t *ip, int outbound)
{
    struct nat_quote q;
    int bad = nat_quote_of(p, ip, outbound ? 0 : 8, &q);
    if (bad) {
        nat_count(n, (enum nat_counter)bad);
        return SERPENS_PORT_DROP;
    }
    uint8_t *icmp = p->data + p->l4_offset;
    const int echo = q.proto == NAT_PROTO_ICMP;
    const unsigned sport_at = echo ? 4u : 0u, dport_at = echo ? 4u : 2u;
    if (outbound) {
        struct nat_out_key key;
        struct nat_out_val val;
        memset(&key, 0, sizeof key);
        key.in_ip = serpens_ld32(q.ip + 16);
        key.rem_ip = serpens_ld32(q.ip + 12);
        key.in_port = serpens_ld16(q.l4 + dport_at);
        key.rem_port = echo ? 0 : serpens_ld16(q.l4 + sport_at);
        key.proto = q.proto;
        if (n->host->get_state(n->out, &key, &val) != SERPENS_OK) {
            nat_count(n, NAT_C_NO_MAPPING);
            return SERPENS_PORT_DROP;
        }
        nat_quote_rewrite(icmp, &q, 16, dport_at, val.ext_ip, val.ext_port);
        serpens_ipv4_set_addr(ip, 12, val.ext_ip);
        nat_count(n, NAT_C_OUT);
    } else {
        struct nat_in_key key;
        struct nat_in_val val;
        memset(&key, 0, sizeof key);
        key.ext_ip = serpens_ld32(q.ip + 12);
        key.ext_port = serpens_ld16(q.l4 + sport_at);
        key.proto = q.proto;
        if (n->host->get_state(n->in, &key, &val) != SERPENS_OK) {
            nat_count(n, NAT_C_NO_MAPPING);
            return SERPENS_PORT_DROP;
        }
        if (val.rem_ip != serpens_ld32(q.ip + 16) || (!echo && val.rem_port != serpens_ld16(q.l4 + dport_at))) {
            nat_count(n, NAT_C_FILTERED);
            return SERPENS_PORT_DROP;
        }
        nat_quote_rewrite(icmp, &q, 12, sport_at, val.in_ip, val.in_port);
        serpens_ipv4_set_addr(ip, 16, val.in_ip);
        nat_count(n, NAT_C_IN);
    }
    nat_count(n, NAT_C_ICMP_ERRORS);
    return SERPENS_PORT_DEFAULT;
}
