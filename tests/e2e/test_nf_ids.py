"""ids through the real serpens-host: alerts match the signatures on a crafted trace.

The trace interleaves many TCP/UDP flows (IPv4 and IPv6) whose payloads
carry signatures whole, split across packets, in the other direction, in
other case, or not at all.  The expected port per packet is computed here
with Python's own `re` over each direction's accumulated payload (one alert
per rule per stream, on the packet that completes the match), independent
of Hyperscan; alerted packets leave through a trace NF (one tag byte).
"""
import ipaddress
import os
import random
import re
import shutil
import struct

from harness import HOST, Host, check, csum, write_pcap

IDS_SO = os.path.join(os.path.dirname(os.path.dirname(HOST)), "plugins", "ids", "serpens_nf_ids.so")
TAG = 0x1D

RULES = r"""# e2e signatures
alert tcp any any -> any 80 (msg:"evil over http"; content:"evil"; nocase; sid:1001;)
alert udp any any -> any 53 (msg:"dns tunnel"; pcre:"/x{4}[0-9]+\.tunnel/i"; sid:1002;)
alert ip any any <> 2001:db8::/32 any (msg:"marker"; content:"|de ad|BEEF"; sid:1003;)
alert tcp 10.0.0.0/8 any -> any any (msg:"inside secret"; content:"secret"; sid:1004;)
"""

# The same signatures for the independent matcher: (sid, proto, src, sport, dst, dport, both, regex)
SIGS = [
    (1001, 6, None, None, None, (80, 80), False, re.compile(re.escape(b"evil"), re.I)),
    (1002, 17, None, None, None, (53, 53), False, re.compile(rb"x{4}[0-9]+\.tunnel", re.I)),
    (1003, None, None, None, ipaddress.ip_network("2001:db8::/32"), None, True,
     re.compile(re.escape(b"\xde\xadBEEF"))),
    (1004, 6, ipaddress.ip_network("10.0.0.0/8"), None, None, None, False, re.compile(re.escape(b"secret"))),
]


def build(src, dst, proto, sport, dport, payload, seq):
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 0x50, 0x18, 65535, 0, 0) + payload
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    eth = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01"
    if s.version == 4:
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0, s.packed, d.packed)
        hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
        frame = eth + b"\x08\x00" + hdr + l4
    else:
        hdr = struct.pack("!IHBB16s16s", 0x60000000, len(l4), proto, 64, s.packed, d.packed)
        frame = eth + b"\x86\xdd" + hdr + l4
    return frame + b"\0" * max(0, 60 - len(frame))


def make_trace(rng):
    """A list of (src, dst, proto, sport, dport, payload) in send order."""
    chunks = [b"GET /index.html HTTP/1.1\r\n", b"ev", b"IL", b"EviL", b"xxxx42.tunnel", b"XXXX7.TUN", b"NEL.a",
              b"\xde\xad", b"BEEF", b"\xde\xadBEEF", b"sec", b"ret", b"secret", b"harmless ", b"e", b"vil"]
    ends = [("10.1.0.%d", "192.0.2.%d"), ("198.51.100.%d", "10.2.0.%d"), ("2001:db8:1::%x", "2001:db8:2::%x"),
            ("2001:db9::%x", "2001:db9:1::%x")]
    flows = []
    for n in range(120):
        a, b = rng.choice(ends)
        proto = rng.choice([6, 17])
        dport = rng.choice([80, 53, 443, 8080])
        flows.append([a % rng.randint(1, 200), b % rng.randint(1, 200), proto, rng.randint(1024, 65000), dport])
    packets = []
    for _ in range(3000):
        f = rng.choice(flows)
        src, dst, proto, sport, dport = f
        if rng.random() < 0.3:  # the other direction
            src, dst, sport, dport = dst, src, dport, sport
        payload = b"".join(rng.choice(chunks) for _ in range(rng.randint(0, 3)))
        packets.append((src, dst, proto, sport, dport, payload))
    return packets


def in_net(net, addr):
    return net is None or (addr.version == net.version and addr in net)


def header_ok(sig, src, dst, proto, sport, dport):
    _, sproto, snet, sports, dnet, dports, both, _ = sig

    def one_way(s, d, sp, dp):
        return (in_net(snet, s) and in_net(dnet, d) and (sports is None or sports[0] <= sp <= sports[1])
                and (dports is None or dports[0] <= dp <= dports[1]))
    if sproto is not None and sproto != proto:
        return False
    return one_way(src, dst, sport, dport) or (both and one_way(dst, src, dport, sport))


def expected(packets):
    streams, fired, ports, counts = {}, set(), [], {sig[0]: 0 for sig in SIGS}
    for src, dst, proto, sport, dport, payload in packets:
        if not payload:
            ports.append(0)
            continue
        key = (src, dst, proto, sport, dport)
        data = streams.get(key, b"") + payload
        streams[key] = data
        alert = False
        s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        for sig in SIGS:
            if (key, sig[0]) in fired or not header_ok(sig, s, d, proto, sport, dport):
                continue
            if sig[7].search(data):
                fired.add((key, sig[0]))
                counts[sig[0]] += 1
                alert = True
        ports.append(1 if alert else 0)
    return ports, counts


rng = random.Random(7)
packets = make_trace(rng)
frames = [build(src, dst, proto, sport, dport, payload, i) for i, (src, dst, proto, sport, dport, payload)
          in enumerate(packets)]
host = Host(plugins=("trace",))
shutil.copy(IDS_SO, host.path("plugins/serpens_nf_ids.so"))
os.chmod(host.path("plugins/serpens_nf_ids.so"), 0o755)
with open(host.path("ids.rules"), "w") as f:
    f.write(RULES)
write_pcap(host.path("in.pcap"), frames)
host.chain("ids", f'''name = "ids"
egress = "pcap0"
[[nf]]
name = "ids"
plugin = "ids"
[nf.config]
rules = "../ids.rules"
[[nf]]
name = "alert"
plugin = "trace"
config = {{ tag = {TAG} }}
[[distribute]]
from = "ids"
to = ["out", "alert"]
''')
host.config(host.pcap_port() + '\n[[gateway.rule]]\nname = "all"\nchain = "ids"\n')
host.run("--idle-exit", "1")
outputs = host.output()
ports, counts = expected(packets)
check(len(outputs) == len(frames), f"{len(frames)} in, {len(outputs)} out")
for i, (frame, out, port) in enumerate(zip(frames, outputs, ports)):
    want = frame + bytes([TAG]) if port == 1 else frame
    check(out == want, f"packet {i}: expected port {port} ({packets[i]})")
nf = next(n for n in host.stats()["instances"][0]["nfs"] if n["name"] == "ids")
c = nf.get("counters", {})
for sid, n in counts.items():
    check(n > 0, f"the trace should fire sid {sid}")
    check(c.get(f"sid_{sid}") == n, f"counter sid_{sid} = {c.get(f'sid_{sid}')}, expected {n}")
check(c.get("alerts") == sum(ports), f"alerts {c.get('alerts')} != {sum(ports)}")
print(f"ok: {sum(ports)} alerts in {len(frames)} packets, per sid {counts}")
host.cleanup()
