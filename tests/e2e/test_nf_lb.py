"""lb through the real serpens-host, checked by tshark with checksum validation on.

Pass 1: serpens-pktgen traffic from clients (198.18.0.0/16) to services
(198.19.0.0/16, the lb's service prefix), 16000 TCP and UDP flows.  Every
client-to-service packet must leave addressed to one of four backends (one
of them with its own port), every packet of a flow to the same backend, the
flows spread within 5% of even over the backends, and tshark must find every
checksum good.  Server-to-client packets of the capture (sources in the
service prefix, no backend) pass unchanged.  The backend usage table, read
with serpens-state, must count the flows per backend.
Pass 2 restarts the host on the same state and sends replies from the
backends, crafted here from pass 1's output: each must leave with the
service address and port as its source.
Exits 77 (skipped) when tshark is not installed.
"""
import ipaddress
import json
import os
import shutil
import struct
import subprocess
import sys

from harness import HOST, Host, check, total_drops, csum, write_pcap, eth_ipv4, nf_counters

if shutil.which("tshark") is None:
    print("tshark not installed: skipping")
    sys.exit(77)

BUILD = os.path.dirname(os.path.dirname(HOST))
LB_SO = os.path.join(BUILD, "plugins", "lb", "serpens_nf_lb.so")
STATE_TOOL = os.path.join(BUILD, "tools", "serpens-state", "serpens-state")
SERVICES = ipaddress.ip_network("198.19.0.0/16")
BACKENDS = {"10.1.0.1": None, "10.1.0.2": None, "10.1.0.3": 8080, "10.1.0.4": None}
FIELDS = ["ip.src", "ip.dst", "ip.proto", "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport",
          "ip.checksum.status", "tcp.checksum.status", "udp.checksum.status"]


def tshark(path):
    cmd = ["tshark", "-n", "-r", path, "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
           "-o", "udp.check_checksum:TRUE", "-T", "fields", "-E", "separator=|", "-E", "occurrence=f"]
    for f in FIELDS:
        cmd += ["-e", f]
    rows = []
    for line in subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines():
        v = dict(zip(FIELDS, line.split("|")))
        proto = int(v["ip.proto"])
        p = "tcp" if proto == 6 else "udp"
        rows.append({"src": v["ip.src"], "dst": v["ip.dst"], "proto": proto, "sport": int(v[p + ".srcport"]),
                     "dport": int(v[p + ".dstport"]),
                     "good": v["ip.checksum.status"] == "1" and v[p + ".checksum.status"] == "1"})
    return rows


def ipv4_frame(src, dst, proto, sport, dport, payload=b"from the backend"):
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 2, 0x50, 0x18, 4096, 0, 0) + payload
        at = 16
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        at = 6
    c = csum(s + d + struct.pack("!BBH", 0, proto, len(l4)) + l4) or 0xFFFF
    l4 = l4[:at] + struct.pack("!H", c) + l4[at + 2:]
    return eth_ipv4(s, d, proto, l4)



backends_toml = ", ".join(f'"{ip}:{port}"' if port else f'"{ip}"' for ip, port in BACKENDS.items())
host = Host(plugins=())
shutil.copy(LB_SO, host.path("plugins/serpens_nf_lb.so"))
os.chmod(host.path("plugins/serpens_nf_lb.so"), 0o755)
n_flows = 16000
host.pktgen("--packets", "40000", "--flows", str(n_flows), "--mix", "tcp=70,udp=30", "--malformed-ratio", "0",
            "--vlan-ratio", "0", "--size-min", "64", "--size-max", "128", "--seed", "17")
host.chain("lb", f'''name = "lb"
egress = "pcap0"
[[nf]]
name = "lb"
plugin = "lb"
[nf.config]
vips = "{SERVICES}"
backends = [{backends_toml}]
table_size = 65537
''')
host.config(host.pcap_port() + '\n[[gateway.rule]]\nname = "all"\nchain = "lb"\n'
            '\n[instances]\nring_size = 65536\n\n[mempool]\nmbufs = 65535\n',
            eal=host.eal().replace('"-m", "256"', '"-m", "512"'))  # the whole capture fits in the pool

# ---- pass 1 -------------------------------------------------------------------
host.run("--idle-exit", "1", timeout=120)
check(total_drops(host.stats()) == 0, f"the host dropped packets: {host.stats()['dispatch']}")
ins, outs = tshark(host.path("in.pcap")), tshark(host.path("out.pcap"))
check(len(outs) == len(ins), f"pass 1: {len(ins)} in, {len(outs)} out")
backend_of, per_backend = {}, {ip: 0 for ip in BACKENDS}
n_balanced = 0
for i, (a, b) in enumerate(zip(ins, outs)):
    check(b["good"], f"pass 1 packet {i + 1}: tshark finds a checksum not good: {b}")
    if ipaddress.ip_address(a["dst"]) not in SERVICES:
        check(a == b, f"pass 1 packet {i + 1}: a packet for no service changed: {a} -> {b}")
        continue
    n_balanced += 1
    check(b["dst"] in BACKENDS, f"pass 1 packet {i + 1}: destination {b['dst']} is no backend")
    want_port = BACKENDS[b["dst"]] or a["dport"]
    check(b["dport"] == want_port, f"pass 1 packet {i + 1}: port {b['dport']}, expected {want_port}")
    check((b["src"], b["sport"], b["proto"]) == (a["src"], a["sport"], a["proto"]), f"pass 1 packet {i + 1}: source changed")
    flow = (a["proto"], a["src"], a["sport"], a["dst"], a["dport"])
    if flow not in backend_of:
        backend_of[flow] = b["dst"]
        per_backend[b["dst"]] += 1
    check(backend_of[flow] == b["dst"], f"flow {flow} went to {backend_of[flow]} and to {b['dst']}")
check(len(backend_of) == n_flows, f"{len(backend_of)} flows to services, expected {n_flows}")
even = n_flows / len(BACKENDS)
for ip, n in per_backend.items():
    check(abs(n - even) <= 0.05 * even, f"backend {ip} got {n} flows, more than 5% from {even:.0f}: {per_backend}")
c = nf_counters(host, "lb")
check(c.get("balanced") == n_balanced, f"balanced {c.get('balanced')} != {n_balanced}: {c}")
check(c.get("flows_new") == n_flows, f"flows_new {c.get('flows_new')} != {n_flows}: {c}")

# Backend usage (global/write EVENTUAL), read from outside.
dump = json.loads(subprocess.run([STATE_TOOL, "--root", host.state, "dump", "lb", "lb", "backends", "--json"],
                                 capture_output=True, text=True, check=True).stdout)
usage = {}
for e in dump["entries"]:
    k = bytes.fromhex(e["key"])
    flows, packets, nbytes = struct.unpack("<QQQ", bytes.fromhex(e["base"]))
    usage[str(ipaddress.ip_address(k[:4]))] = (flows, packets)
check({ip: u[0] for ip, u in usage.items()} == per_backend, f"usage table {usage} != flows counted {per_backend}")
check(sum(u[1] for u in usage.values()) == n_balanced, f"usage packets {usage} != {n_balanced}")

# ---- pass 2: replies from the backends ------------------------------------------
replies, want = [], []
for (proto, src, sport, dst, dport), backend in sorted(backend_of.items())[:2000]:
    bport = BACKENDS[backend] or dport
    replies.append(ipv4_frame(backend, src, proto, bport, sport))
    want.append((dst, src, proto, dport, sport))
write_pcap(host.path("in.pcap"), replies)
host.run("--idle-exit", "1")
backs = tshark(host.path("out.pcap"))
check(len(backs) == len(want), f"pass 2: {len(want)} replies in, {len(backs)} out")
for i, (b, w) in enumerate(zip(backs, want)):
    check(b["good"], f"pass 2 packet {i + 1}: checksum not good: {b}")
    got = (b["src"], b["dst"], b["proto"], b["sport"], b["dport"])
    check(got == w, f"pass 2 packet {i + 1}: {got} != {w}")
c = nf_counters(host, "lb")
check(c.get("replies") == len(want), f"replies counter: {c}")
print(f"ok: {n_flows} flows over {len(BACKENDS)} backends {per_backend} (even {even:.0f}), "
      f"{n_balanced} packets balanced, {len(want)} replies translated back; all checksums good")
host.cleanup()
