"""mon through the real serpens-host: its counts match what Python counts from the input.

Two instances of a mon chain run serpens-pktgen traffic (IPv4 and IPv6, VLAN
tags, 2% malformed frames passed unparsed).  Afterwards the state tables are
read from outside with `serpens-state flows --json` (mon's area of each entry
of the chain's flow table) and `serpensctl state dump --json` (its tables,
decoded by the layout mon declares: each field must equal its bytes in the
hex dump), and compared with counts made here from the input capture by an
independent decoder:
 - flows (mon's 64-byte area in the chain's flow table): packets and bytes
   per direction-independent 5-tuple;
 - hosts (global/write EVENTUAL, one key per address, two replicas folded by
   the host's default merge on a table-wide timer) plus what the flows still
   hold for their hosts (pending): packets and bytes sent and received per
   address, exactly.  fold_ms is 10 minutes here, so only the host's last
   visit at its clean stop folds the flows: afterwards none holds anything;
 - the NF counters in the host's stats: packets, bytes, unparsed.
Every packet leaves unchanged.
"""
import ipaddress
import json
import os
import shutil
import struct
import subprocess

from harness import CTL, HOST, Host, check, nf_counters

BUILD = os.path.dirname(os.path.dirname(HOST))
MON_SO = os.path.join(BUILD, "plugins", "mon", "serpens_nf_mon.so")
STATE_TOOL = os.path.join(BUILD, "tools", "serpens-state", "serpens-state")


def flow_of(frame):
    """(key, src, dst) as mon keys them, or None for a frame it cannot parse."""
    off, et = 14, struct.unpack("!H", frame[12:14])[0]
    while et in (0x8100, 0x88A8):
        et = struct.unpack("!H", frame[off + 2:off + 4])[0]
        off += 4
    if et == 0x0800:
        ihl = (frame[off] & 0xF) * 4
        src, dst, proto = frame[off + 12:off + 16], frame[off + 16:off + 20], frame[off + 9]
        frag = struct.unpack("!H", frame[off + 6:off + 8])[0] & 0x1FFF
        l4, ver = off + ihl, 4
        mapped_src, mapped_dst = bytes(10) + b"\xff\xff" + src, bytes(10) + b"\xff\xff" + dst
    elif et == 0x86DD:
        src, dst, proto = frame[off + 8:off + 24], frame[off + 24:off + 40], frame[off + 6]
        frag, l4, ver = 0, off + 40, 6
        mapped_src, mapped_dst = src, dst
    else:
        return None
    sport = dport = 0
    if not frag:
        if proto in (6, 17):
            sport, dport = struct.unpack("!HH", frame[l4:l4 + 4])
        elif (proto == 1 and frame[l4] in (0, 8)) or (proto == 58 and frame[l4] in (128, 129)):
            sport = dport = struct.unpack("!H", frame[l4 + 4:l4 + 6])[0]
    a, b = (src, sport), (dst, dport)
    if b < a:
        a, b = b, a
    return (a[0], b[0], a[1], b[1], proto, ver), mapped_src, mapped_dst


HOST_FIELDS = ["tx_packets", "tx_bytes", "rx_packets", "rx_bytes"]


def counts(v):
    return list(struct.unpack("<QQQQ", v))


def dump(host, table):
    # -c: serpensctl finds the state where host.toml's state_dir puts it.
    out = subprocess.run([CTL, "-c", host.path("host.toml"), "state", "dump", "mon", "mon", table, "--json"],
                         capture_output=True, text=True, check=True).stdout
    d = json.loads(out)
    check(d["layout"] is not None and [f["name"] for f in d["layout"]["value"]] == HOST_FIELDS,
          f"{table}: mon declares its value layout, the dump shows {d['layout']}")
    # Every decoded field is what its bytes say (independently of the tools' decoder).
    for e in d["entries"]:
        dec = e["decoded"]
        for hexed, fields in [(e["base"], dec["base"])] + list(zip(e["instances"], dec["instances"])):
            check([fields[f] for f in HOST_FIELDS] == counts(bytes.fromhex(hexed)),
                  f"{table}: decoded {fields} is not the hex {hexed}")
        key = bytes.fromhex(e["key"])
        want = str(ipaddress.ip_address(key)) if table == "hosts" else struct.unpack("<I", key)[0]
        got = dec["key"]["addr" if table == "hosts" else "row"]
        if table == "hosts" and key[:12] == bytes(10) + b"\xff\xff":
            want = "::ffff:" + str(ipaddress.ip_address(key[12:]))  # inet_ntop's spelling of a mapped address
        check(got == want, f"{table}: decoded key {got}, its bytes say {want}")
    return d


host = Host(plugins=())
shutil.copy(MON_SO, host.path("plugins/serpens_nf_mon.so"))
os.chmod(host.path("plugins/serpens_nf_mon.so"), 0o755)
summary = host.pktgen("--packets", "6000", "--flows", "500", "--malformed-ratio", "0.02", "--vlan-ratio", "0.2",
                      "--seed", "13")
malformed = set(summary["malformed_frames"])
host.chain("mon", '''name = "mon"
egress = "pcap0"
[[nf]]
name = "mon"
plugin = "mon"
[nf.config]
max_hosts = 8192
merge_ms = 20
fold_ms = 600000
''')
host.config(host.pcap_port() + '\n[parser]\nmalformed = "pass"\n'
            '\n[[gateway.rule]]\nname = "all"\nchain = "mon"\n'
            '\n[[instance]]\nchain = "mon"\ncount = 2\nlcores = [1, 1]\n')
host.run("--idle-exit", "1")

inputs, outputs = host.input(), host.output()
check(sorted(outputs) == sorted(inputs), f"mon must pass every packet unchanged: {len(inputs)} in, {len(outputs)} out")

# ---- what Python counts ---------------------------------------------------
flows, hosts, total_bytes = {}, {}, 0
for n, frame in enumerate(inputs, start=1):
    total_bytes += len(frame)
    if n in malformed:
        continue
    key, src, dst = flow_of(frame)
    f = flows.setdefault(key, [0, 0])
    f[0] += 1
    f[1] += len(frame)
    for addr, at in ((src, 0), (dst, 2)):
        h = hosts.setdefault(addr, [0, 0, 0, 0])
        h[at] += 1
        h[at + 1] += len(frame)

# ---- what mon kept, read from outside -------------------------------------
flow_table = json.loads(subprocess.run([STATE_TOOL, "--root", host.state, "flows", "mon", "--json"],
                                      capture_output=True, text=True, check=True).stdout)
check([a["nf"] for a in flow_table["areas"]] == ["mon"] and flow_table["areas"][0]["size"] == 64,
      f"flow table areas {flow_table['areas']}")
got, pending, folded = {}, {}, 0


def host_key(addr, ver):
    return bytes(10) + b"\xff\xff" + addr if ver == 4 else addr


for e in flow_table["entries"]:
    ver = e["ip_version"]
    addr_a, addr_b = ipaddress.ip_address(e["addr_a"]).packed, ipaddress.ip_address(e["addr_b"]).packed
    key = (addr_a, addr_b, e["port_a"], e["port_b"], e["proto"], ver)
    packets, nbytes, first, folded_ns, a_p, a_b, b_p, b_b = e["areas"]["mon"]
    if packets == 0:
        continue  # an entry of a frame mon did not count (none expected)
    check(0 < first <= folded_ns, f"flow {key}: first seen {first}, folded {folded_ns}")
    check(a_p + b_p <= packets and a_b + b_b <= nbytes, f"flow {key}: more pending than counted")
    folded += a_p + b_p < packets
    got[key] = [packets, nbytes]
    # what the flow has not yet added to its hosts' counts
    for addr, sent, heard in ((addr_a, (a_p, a_b), (b_p, b_b)), (addr_b, (b_p, b_b), (a_p, a_b))):
        h = pending.setdefault(host_key(addr, ver), [0, 0, 0, 0])
        for i, c in enumerate(sent + heard):
            h[i] += c
check(len(got) == len(flows), f"mon has {len(got)} flows, Python counts {len(flows)}")
for key, want in flows.items():
    check(got.get(key) == want, f"flow {key}: mon {got.get(key)}, Python {want}")

def global_value(e, active_mask):
    """base + sum over live replicas of (replica - base); an all-zero cell
    belongs to an instance that never ran since the key was created, and one
    outside the active mask to an instance whose counts were merged when it
    stopped (the host keeps a pre-initialized one in its pool)."""
    def fields(cell):
        return [cell[f] for f in HOST_FIELDS]
    base = fields(e["decoded"]["base"])
    total = list(base)
    for i, rep in enumerate(e["decoded"]["instances"]):
        r = fields(rep)
        if not any(r) or not active_mask >> i & 1:
            continue
        for i, c in enumerate(r):
            total[i] += c - base[i]
    return total


table = dump(host, "hosts")
check("eventual" in table["kind"], f"hosts table kind {table['kind']}")
got_hosts = {}
for e in table["entries"]:
    a = ipaddress.ip_address(e["decoded"]["key"]["addr"]).packed
    check(len(a) == 16 and a not in got_hosts, f"hosts key {e['key']}")
    got_hosts[a] = global_value(e, table["active_mask"])
overflow_table = dump(host, "host_overflow")
overflow = sum(global_value(e, overflow_table["active_mask"])[0] for e in overflow_table["entries"])
check(overflow == 0, f"{overflow} packets overflowed the host table")
check(set(got_hosts) <= set(hosts), f"mon has hosts Python never saw: {set(got_hosts) - set(hosts)}")
check(set(pending) == set(hosts), f"mon's flows name {len(pending)} hosts, Python counts {len(hosts)}")
check(folded > 0 and got_hosts, "no flow was folded into the hosts table")
# The host stopped cleanly: its last visit folded every flow, so the hosts
# table alone holds every count.
still = {ipaddress.ip_address(k): v for k, v in pending.items() if any(v)}
check(not still, f"after a clean stop, flows still hold counts for {len(still)} host(s): {list(still.items())[:3]}")
for addr, want in hosts.items():
    have = [g + p for g, p in zip(got_hosts.get(addr, [0, 0, 0, 0]), pending[addr])]
    check(have == want, f"host {ipaddress.ip_address(addr)}: mon {got_hosts.get(addr)} + pending {pending[addr]}, "
          f"Python {want}")

listed = json.loads(subprocess.run([CTL, "-c", host.path("host.toml"), "state", "list", "--json"],
                                  capture_output=True, text=True, check=True).stdout)
check(sorted((t["table"], t["layout"]) for t in listed["tables"]) == [("host_overflow", True), ("hosts", True)],
      f"serpensctl state list: {listed['tables']}")
text = subprocess.run([CTL, "-c", host.path("host.toml"), "state", "dump", "mon", "mon", "hosts", "--limit", "3"],
                      capture_output=True, text=True, check=True).stdout
check("decoded by the NF's layout" in text and "tx_packets" in text.splitlines()[1], f"human dump:\n{text}")

# ---- the NF counters --------------------------------------------------------
stats = host.stats()
active = [inst for inst in stats["instances"] if inst["state"] == "active"]
check(len(active) == 2, "two mon instances")
counters = nf_counters(host, "mon")
check(all(inst["packets"] > 0 for inst in active), "both instances should see traffic")
check(counters.get("packets") == len(inputs), f"packets counter {counters.get('packets')} != {len(inputs)}")
check(counters.get("bytes") == total_bytes, f"bytes counter {counters.get('bytes')} != {total_bytes}")
check(counters.get("unparsed") == len(malformed), f"unparsed {counters.get('unparsed')} != {len(malformed)}")
check(counters.get("flows_new") == len(flows), f"flows_new {counters.get('flows_new')} != {len(flows)}")
print(f"ok: {len(inputs)} packets, {len(flows)} flows and {len(hosts)} hosts match; "
      f"{len(malformed)} unparsed; counters {counters}")
host.cleanup()
