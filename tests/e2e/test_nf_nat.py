"""nat through the real serpens-host, checked by tshark with checksum validation on.

Pass 1 sends serpens-pktgen traffic (clients 198.18.0.0/16 inside, servers
outside): every client-to-server packet must leave with an external address
and a port from the pool, one (address, port) per flow and never two flows on
one; every server-to-client packet (addressed to the inside, not to the
pool) passes unchanged; tshark must find every IPv4/TCP/UDP/ICMP checksum
good.  Pass 2 restarts the host on the same state directory (the mappings
live in shared memory, not in the process) and sends replies crafted here
from pass 1's output, addressed to the external items: each must come back
to the inside client's address and port, again with good checksums; replies
to an unused port or from another remote port are dropped and counted.
Exits 77 (skipped) when tshark is not installed.
"""
import ipaddress
import os
import shutil
import struct
import subprocess
import sys

from harness import HOST, Host, check, csum, read_pcap, write_pcap, eth_ipv4, nf_counters

if shutil.which("tshark") is None:
    print("tshark not installed: skipping")
    sys.exit(77)

NAT_SO = os.path.join(os.path.dirname(os.path.dirname(HOST)), "plugins", "nat", "serpens_nf_nat.so")
INSIDE = ipaddress.ip_network("198.18.0.0/16")
EXTERNAL = {"203.0.113.1", "203.0.113.2"}
PORT_LO, PORT_HI = 10000, 10999

CHAIN = f'''name = "nat"
egress = "pcap0"
[[nf]]
name = "nat"
plugin = "nat"
[nf.config]
inside = "{INSIDE}"
external = ["203.0.113.1", "203.0.113.2"]
ports = [{PORT_LO}, {PORT_HI}]
'''

TSHARK_FIELDS = ["frame.number", "ip.src", "ip.dst", "ip.proto", "tcp.srcport", "tcp.dstport", "udp.srcport",
                 "udp.dstport", "icmp.type", "icmp.ident", "ip.checksum.status", "tcp.checksum.status",
                 "udp.checksum.status", "icmp.checksum.status"]


def tshark(path):
    """One dict per frame, decoded by tshark with checksum validation on."""
    cmd = ["tshark", "-n", "-r", path, "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
           "-o", "udp.check_checksum:TRUE", "-T", "fields", "-E", "separator=|", "-E", "occurrence=f"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        v = dict(zip(TSHARK_FIELDS, line.split("|")))
        proto = int(v["ip.proto"]) if v["ip.proto"] else None
        row = {"src": v["ip.src"], "dst": v["ip.dst"], "proto": proto, "sport": None, "dport": None}
        if proto == 6:
            row["sport"], row["dport"] = int(v["tcp.srcport"]), int(v["tcp.dstport"])
        elif proto == 17:
            row["sport"], row["dport"] = int(v["udp.srcport"]), int(v["udp.dstport"])
        elif proto == 1:
            ident = int(v["icmp.ident"], 0)
            row["sport"] = row["dport"] = ident
            row["icmp_type"] = int(v["icmp.type"])
        statuses = [v[k] for k in ("ip.checksum.status", "tcp.checksum.status", "udp.checksum.status",
                                   "icmp.checksum.status") if v[k] != ""]
        row["bad_checksum"] = "0" in statuses  # 0 bad, 1 good, 2 unverified
        row["l4_checked"] = statuses.count("1") >= 2 or (proto == 17 and "1" in statuses)
        rows.append(row)
    return rows


def ipv4_frame(src, dst, proto, sport, dport, payload=b"reply!", icmp_type=0):
    """Ethernet + IPv4 + TCP/UDP/ICMP echo with correct checksums, written here."""
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 7, 9, 0x50, 0x18, 8192, 0, 0) + payload
    elif proto == 17:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    else:
        l4 = struct.pack("!BBHHH", icmp_type, 0, 0, sport, 1) + payload
    if proto in (6, 17):
        pseudo = s + d + struct.pack("!BBH", 0, proto, len(l4))
        c = csum(pseudo + l4)
        if proto == 17 and c == 0:
            c = 0xFFFF
        at = 16 if proto == 6 else 6
        l4 = l4[:at] + struct.pack("!H", c) + l4[at + 2:]
    else:
        l4 = l4[:2] + struct.pack("!H", csum(l4)) + l4[4:]
    return eth_ipv4(s, d, proto, l4)



host = Host(plugins=())
shutil.copy(NAT_SO, host.path("plugins/serpens_nf_nat.so"))
os.chmod(host.path("plugins/serpens_nf_nat.so"), 0o755)
host.pktgen("--packets", "4000", "--flows", "400", "--mix", "tcp=60,udp=30,icmp=10", "--malformed-ratio", "0",
            "--vlan-ratio", "0.1", "--seed", "5")
host.chain("nat", CHAIN)
host.config(host.pcap_port() + '\n[[gateway.rule]]\nname = "all"\nchain = "nat"\n')

# ---- pass 1: requests go out translated ---------------------------------
host.run("--idle-exit", "1")
ins, outs = tshark(host.path("in.pcap")), tshark(host.path("out.pcap"))
check(len(outs) == len(ins), f"pass 1: {len(ins)} packets in, {len(outs)} out")
mapping, owners = {}, {}
n_out = n_passed = 0
for i, (a, b) in enumerate(zip(ins, outs)):
    check(not b["bad_checksum"], f"pass 1 packet {i + 1}: tshark finds a bad checksum: {b}")
    check(b["l4_checked"], f"pass 1 packet {i + 1}: tshark did not verify the checksums: {b}")
    outbound = ipaddress.ip_address(a["src"]) in INSIDE and ipaddress.ip_address(a["dst"]) not in INSIDE
    if not outbound:
        check(b == a, f"pass 1 packet {i + 1}: a server-to-client packet changed: {a} -> {b}")
        n_passed += 1
        continue
    n_out += 1
    check(b["src"] in EXTERNAL, f"pass 1 packet {i + 1}: source {b['src']} is not an external address")
    check(PORT_LO <= b["sport"] <= PORT_HI, f"pass 1 packet {i + 1}: port {b['sport']} outside the pool")
    check(b["dst"] == a["dst"] and b["proto"] == a["proto"], f"pass 1 packet {i + 1}: destination changed")
    if a["proto"] != 1:
        check(b["dport"] == a["dport"], f"pass 1 packet {i + 1}: destination port changed")
    flow = (a["proto"], a["src"], a["sport"], a["dst"], a["dport"])
    item = (a["proto"], b["src"], b["sport"])
    check(mapping.setdefault(flow, item) == item, f"pass 1: flow {flow} was given two items")
    check(owners.setdefault(item, flow) == flow, f"pass 1: item {item} given to two flows")
c = nf_counters(host, "nat")
check(c.get("translated_out") == n_out, f"translated_out {c.get('translated_out')} != {n_out}: {c}")
check(c.get("passed") == n_passed, f"passed {c.get('passed')} != {n_passed}: {c}")
check(c.get("mappings_created") == len(mapping), f"mappings_created != {len(mapping)} flows: {c}")
check(len({f[0] for f in mapping}) == 3, "pass 1 should cover TCP, UDP and ICMP")

# ---- pass 2: replies to the external items come back in -----------------
shutil.copy(host.path("out.pcap"), host.path("pass1.pcap"))
replies, want = [], []
for (proto, src, sport, dst, dport), (_, ext_ip, ext_port) in sorted(mapping.items()):
    replies.append(ipv4_frame(dst, ext_ip, proto, ext_port if proto == 1 else dport, ext_port))
    want.append((dst, src, proto, sport if proto == 1 else dport, sport))
used = {(p, ip, port) for (p, ip, port) in owners}
bad = 0
for proto, ip, port in [(17, "203.0.113.1", p) for p in range(PORT_LO, PORT_HI + 1)]:
    if (proto, ip, port) not in used and bad < 5:
        replies.append(ipv4_frame("198.19.0.1", ip, proto, 53, port))  # nobody has this item
        bad += 1
filtered = 0
for (proto, src, sport, dst, dport), (_, ext_ip, ext_port) in sorted(mapping.items()):
    if proto in (6, 17) and filtered < 5:
        replies.append(ipv4_frame(dst, ext_ip, proto, (dport + 1) % 65536, ext_port))  # another remote port
        filtered += 1
write_pcap(host.path("in.pcap"), replies)
host.run("--idle-exit", "1")
backs = tshark(host.path("out.pcap"))
check(len(backs) == len(want), f"pass 2: {len(want)} replies should come back, {len(backs)} did")
for i, (b, (src, dst, proto, sport, dport)) in enumerate(zip(backs, want)):
    check(not b["bad_checksum"] and b["l4_checked"], f"pass 2 packet {i + 1}: checksum not good: {b}")
    got = (b["src"], b["dst"], b["proto"], b["sport"], b["dport"])
    check(got == (src, dst, proto, sport, dport), f"pass 2 packet {i + 1}: {got} != {(src, dst, proto, sport, dport)}")
c = nf_counters(host, "nat")
check(c.get("translated_in") == len(want), f"translated_in {c.get('translated_in')} != {len(want)}: {c}")
check(c.get("no_mapping") == bad, f"no_mapping {c.get('no_mapping')} != {bad}: {c}")
check(c.get("filtered") == filtered, f"filtered {c.get('filtered')} != {filtered}: {c}")

# ---- pass 3: ICMP errors about translated packets come back in (RFC 5508) -
# A router answers some of pass 1's translated packets with time exceeded,
# quoting the IPv4 header and 8 bytes, as RFC 792 asks; tshark must see the
# error addressed to the inside client and the quote set back to the client's
# address and port, every checksum good.
ROUTER = "192.0.2.254"
errors, expect = [], []
per_proto = {}
for a, raw in zip(ins, read_pcap(host.path("pass1.pcap"))):
    if a["src"] is None or ipaddress.ip_address(a["src"]) not in INSIDE or a["proto"] not in (1, 6, 17):
        continue
    if ipaddress.ip_address(a["dst"]) in INSIDE or per_proto.get(a["proto"], 0) == 3:
        continue
    per_proto[a["proto"]] = per_proto.get(a["proto"], 0) + 1
    ip = raw[18:] if raw[12:14] == b"\x81\x00" else raw[14:]
    quote = ip[:(ip[0] & 15) * 4 + 8]
    icmp = struct.pack("!BBHI", 11, 0, 0, 0) + quote
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    errors.append(eth_ipv4(ipaddress.ip_address(ROUTER).packed, ip[12:16], 1, icmp))
    expect.append((a["src"], a["dst"], a["sport"]))
check(len(errors) == 9, f"pass 3: wanted 3 packets of each protocol to quote, found {per_proto}")
write_pcap(host.path("in.pcap"), errors)
host.run("--idle-exit", "1")
cmd = ["tshark", "-n", "-r", host.path("out.pcap"), "-o", "ip.check_checksum:TRUE",
       "-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,",
       "-e", "ip.src", "-e", "ip.dst", "-e", "ip.checksum.status", "-e", "icmp.checksum.status",
       "-e", "tcp.srcport", "-e", "udp.srcport", "-e", "icmp.ident"]
rows = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
check(len(rows) == len(expect), f"pass 3: {len(expect)} ICMP errors should come back, {len(rows)} did")
for i, (row, (client, remote, sport)) in enumerate(zip(rows, expect)):
    src, dst, ip_ok, icmp_ok, tcp_sport, udp_sport, ident = row.split("|")
    check(src.split(",") == [ROUTER, client] and dst.split(",") == [client, remote],
          f"pass 3 error {i + 1}: addresses {src} -> {dst}, wanted {ROUTER},{client} -> {client},{remote}")
    check(ip_ok == "1,1" and icmp_ok.split(",")[0] == "1",
          f"pass 3 error {i + 1}: checksums not good (outer and quoted IPv4 {ip_ok}, ICMP {icmp_ok})")
    port = int(tcp_sport or udp_sport or ident.split(",")[-1], 0)
    check(port == sport, f"pass 3 error {i + 1}: quoted source port {port}, wanted the client's {sport}")
c = nf_counters(host, "nat")
check(c.get("icmp_errors") == len(expect), f"icmp_errors {c.get('icmp_errors')} != {len(expect)}: {c}")
print(f"ok: pass 1 {n_out} translated, {n_passed} passed, {len(mapping)} mappings; "
      f"pass 2 {len(want)} replies back, {bad} unknown and {filtered} filtered dropped; "
      f"pass 3 {len(expect)} ICMP errors back with their quotes; all checksums good")
host.cleanup()
