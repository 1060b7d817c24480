"""Global state follows a chain onto another server and back (paper §III-A2).

Hosts a and b (two network namespaces over a veth, as in test_peer_scale.py)
run FW -> MON -> NAT.  `scale sfc +1 --peer b` lends b a share of every key
of nat's port pool (a lease, state/lease_book.h); b takes it over as its
whole pool, so the two hosts' NATs never hand out one external (address,
port) twice.  Every packet of the new flows runs on b, while the old flows,
going on beside them, stay on a.  `scale sfc -1 --peer b` lets b's flows expire (3 s idle
there), after which b gives back what it did not hand out and what its mon
counted (a replica merge), so a's mon, read from its state after a clean
stop, counts every packet sent.  Then a second scale-out, and b is killed:
a keeps forwarding b's flows itself, and the lease comes back to a once
lease_ms passes unrenewed.
"""
import ipaddress
import json
import os
import struct
import subprocess
import time

from harness import CTL, Host, Netns, check, flow_frame, make_pki, peer_section, read_pcap, wait_until, write_pcap

OLD, NEW, AGAIN = range(0, 100), range(100, 300), range(300, 400)
ROUNDS = 3
LEASE_MS = 3000

ns_a, ns_b = Netns("state-a"), Netns("state-b")
ns_a.link(ns_b, "sa", "sb", "10.95.0.1/24", "10.95.0.2/24")
ns_a.veth("ia", "ib")
a, b = Host(plugins=()), Host(plugins=())
pki = make_pki(a.path("pki"), [a.prefix, b.prefix])


write_pcap(a.path("empty.pcap"), [])
a.fw_mon_nat("out")
# Socket rings of 4096 frames (net_af_packet's default is 512): on a loaded
# machine a host's lcore can be descheduled long enough for the kernel to
# drop from a smaller one, and the test would wait for packets never received.
a.config('[[port]]\nname = "in"\ndevice = "net_af_packet0,iface=ia,framecnt=4096"\n'
         f'[[port]]\nname = "out"\ndevice = "net_pcap0,rx_pcap={a.path("empty.pcap")},tx_pcap={a.path("out.pcap")}"\n'
         '[[port]]\nname = "underlay"\ndevice = "net_af_packet1,iface=sa,framecnt=4096"\n'
         '\n[[gateway.rule]]\nin_port = "in"\nchain = "sfc"\n' +
         peer_section(a, pki, "10.95.0.1", b, "10.95.0.2", underlay="10.94.0.1", lease_ms=LEASE_MS),
         eal=a.eal("0"))
b.fw_mon_nat("underlay")
# b's flows end 3 s after their last packet, NAT mappings included, so a
# scale-in drains in a few seconds; the rounds of a flow come well within
# that even on a loaded machine (a mapping that expired between them would
# give the flow a new port).
with open(b.path("chains/sfc.toml"), "a") as f:
    f.write("[nf.config.timeouts]\nudp = 3\n")
b.config('[[port]]\nname = "underlay"\ndevice = "net_af_packet0,iface=sb,framecnt=4096"\n'
         '\n[[instance]]\nchain = "sfc"\ncount = 1\nflow_idle_s = 1\n' +
         peer_section(b, pki, "10.95.0.2", a, "10.95.0.1", underlay="10.94.0.2", lease_ms=LEASE_MS),
         eal=b.eal("0"))

phases = [
    [flow_frame(f, s) for s in range(ROUNDS) for f in OLD],
    # The old flows go on beside the new ones: they stay on a.
    [flow_frame(f, s + (ROUNDS if f in OLD else 0)) for s in range(ROUNDS) for f in list(OLD) + list(NEW)],
    [flow_frame(f, s) for s in range(ROUNDS) for f in AGAIN],
    [flow_frame(f, s + ROUNDS) for s in range(ROUNDS) for f in AGAIN],
]
for n, phase in enumerate(phases):
    write_pcap(a.path(f"phase{n}.pcap"), phase)
sent = sum(len(p) for p in phases)
proc_a = a.start(ns=ns_a, log_level="info")
proc_b = b.start(ns=ns_b, log_level="info")


def wait_for(what, condition, timeout=30):
    return wait_until(what, condition, (proc_a,), timeout,
                      lambda: f"; a: {a.where_packets_are()}\nb: {b.where_packets_are()}")


def send(n):
    sender = ns_a.send_pcap("ib", a.path(f"phase{n}.pcap"))
    check(sender.returncode == 0, f"sending phase {n}: {sender.stderr}")


def out_total(host):
    return sum(i["out"] + i["for_peers"] for i in host.ctl_json("stats")["instances"] if i["chain"] == "sfc")


def peer_entry(host, peer_id):
    return next(p for p in host.ctl_json("peers")["peers"] if p["id"] == peer_id)


def pool_free(host):
    """Free items of nat's pool on a host, from its state: each item is in
    exactly one cell of its key (RELEASE), or lent, or taken by a mapping."""
    dump = json.loads(subprocess.run([CTL, "-c", host.path("host.toml"), "state", "dump", "sfc", "nat", "pool",
                                      "--json", "--limit", "0"], capture_output=True, text=True, check=True).stdout)
    free = 0
    for e in dump["entries"]:
        for cell in [e["base"]] + e["instances"]:
            free += sum(bin(byte).count("1") for byte in bytes.fromhex(cell))
    return free, len(dump["entries"])


try:
    wait_for("a and b see each other up", lambda: peer_entry(a, b.prefix)["up"] and peer_entry(b, a.prefix)["up"])
    free_at_start, pool_keys = pool_free(a)
    send(0)
    wait_for("the old flows have left a", lambda: out_total(a) >= len(phases[0]))
    a.ctl_json("scale", "sfc", "+1", "--peer", b.prefix)
    leases = peer_entry(a, b.prefix)["leases_granted"]
    check(leases > 0, "b holds leases of nat's pool")
    send(1)
    wait_for("the new flows have left a", lambda: out_total(a) >= sum(map(len, phases[:2])))
    to_b = sum(i["to_peers"] for i in a.ctl_json("stats")["instances"] if i["chain"] == "sfc")
    check(out_total(b) == to_b == ROUNDS * len(NEW),
          f"b ran every packet of the new flows and nothing else: {out_total(b)} there, a sent it {to_b}, "
          f"the new flows have {ROUNDS * len(NEW)}")

    a.ctl_json("scale", "sfc", "-1", "--peer", b.prefix)
    # b's flows expire after 1 s idle; then its leases and mon's counts come home.
    wait_for("b gives every lease back", lambda: peer_entry(a, b.prefix)["leases_granted"] == 0)

    a.ctl_json("scale", "sfc", "+1", "--peer", b.prefix)
    check(peer_entry(a, b.prefix)["leases_granted"] > 0, "b holds leases again")
    ran_by_b = out_total(b)
    send(2)
    wait_for("the third flows have left a", lambda: out_total(a) >= sum(map(len, phases[:3])))
    lost_with_b = out_total(b) - ran_by_b  # mon's counts of these die with b
    check(lost_with_b > 0, "b served some of the third flows")
    proc_b.kill()
    proc_b.wait(timeout=30)
    killed_at = time.monotonic()
    wait_for("a sees b down", lambda: not peer_entry(a, b.prefix)["up"])
    send(3)
    wait_for("a serves b's flows itself", lambda: out_total(a) >= sent)
    wait_for("the leases b held expire back to a", lambda: peer_entry(a, b.prefix)["leases_granted"] == 0)
    expired_after = time.monotonic() - killed_at
except SystemExit:
    for name, proc in (("a", proc_a), ("b", proc_b)):
        if proc.poll() is None:
            proc.kill()
        print(f"--- host {name} (exit {proc.wait(timeout=60)}):\n{proc.communicate()[0]}")
    raise
finally:
    for proc in (proc_a, proc_b):
        if proc.poll() is None:
            proc.terminate()
    logs = [proc.communicate(timeout=60)[0] if proc.stdout and not proc.stdout.closed else ""
            for proc in (proc_a, proc_b)]
check(proc_a.returncode == 0, f"a exited {proc_a.returncode}:\n{logs[0]}")
check(expired_after >= LEASE_MS / 1000 * 0.5, f"the leases came back {expired_after:.1f} s after b died")

# Every packet left a, translated by one NAT or the other.  Each flow keeps
# one external (address, port) while its host lives, and no two flows share
# one: not across the two hosts while b lived (phases 1-3), nor after (phase
# 4, when a serves b's flows anew).
frames = [fr for fr in read_pcap(a.path("out.pcap")) if len(fr) >= 50 and fr[23] == 17]
check(len(frames) == sent, f"{sent} packets sent, {len(frames)} left a")
seen = {}
for fr in frames:
    flow, _ = struct.unpack("!II", fr[42:50])
    src = (str(ipaddress.ip_address(fr[26:30])), struct.unpack("!H", fr[34:36])[0])
    check(ipaddress.ip_address(src[0]) in ipaddress.ip_network("203.0.113.0/28"), f"flow {flow} left untranslated")
    seen.setdefault(flow, []).append(src)
for group, flows in (("while b lived", [(f, seen[f][:ROUNDS] if f in AGAIN else seen[f]) for f in seen]),
                     ("after b died", [(f, seen[f][ROUNDS:]) for f in AGAIN])):
    owner = {}
    for flow, srcs in flows:
        check(len(set(srcs)) == 1, f"flow {flow} changed its external endpoint {group}: {srcs}")
        other = owner.setdefault(srcs[0], flow)
        check(other == flow, f"flows {other} and {flow} share the external {srcs[0]} {group}")

# Every port of a's pool accounted for: free again, or held by a mapping a
# still has; nothing stayed lent, nothing came back twice.
free_at_end, _ = pool_free(a)
nat = [nf["counters"] for i in json.load(open(a.path("stats.json")))["instances"] for nf in i["nfs"]
       if nf["name"] == "nat"]
held = sum(c["mappings_created"] - c["mappings_expired"] for c in nat)
check(free_at_end + held == free_at_start,
      f"a's pool: {free_at_start} free at the start, {free_at_end} at the end with {held} mappings held")

# a's mon, from its state after the clean stop: every packet it ran, and
# every packet b ran for the first scale-out (merged back); what b ran for
# the second died with it.
dump = json.loads(subprocess.run([CTL, "-c", a.path("host.toml"), "state", "dump", "sfc", "mon", "hosts", "--json"],
                                 capture_output=True, text=True, check=True).stdout)
total = 0
for e in dump["entries"]:
    base = e["decoded"]["base"]["tx_packets"]
    total += base + sum(r["tx_packets"] - base for i, r in enumerate(e["decoded"]["instances"])
                        if r["tx_packets"] and dump["active_mask"] >> i & 1)
check(total == sent - lost_with_b, f"a's mon counts {total} packets: {sent} sent, {lost_with_b} counted by b when "
      f"it was killed")
print(f"OK: {sent} packets, no external endpoint shared; a's pool of {free_at_start} ports ({pool_keys} keys) "
      f"accounted for; b gave its leases and counts back after the scale-in; "
      f"after b was killed its leases came back in {expired_after:.1f} s; mon counts {total}")
for host in (a, b):
    host.cleanup()
