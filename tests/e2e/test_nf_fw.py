"""fw through the real serpens-host: every packet's verdict matches the rules.

The expected verdict per packet is computed here, from the rules text, by a
matcher written in Python independently of the plugin's C++ classifier:
allowed packets leave unchanged, `suspicious` ones leave through a trace NF
on port 1 (one tag byte appended), denied ones do not leave.  Run twice:
stateless, then stateful (replies of allowed connections are admitted).
"""
import ipaddress
import os
import shutil
import struct

from harness import HOST, Host, check

FW_SO = os.path.join(os.path.dirname(os.path.dirname(HOST)), "plugins", "fw", "serpens_nf_fw.so")
TAG = 0x5A

RULES = """# e2e rules over serpens-pktgen's default address plan
default deny
deny  proto=tcp src=198.18.0.0/18 dport=0-1023
allow suspicious proto=udp dst=198.19.128.0/17
allow proto=tcp src=198.18.0.0/16
allow proto=udp sport=1024-40000
allow proto=icmp src=198.18.0.0/17
allow proto=tcp src=2001:db8:a::/48 dport=0-32767
allow suspicious proto=udp dst=2001:db8:b::/49
deny  proto=udp src=2001:db8:b::/48
allow proto=58 src=2001:db8:a::/48
"""

PROTOS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132, "esp": 50, "gre": 47}


def parse_rules(text):
    default, rules = "deny", []
    for line in text.splitlines():
        words = line.split("#")[0].split()
        if not words:
            continue
        if words[0] == "default":
            default = words[1]
            continue
        rule = {"action": words[0], "suspicious": "suspicious" in words}
        for w in words[1:]:
            if "=" in w:
                k, v = w.split("=", 1)
                if k == "proto":
                    rule[k] = PROTOS[v] if v in PROTOS else int(v)
                elif k in ("src", "dst"):
                    rule[k] = ipaddress.ip_network(v)
                else:
                    lo, _, hi = v.partition("-")
                    rule[k] = (int(lo), int(hi or lo))
        rules.append(rule)
    return default, rules


def five_tuple(frame):
    """(version, src, dst, proto, sport, dport) with ports None when absent."""
    off, et = 14, struct.unpack("!H", frame[12:14])[0]
    while et in (0x8100, 0x88A8):
        et = struct.unpack("!H", frame[off + 2:off + 4])[0]
        off += 4
    if et == 0x0800:
        ihl = (frame[off] & 0xF) * 4
        proto = frame[off + 9]
        src = ipaddress.ip_address(frame[off + 12:off + 16])
        dst = ipaddress.ip_address(frame[off + 16:off + 20])
        frag = struct.unpack("!H", frame[off + 6:off + 8])[0] & 0x1FFF
        l4, ver = off + ihl, 4
    elif et == 0x86DD:
        proto = frame[off + 6]
        src = ipaddress.ip_address(frame[off + 8:off + 24])
        dst = ipaddress.ip_address(frame[off + 24:off + 40])
        frag, l4, ver = 0, off + 40, 6
    else:
        return None
    sport = dport = None
    if proto in (6, 17, 132) and not frag:
        sport, dport = struct.unpack("!HH", frame[l4:l4 + 4])
    return (ver, src, dst, proto, sport, dport)


def matches(rule, t):
    ver, src, dst, proto, sport, dport = t
    for key, addr in (("src", src), ("dst", dst)):
        if key in rule and (rule[key].version != ver or addr not in rule[key]):
            return False
    if "proto" in rule and rule["proto"] != proto:
        return False
    for key, port in (("sport", sport), ("dport", dport)):
        if key in rule and (port is None or not rule[key][0] <= port <= rule[key][1]):
            return False
    return True


def expected(frames, stateful):
    """Per frame: 'allow', 'suspicious' or 'deny', with the first-packet cache and connections."""
    default, rules = parse_rules(RULES)
    cache, conns, out = {}, set(), []
    for frame in frames:
        t = five_tuple(frame)
        if t is None:
            out.append("deny")
            continue
        if t not in cache:
            verdict, why = default, "default"
            for r in rules:
                if matches(r, t):
                    verdict = "suspicious" if r["suspicious"] else r["action"]
                    why = "rule"
                    break
            rev = (t[0], t[2], t[1], t[3], t[5], t[4])
            if stateful and verdict == "deny" and t in conns:
                verdict = "allow"
            elif stateful and verdict != "deny":
                conns.add(rev)
                cache.pop(rev, None)
            cache[t] = verdict
        out.append(cache[t])
    return out


def run(stateful):
    host = Host(plugins=("trace",))
    shutil.copy(FW_SO, host.path("plugins/serpens_nf_fw.so"))
    os.chmod(host.path("plugins/serpens_nf_fw.so"), 0o755)
    with open(host.path("fw.rules"), "w") as f:
        f.write(RULES)
    host.pktgen("--packets", "5000", "--flows", "500", "--malformed-ratio", "0", "--seed", "21")
    host.chain("fw", f'''name = "fw"
egress = "pcap0"
[[nf]]
name = "fw"
plugin = "fw"
[nf.config]
rules = "../fw.rules"
stateful = {"true" if stateful else "false"}
[[nf]]
name = "mark"
plugin = "trace"
config = {{ tag = {TAG} }}
[[distribute]]
from = "fw"
to = ["out", "mark"]
''')
    host.config(host.pcap_port() + '\n[[gateway.rule]]\nname = "all"\nchain = "fw"\n')
    host.run("--idle-exit", "1")
    inputs, outputs = host.input(), host.output()
    verdicts = expected(inputs, stateful)
    want = [f if v == "allow" else f + bytes([TAG]) for f, v in zip(inputs, verdicts) if v != "deny"]
    check(len(outputs) == len(want), f"stateful={stateful}: {len(outputs)} packets out, expected {len(want)}")
    for i, (got, exp) in enumerate(zip(outputs, want)):
        check(got == exp, f"stateful={stateful}: output packet {i} differs from the expected one")
    counts = {v: verdicts.count(v) for v in ("allow", "suspicious", "deny")}
    check(all(counts.values()), f"the trace should exercise every verdict: {counts}")
    stats = host.stats()
    nf = next(n for n in stats["instances"][0]["nfs"] if n["name"] == "fw")
    c = nf.get("counters", {})
    check(c.get("denied") == counts["deny"], f"counter denied {c.get('denied')} != {counts['deny']}: {nf}")
    check(c.get("suspicious") == counts["suspicious"], f"counter suspicious: {nf}")
    flows = len({five_tuple(f) for f in inputs})
    check(c.get("cache_misses", 0) >= flows, f"cache_misses {c.get('cache_misses')} < {flows} flows")
    if stateful:
        check(c.get("replies", 0) > 0, "stateful run admitted no replies")
    print(f"ok stateful={stateful}: {counts}, {flows} flows, counters {c}")
    host.cleanup()
    return counts


stateless = run(False)
stateful = run(True)
check(stateful["deny"] < stateless["deny"], "stateful mode should admit replies the rules deny")
