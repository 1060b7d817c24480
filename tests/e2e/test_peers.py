"""Two hosts in two network namespaces, joined by a veth pair (their
underlay, net_af_packet on each end), find each other over the peer
protocol: TLS 1.3 with certificates from one CA, each naming its host id.
Each sees the other up with the underlay address and MAC it announced.  A
third host whose certificate another CA signed is refused.  A peer cut off
by a partition is marked down once it has been silent past dead_after_ms,
and up again when the link returns; one killed with SIGKILL is down at
once (its connections close)."""

import json
import signal
import time

from harness import Host, Netns, check, fail, make_pki, peer_section

ns_a, ns_b = Netns("peer-a"), Netns("peer-b")
ns_a.link(ns_b, "pa", "pb", "10.99.0.1/24", "10.99.0.2/24")
# The rogue host shares b's namespace, with an address of its own.
ns_b.run("ip", "addr", "add", "10.99.0.3/24", "dev", "pb")

a, b, rogue = Host(plugins=("noop",)), Host(plugins=("noop",)), Host(plugins=("noop",))
ca, certs = make_pki(a.path("pki"), [a.prefix, b.prefix], rogue_ids=[rogue.prefix])


def configure(host, address, underlay_device, peer_host, peer_address, extra=""):
    host.chain("c", 'name = "c"\n[[nf]]\nname = "n"\nplugin = "noop"\n')
    host.config(f'[[port]]\nname = "underlay"\ndevice = "{underlay_device}"\n' +
                peer_section(host, (ca, certs), address, peer_host, peer_address) + extra, eal=host.eal("0"))


# a's metrics endpoint, on its namespace's own loopback.
configure(a, "10.99.0.1", "net_af_packet0,iface=pa,framecnt=4096", b, "10.99.0.2",
          extra='\n[metrics]\nlisten = "127.0.0.1:9650"\n')
configure(b, "10.99.0.2", "net_af_packet0,iface=pb,framecnt=4096", a, "10.99.0.1")
# The rogue host knows a's address and trusts the right CA, but its own
# certificate comes from a CA a does not trust.
configure(rogue, "10.99.0.3", "net_null0", a, "10.99.0.1")

proc_a = a.start(ns=ns_a, log_level="warn")
proc_b = b.start(ns=ns_b, log_level="warn")


def peers(host):
    out = host.ctl("peers", "--json")
    check(out.returncode == 0, f"serpensctl peers: {out.stdout}{out.stderr}")
    return json.loads(out.stdout)


def wait_for(what, condition, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    fail(f"{what} within {timeout} s")


def metric(name, labels=""):
    """A sample of a's Prometheus endpoint, scraped inside its namespace."""
    text = ns_a.run("python3", "-c", "import urllib.request; print(urllib.request.urlopen("
                    "'http://127.0.0.1:9650/metrics', timeout=10).read().decode())",
                    capture_output=True, text=True).stdout
    for line in text.splitlines():
        if line.startswith(name + labels + " "):
            return float(line.split()[-1])
    fail(f"a's metrics have no {name}{labels}:\n{text}")


def peer_entry(host, peer_id):
    listed = [p for p in peers(host)["peers"] if p["id"] == peer_id]
    return listed[0] if listed else None


seen_by_a = wait_for("a sees b up", lambda: (e := peer_entry(a, b.prefix)) and e["up"] and e)
seen_by_b = wait_for("b sees a up", lambda: (e := peer_entry(b, a.prefix)) and e["up"] and e)
check(seen_by_a["underlay"] == "10.99.0.2", f"b announces its underlay address: {seen_by_a}")
check(seen_by_a["underlay_mac"] == ns_b.mac("pb"), f"b announces its veth's MAC {ns_b.mac('pb')}: {seen_by_a}")
check(seen_by_b["underlay_mac"] == ns_a.mac("pa"), f"a announces its veth's MAC: {seen_by_b}")
check(seen_by_a["vxlan_port"] == 4789, f"the default VXLAN port: {seen_by_a}")
check(metric("serpens_peer_up", f'{{peer="{b.prefix}"}}') == 1, "a's metrics say b is up")
human = a.ctl("peers")
check(human.returncode == 0 and b.prefix in human.stdout and " up " in human.stdout,
      f"serpensctl peers as a table: {human.stdout}{human.stderr}")

# The rogue host dials a and is refused: a counts it, and never lists it.
refused_before = peers(a)["counters"]["sessions_refused"]
proc_rogue = rogue.start(ns=ns_b, log_level="warn")
wait_for("a refuses the rogue host's certificate",
         lambda: peers(a)["counters"]["sessions_refused"] > refused_before)
check(all(p["id"] != rogue.prefix for p in peers(a)["peers"]), "a does not list the rogue host")
check(not peer_entry(rogue, a.prefix)["up"], "the rogue host never sees a up")
check(peer_entry(a, b.prefix)["up"], "b stays up meanwhile")
check(metric("serpens_peer_sessions_refused_total") >= 1, "a's metrics count the refusal")
proc_rogue.send_signal(signal.SIGTERM)
proc_rogue.wait(timeout=30)

# A partition: the underlay goes down under an open connection, so nothing
# closes it; a marks b down once b has been silent past dead_after_ms (1 s),
# and up again after the link returns and they meet anew.
sessions = peer_entry(a, b.prefix)["sessions"]
ns_b.run("ip", "link", "set", "pb", "down")
cut_at = time.monotonic()
wait_for("a marks a partitioned b down", lambda: not peer_entry(a, b.prefix)["up"], timeout=15)
silent_s = time.monotonic() - cut_at
check(metric("serpens_peer_up", f'{{peer="{b.prefix}"}}') == 0, "a's metrics say b is down")
check(silent_s >= 0.8, f"b was marked down {silent_s:.2f} s after the cut, before dead_after_ms (1 s) passed")
ns_b.run("ip", "link", "set", "pb", "up")
wait_for("b up again after the partition", lambda: (e := peer_entry(a, b.prefix))["up"] and e["sessions"] > sessions,
         timeout=30)

# b dies: its connections close with it, and a marks it down at once.
proc_b.kill()
proc_b.wait(timeout=30)
wait_for("a marks a killed b down", lambda: not peer_entry(a, b.prefix)["up"], timeout=15)
print(f"ok: peers up both ways, rogue refused, partition noticed after {silent_s:.1f} s, killed b down")

proc_a.send_signal(signal.SIGTERM)
out, _ = proc_a.communicate(timeout=30)
check(proc_a.returncode == 0, f"a exited {proc_a.returncode}:\n{out}")
for host in (a, b, rogue):
    host.cleanup()
