"""Scaling a chain onto another server with new flows only (paper §III-A2).

Hosts a and b run in two network namespaces joined by a veth pair, their
underlay (net_af_packet on each end; VXLAN between underlay addresses the
kernels do not own).  Chain `c` is `tally` (tests/plugins/tally.c: it
counts each flow's packets in the chain's flow table and appends its build
and the count to every packet); a runs build 1, b build 2, so every packet
that leaves a says which host processed it.  tally also appends two bytes of
its global/read table "marks", loaded from its config: [7] on a, [9, 5] on b.
The scale-out copies a's table to b, so every packet shows (7, none),
whichever host ran it.

Traffic enters a only, sent into a veth of its namespace (net_af_packet), in
three phases:
 1. old flows, with the chain on a alone;
 2. `serpensctl scale c +1 --peer b`, then the old flows go on and new flows
    start: every new flow goes to b through the tunnel and comes back
    processed to leave by a's egress, while every old flow stays on a;
 3. `scale c -1 --peer b`, then all flows go on and late flows start: the flows
    b took stay on b (their state is there), the late ones all stay on a.
Afterwards every packet has left a, in order per flow, and each flow's counts
run 1, 2, 3... on the one host that served it: nothing lost, reordered or
split between hosts.
 4. b is killed; a sees it down, and the new flows go on: a serves them all
    itself, those b served as new flows (their state died with b), and
    nothing is lost.
"""
import os
import shutil

from harness import (TEST_PLUGINS, Host, Netns, check, flow_frame, make_pki, peer_section, read_pcap, tally_by_flow,
                     wait_until, write_pcap)

OLD, NEW, LATE = range(0, 120), range(120, 360), range(360, 420)
ROUNDS = 4  # packets per flow and phase

ns_a, ns_b = Netns("scale-a"), Netns("scale-b")
ns_a.link(ns_b, "sa", "sb", "10.97.0.1/24", "10.97.0.2/24")
ns_a.veth("ia", "ib")  # the test sends into ib; a receives on ia
a, b = Host(plugins=("tally",)), Host(plugins=("tally",))
shutil.copy(os.path.join(TEST_PLUGINS, "serpens_nf_tally_v2.so"), b.path("plugins/serpens_nf_tally.so"))
pki = make_pki(a.path("pki"), [a.prefix, b.prefix])
CHAIN = 'name = "c"\negress = "{egress}"\n[[nf]]\nname = "tally"\nplugin = "tally"\n[nf.config]\nmarks = {marks}\n'
MARKS_A = bytes([7, 255])  # a's marks[0], and no marks[1]
TAIL = 7  # tally's bytes: build, count, marks[0], marks[1]


write_pcap(a.path("empty.pcap"), [])
a.chain("c", CHAIN.format(egress="out", marks="[7]"))
a.config('[[port]]\nname = "in"\ndevice = "net_af_packet0,iface=ia,framecnt=4096"\n'
         f'[[port]]\nname = "out"\ndevice = "net_pcap0,rx_pcap={a.path("empty.pcap")},tx_pcap={a.path("out.pcap")}"\n'
         '[[port]]\nname = "underlay"\ndevice = "net_af_packet1,iface=sa,framecnt=4096"\n'
         '\n[[gateway.rule]]\nin_port = "in"\nchain = "c"\n' +
         peer_section(a, pki, "10.97.0.1", b, "10.97.0.2", underlay="10.96.0.1"), eal=a.eal("0"))
# b runs the chain only for a: packets it processes go back to a, never
# out of its own egress.
b.chain("c", CHAIN.format(egress="underlay", marks="[9, 5]"))
b.config('[[port]]\nname = "underlay"\ndevice = "net_af_packet0,iface=sb,framecnt=4096"\n'
         '\n[[instance]]\nchain = "c"\ncount = 1\n' +
         peer_section(b, pki, "10.97.0.2", a, "10.97.0.1", underlay="10.96.0.2"),
         eal=b.eal("0"))

phase1 = [flow_frame(f, s) for s in range(ROUNDS) for f in OLD]
phase2 = [flow_frame(f, s + (ROUNDS if f in OLD else 0)) for s in range(ROUNDS) for f in list(OLD) + list(NEW)]
phase3 = [flow_frame(f, s + (2 * ROUNDS if f in OLD else ROUNDS if f in NEW else 0))
          for s in range(ROUNDS) for f in list(OLD) + list(NEW) + list(LATE)]
trace = phase1 + phase2 + phase3
phase4 = [flow_frame(f, s + 2 * ROUNDS) for s in range(ROUNDS) for f in NEW]
for n, phase in enumerate((phase1, phase2, phase3, phase4), 1):
    write_pcap(a.path(f"phase{n}.pcap"), phase)
proc_a = a.start(ns=ns_a, log_level="warn")
proc_b = b.start(ns=ns_b, log_level="warn")


def wait_for(what, condition, timeout=30):
    return wait_until(what, condition, (proc_a,), timeout,
                      lambda: f"; a: {a.where_packets_are()}\nb: {b.where_packets_are()}")


def send(phase):
    sender = ns_a.send_pcap("ib", a.path(f"phase{phase}.pcap"))
    check(sender.returncode == 0, f"sending phase {phase}: {sender.stderr}")


def instances(host):
    return [i for i in host.ctl_json("stats")["instances"] if i["chain"] == "c"]


def total(host, key):
    return sum(i[key] for i in instances(host))


def peer_entry(host, peer_id):
    return next(p for p in host.ctl_json("peers")["peers"] if p["id"] == peer_id)


try:
    wait_for("a and b see each other up", lambda: peer_entry(a, b.prefix)["up"] and peer_entry(b, a.prefix)["up"])
    send(1)
    wait_for("a has sent the old flows' first packets", lambda: total(a, "out") >= len(phase1))

    refused = a.ctl("scale", "c", "+2", "--peer", b.prefix)
    check(refused.returncode != 0 and "+1" in refused.stderr, f"scale +2 on a peer is refused: {refused.stderr}")
    unknown = a.ctl("scale", "c", "+1", "--peer", "nobody")
    check(unknown.returncode != 0 and "no peer 'nobody'" in unknown.stderr, f"an unknown peer: {unknown.stderr}")
    scaled = a.ctl_json("scale", "c", "+1", "--peer", b.prefix)
    check(scaled["buckets"] == 256 and scaled["of_buckets"] == 256, f"b takes the new flows: {scaled}")
    check(scaled["read_state_copied"] == 1, f"a's global/read table went to b: {scaled}")
    check(peer_entry(a, b.prefix)["new_flows_of"] == {"c": 256}, "serpensctl peers shows what b takes")
    human = a.ctl("peers")
    check(human.returncode == 0 and "c (256)" in human.stdout, f"serpensctl peers as a table: {human.stdout}")
    again = a.ctl("scale", "c", "+1", "--peer", b.prefix)
    check(again.returncode != 0 and "already" in again.stderr, f"a second scale-out is refused: {again.stderr}")
    send(2)
    wait_for("phase 2 has come back", lambda: total(a, "out") >= len(phase1) + len(phase2))
    ran_for_a = peer_entry(b, a.prefix)["runs_for_it"]["c"]
    check(ran_for_a["first_packet_ns"] is not None and ran_for_a["first_packet_ns"] > scaled["started_ns"] and
          not ran_for_a["draining"], f"b says when a's first packet ran there: {ran_for_a}")
    first_remote_ms = (ran_for_a["first_packet_ns"] - scaled["started_ns"]) / 1e6

    back = a.ctl("scale", "c", "-1", "--peer", b.prefix)
    check(back.returncode == 0 and "new flows of 256 bucket(s) stay here again" in back.stdout and
          "(peer told: yes)" in back.stdout, f"scale -1 on b: {back.stdout}{back.stderr}")
    check(peer_entry(a, b.prefix)["new_flows_of"] == {}, "after the scale-in b takes no new flows")
    check(peer_entry(b, a.prefix)["runs_for_it"]["c"]["draining"], "b drains the chain it ran for a")
    human_b = b.ctl("peers")
    check(human_b.returncode == 0 and "c (draining)" in human_b.stdout, f"b's serpensctl peers: {human_b.stdout}")
    send(3)
    wait_for("phase 3 has left a", lambda: total(a, "out") >= len(trace))
    stats_b = instances(b)

    proc_b.kill()
    proc_b.wait(timeout=30)
    wait_for("a sees b down", lambda: not peer_entry(a, b.prefix)["up"])
    send(4)
    wait_for("phase 4 has left a", lambda: total(a, "out") >= len(trace) + len(phase4))
    stats_a = instances(a)
    vxlan_a = a.ctl_json("stats")["vxlan"]
    dispatch_a = a.ctl_json("stats")["dispatch"]
finally:
    for proc in (proc_a, proc_b):
        if proc.poll() is None:
            proc.terminate()
    logs = [proc.communicate(timeout=60)[0] for proc in (proc_a, proc_b)]
check(proc_a.returncode == 0 and proc_b.returncode == -9,
      f"hosts exited {proc_a.returncode}, {proc_b.returncode}:\n{logs[0]}\n{logs[1]}")

# Only the flows sent: the test does not own the kernel, which may send its
# own frames on ia.
left = read_pcap(a.path("out.pcap"))
out = [fr for fr in left if len(fr) == len(trace[0]) + TAIL and fr[26:28] == bytes([198, 18])]
check(len(out) == len(trace) + len(phase4), f"{len(trace) + len(phase4)} packets sent, {len(out)} left a")
served_by_b = set()
for flow, seen in tally_by_flow(out, len(trace[0])).items():
    check([s for s, _, _, _ in seen] == list(range(len(seen))), f"flow {flow}: lost or reordered: {seen}")
    check(all(marks == MARKS_A for _, _, _, marks in seen), f"flow {flow} ran without a's global/read state: {seen}")
    # Until b died: one host; after, a alone.
    before = seen[:2 * ROUNDS] if flow in NEW else seen
    builds = {build for _, build, _, _ in before}
    check(len(builds) == 1, f"flow {flow} was served by both hosts: {seen}")
    check([c for _, _, c, _ in before] == list(range(1, len(before) + 1)), f"flow {flow}: recounted: {seen}")
    if builds == {2}:
        served_by_b.add(flow)
    if flow in NEW:
        after = seen[2 * ROUNDS:]
        # b's flows start anew on a: their state died with b.
        first = 1 if builds == {2} else 2 * ROUNDS + 1
        check([(build, c) for _, build, c, _ in after] == [(1, first + k) for k in range(ROUNDS)],
              f"flow {flow} after b died: {after}")
check(not served_by_b & set(OLD), f"old flows went to b: {sorted(served_by_b & set(OLD))}")
check(not served_by_b & set(LATE),
      f"flows that started after the scale-in went to b: {sorted(served_by_b & set(LATE))}")
check(served_by_b == set(NEW), f"b served {len(served_by_b)} of {len(NEW)} new flows, not all: "
      f"{sorted(set(NEW) - served_by_b)} stayed on a")
on_b = sum(1 for fr in out if fr[len(trace[0])] == 2)
check(sum(i["packets"] for i in stats_b) == on_b, f"b's chain ran {on_b} packets: {stats_b}")
check(sum(i["for_peers"] for i in stats_b) == on_b, f"b sent back what it ran for a: {stats_b}")
check(sum(i["to_peers"] for i in stats_a) == on_b and sum(i["peer_dropped"] for i in stats_a) == 0,
      f"a sent b exactly those: {stats_a}")
check(sum(i["packets"] for i in stats_a) == len(left) - on_b,
      f"a's chain ran the rest (and {len(left) - len(out)} frames of the kernel's), metered there: {stats_a}")
# Billed where the chain ran, bytes too: as they entered it (before tally's tail).
ran_bytes = {"a": sum(len(fr) - TAIL for fr in left) - on_b * len(trace[0]), "b": on_b * len(trace[0])}
for name, stats in (("a", stats_a), ("b", stats_b)):
    check(sum(i["bytes"] for i in stats) == ran_bytes[name],
          f"{name} bills the {ran_bytes[name]} bytes of the packets its chain ran: {stats}")
check(vxlan_a["ok"] == 2 * on_b, f"a encapsulated {on_b} and decapsulated {on_b}: {vxlan_a}")
# The underlay also carries the kernels' own traffic (the peer protocol's
# TCP): dropped as not VXLAN, never as refused VXLAN.
check(dispatch_a["tunnel_dropped"] == 0 and dispatch_a["unknown_peer"] == 0, f"a's dispatch: {dispatch_a}")
print(f"OK: scale-out answered in {scaled['ms']:.1f} ms, a's global/read table copied; "
      f"{first_remote_ms:.1f} ms from the command to the first packet on b (sent after the reply); {len(out)} packets; "
      f"b served {len(served_by_b)} of {len(NEW)} new flows ({on_b} packets), "
      f"no old or late flow; every flow stayed whole on one host, and came back to a when b died")
for host in (a, b):
    host.cleanup()
