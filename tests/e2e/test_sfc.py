"""Service chains through the real serpens-host: FW -> MON -> NAT and FW -> (IDS | MON) -> NAT.

Part A runs each example chain shipped in conf/chains (nat, mon, lb,
fw-mon-nat, fw-branch, with conf/rules) on generated traffic: every NF's init
must accept its config and packets must flow.

Part B checks the paper's two chains exactly, with rules written here (a
stateless fw, so each packet's verdict follows from the rules alone):
 - fw denies UDP to 198.19.0.0/18 and marks TCP to 198.19.128.0/17 suspicious;
 - three crafted TCP packets carry the EICAR string to a suspicious server.
FW -> MON -> NAT: every packet the fw does not deny leaves, in order; client
packets with an external source address and pool port (one per flow), the
rest unchanged; mon counted exactly the packets and flows the fw let through
(before NAT); tshark finds every checksum good.
FW -> (suspicious ? IDS : MON) -> NAT: the same, except that the ids drops
the EICAR packets, only suspicious packets visit the ids, only the others
visit mon, and both paths join at nat.
Exits 77 (skipped) when tshark is not installed.
"""
import glob
import ipaddress
import json
import os
import shutil
import struct
import subprocess
import sys

from harness import Host, STATE_TOOL, check, csum, eth_ipv4, read_pcap, write_pcap

if shutil.which("tshark") is None:
    print("tshark not installed: skipping")
    sys.exit(77)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGINS = ("fw", "ids", "mon", "nat", "lb")
INSIDE = ipaddress.ip_network("198.18.0.0/16")
EXTERNAL = {"203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"}
PORT_LO, PORT_HI = 20000, 29999
DENY_UDP = ipaddress.ip_network("198.19.0.0/18")
SUSPICIOUS_TCP = ipaddress.ip_network("198.19.128.0/17")
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def new_host():
    host = Host(plugins=())
    host.add_built_plugins(*PLUGINS)
    return host


def nf_stats(host):
    """{nf name: {'seen': n, 'dropped': n, 'c.<counter>': value, ...}} summed over instances."""
    out = {}
    for inst in host.stats()["instances"]:
        for nf in inst["nfs"]:
            d = out.setdefault(nf["name"], {})
            d["seen"] = d.get("seen", 0) + nf["packets"]  # the runtime's counts, not the NF's own
            d["dropped"] = d.get("dropped", 0) + nf["dropped"]
            for k, v in nf.get("counters", {}).items():
                d["c." + k] = d.get("c." + k, 0) + v
    return out


def ipv4(frame):
    """(l3 offset, src, dst, proto, sport, dport) of an IPv4 frame; ports None if absent."""
    off, et = 14, struct.unpack("!H", frame[12:14])[0]
    while et in (0x8100, 0x88A8):
        et = struct.unpack("!H", frame[off + 2:off + 4])[0]
        off += 4
    check(et == 0x0800, "the traffic here is IPv4 only")
    ihl = (frame[off] & 0xF) * 4
    src = ipaddress.ip_address(frame[off + 12:off + 16])
    dst = ipaddress.ip_address(frame[off + 16:off + 20])
    proto, l4 = frame[off + 9], off + ihl
    if proto in (6, 17):
        sport, dport = struct.unpack("!HH", frame[l4:l4 + 4])
    else:  # ICMP echo: the identifier
        sport = dport = struct.unpack("!H", frame[l4 + 4:l4 + 6])[0]
    return off, src, dst, proto, sport, dport


def verdict(frame):
    _, src, dst, proto, _, _ = ipv4(frame)
    if proto == 17 and dst in DENY_UDP:
        return "deny"
    if proto == 6 and dst in SUSPICIOUS_TCP:
        return "suspicious"
    return "allow"


def tcp_frame(src, dst, sport, dport, payload):
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    l4 = struct.pack("!HHIIBBHHH", sport, dport, 100, 0, 0x50, 0x18, 4096, 0, 0) + payload
    l4 = l4[:16] + struct.pack("!H", csum(s + d + struct.pack("!BBH", 0, 6, len(l4)) + l4)) + l4[18:]
    return eth_ipv4(s, d, 6, l4, ident=7)


def tshark_bad_and_good(path):
    base = ["tshark", "-n", "-r", path, "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
            "-o", "udp.check_checksum:TRUE", "-T", "fields", "-e", "frame.number", "-Y"]
    bad = subprocess.run(base + ["ip.checksum.status == 0 || tcp.checksum.status == 0 || udp.checksum.status == 0"
                                 " || icmp.checksum.status == 0"], capture_output=True, text=True, check=True)
    good = subprocess.run(base + ["ip.checksum.status == 1 && (tcp.checksum.status == 1 || udp.checksum.status == 1"
                                  " || icmp.checksum.status == 1)"], capture_output=True, text=True, check=True)
    return bad.stdout.split(), len(good.stdout.split())


# ---- Part A: the shipped example chains run ----------------------------------
for chain in ("nat", "mon", "lb", "fw-mon-nat", "fw-branch"):
    host = new_host()
    os.makedirs(host.path("rules"))
    for rules in glob.glob(os.path.join(REPO, "conf", "rules", "*")):
        shutil.copy(rules, host.path("rules"))
    shutil.copy(os.path.join(REPO, "conf", "chains", chain + ".toml"), host.path("chains"))
    host.pktgen("--packets", "500", "--flows", "50", "--malformed-ratio", "0", "--seed", "3")
    host.config(host.pcap_port() + f'\n[[gateway.rule]]\nname = "all"\nchain = "{chain}"\n')
    host.run("--idle-exit", "1")
    stats = host.stats()
    first = stats["instances"][0]["nfs"][0]
    check(first["packets"] == 500, f"conf/chains/{chain}.toml: its first NF saw {first['packets']} of 500 packets")
    check(len(host.output()) > 0, f"conf/chains/{chain}.toml: nothing left the chain")
    print(f"ok: conf/chains/{chain}.toml runs ({len(host.output())} of 500 packets out)")
    host.cleanup()

# ---- Part B: the paper's chains, exactly ------------------------------------------
RULES_FW = f"""default allow
deny  proto=udp dst={DENY_UDP}
allow suspicious proto=tcp dst={SUSPICIOUS_TCP}
"""
RULES_IDS = 'alert ip any any -> any any (msg:"EICAR"; content:"EICAR-STANDARD"; sid:1;)\n'
NAT = f'''[[nf]]
name = "nat"
plugin = "nat"
[nf.config]
inside = "{INSIDE}"
external = "203.0.113.1-203.0.113.4"
ports = [{PORT_LO}, {PORT_HI}]
'''
FW = '''[[nf]]
name = "fw"
plugin = "fw"
[nf.config]
rules = "../fw.rules"
stateful = false
'''
CHAINS = {
    "fw-mon-nat": f'name = "sfc"\negress = "pcap0"\nchain = ["fw", "mon", "nat"]\n{FW}'
                  f'[[nf]]\nname = "mon"\nplugin = "mon"\n{NAT}',
    "fw-branch": f'name = "sfc"\negress = "pcap0"\n{FW}'
                 f'[[nf]]\nname = "ids"\nplugin = "ids"\n[nf.config]\nrules = "../ids.rules"\n'
                 f'[[nf]]\nname = "mon"\nplugin = "mon"\n{NAT}'
                 '[[distribute]]\nfrom = "fw"\nto = ["mon", "ids"]\n'
                 '[[distribute]]\nfrom = "ids"\nto = ["nat", "drop"]\n'
                 '[[distribute]]\nfrom = "mon"\nto = ["nat"]\n',
}


def run_sfc(kind):
    host = new_host()
    with open(host.path("fw.rules"), "w") as f:
        f.write(RULES_FW)
    with open(host.path("ids.rules"), "w") as f:
        f.write(RULES_IDS)
    host.pktgen("--packets", "5000", "--flows", "500", "--mix", "tcp=60,udp=30,icmp=10", "--malformed-ratio", "0",
                "--vlan-ratio", "0.1", "--seed", "29")
    frames = read_pcap(host.path("in.pcap"))
    # Three EICAR packets from inside to a suspicious server, spread through the capture.
    for k, at in enumerate((100, 2000, 4000)):
        frames.insert(at, tcp_frame("198.18.7.7", "198.19.200.9", 41000 + k, 8080, b"GET /x " + EICAR))
    write_pcap(host.path("in.pcap"), frames)
    host.chain("sfc", CHAINS[kind])
    host.config(host.pcap_port() + '\n[[gateway.rule]]\nname = "all"\nchain = "sfc"\n')
    host.run("--idle-exit", "1")

    verdicts = [verdict(f) for f in frames]
    eicar = {i for i, f in enumerate(frames) if EICAR in f}
    leaving = [i for i, v in enumerate(verdicts) if v != "deny" and not (kind == "fw-branch" and i in eicar)]
    outputs = host.output()
    check(len(outputs) == len(leaving), f"{kind}: {len(outputs)} packets out, expected {len(leaving)}")
    mapping, owners, translated = {}, {}, 0
    for i, out in zip(leaving, outputs):
        src_frame = frames[i]
        l3, src, dst, proto, sport, dport = ipv4(src_frame)
        o_l3, o_src, o_dst, o_proto, o_sport, o_dport = ipv4(out)
        if src in INSIDE and dst not in INSIDE:
            translated += 1
            check(str(o_src) in EXTERNAL and PORT_LO <= o_sport <= PORT_HI,
                  f"{kind}: input {i + 1} not translated: {o_src}:{o_sport}")
            check((o_dst, o_proto) == (dst, proto) and (proto == 1 or o_dport == dport),
                  f"{kind}: input {i + 1}: destination changed")
            check(out[o_l3 + 20 + (20 if proto == 6 else 8):] == src_frame[l3 + 20 + (20 if proto == 6 else 8):],
                  f"{kind}: input {i + 1}: payload changed")
            flow, item = (proto, src, sport, dst, dport), (proto, o_src, o_sport)
            check(mapping.setdefault(flow, item) == item, f"{kind}: flow {flow} got two items")
            check(owners.setdefault(item, flow) == flow, f"{kind}: item {item} shared by two flows")
        else:
            check(out == src_frame, f"{kind}: input {i + 1} ({src} -> {dst}) should pass unchanged")
    bad, good = tshark_bad_and_good(host.path("out.pcap"))
    check(not bad, f"{kind}: tshark finds bad checksums in output frames {bad[:10]}")
    check(good == len(outputs), f"{kind}: tshark verified {good} of {len(outputs)} frames")

    stats = nf_stats(host)
    n_deny = verdicts.count("deny")
    n_susp = verdicts.count("suspicious")
    check(stats["fw"]["seen"] == len(frames), f"{kind}: fw saw {stats['fw']['seen']}")
    check(stats["nat"]["c.translated_out"] == translated, f"{kind}: nat {stats['nat']} vs {translated} translated")
    check(stats["nat"]["seen"] == len(leaving), f"{kind}: nat saw {stats['nat']['seen']}")
    if kind == "fw-mon-nat":
        mon_seen = [i for i, v in enumerate(verdicts) if v != "deny"]
    else:
        mon_seen = [i for i, v in enumerate(verdicts) if v == "allow"]
        check(stats["ids"]["seen"] == n_susp, f"{kind}: ids saw {stats['ids']['seen']}, {n_susp} suspicious")
        check(stats["ids"]["dropped"] == len(eicar), f"{kind}: ids dropped {stats['ids']['dropped']}, not the EICARs")
    check(stats["mon"]["seen"] == len(mon_seen) and stats["mon"]["c.packets"] == len(mon_seen),
          f"{kind}: mon saw {stats['mon']}, expected {len(mon_seen)} packets")
    # mon counted flows as the fw let them through, before NAT rewrote them.
    # mon's area (word 0: packets) of each entry of the chain's flow table.
    dumped = json.loads(subprocess.run([STATE_TOOL, "--root", host.state, "flows", "sfc", "--json"],
                                       capture_output=True, text=True, check=True).stdout)
    want_flows = {}
    for i in mon_seen:
        _, src, dst, proto, sport, dport = ipv4(frames[i])
        a, b = (src.packed, sport), (dst.packed, dport)
        key = (min(a, b), max(a, b), proto)
        want_flows[key] = want_flows.get(key, 0) + 1
    got_flows = {}
    for e in dumped["entries"]:
        if e["areas"]["mon"][0] == 0:
            continue  # a flow mon never saw (denied by fw, or ids's branch)
        a, b = ipaddress.ip_address(e["addr_a"]).packed, ipaddress.ip_address(e["addr_b"]).packed
        got_flows[((a, e["port_a"]), (b, e["port_b"]), e["proto"])] = e["areas"]["mon"][0]
    check(got_flows == want_flows, f"{kind}: mon's flows differ from the fw-allowed traffic "
          f"({len(got_flows)} vs {len(want_flows)} flows)")
    print(f"ok {kind}: {len(frames)} in, {n_deny} denied, {n_susp} suspicious ({len(eicar)} EICAR), "
          f"{len(outputs)} out, {translated} translated over {len(mapping)} mappings, mon {len(got_flows)} flows")
    host.cleanup()


run_sfc("fw-mon-nat")
run_sfc("fw-branch")
