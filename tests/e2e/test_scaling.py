"""Scaling under traffic: FW -> MON -> NAT scaled 1 -> 2 -> 3 -> 1 -> 0 -> 1 by serpensctl while packets flow.

The traffic is a looping trace: thousands of TCP, UDP and ICMP echo flows from
inside, every flow sending one packet per round, each packet carrying its flow
number and sequence number as its last 8 bytes.  It is fed to the host through
a FIFO as the host reads it, so the scale events land while packets are in
the host's rings and in its NFs' hands: event k is sent once k/(events+1) of
the trace has been written.  Afterwards:
 - every packet leaves the host (the fw allows all, nothing may be dropped);
 - each flow's packets leave in their original order;
 - each flow keeps one NAT mapping through every event, and no external
   (address, port, protocol) serves two flows;
 - mon's per-flow counts, read from the state it left in shared memory, equal
   the packets each flow sent;
 - the chain's metered packets equal the packets it received.
Run twice: one RX queue (one lcore receives, instances on both lcores), and two
RX queues with instances on two lcores that both receive.
"""
import ipaddress
import json
import os
import stat
import struct
import subprocess
import time

from harness import CTL, HOST, Feeder, Host, STATE_TOOL, check, csum, fail, read_pcap, total_drops

FLOWS = 3000
ROUNDS = 40
EXTERNAL = [ipaddress.ip_address("203.0.113.1") + i for i in range(4)]
PORT_LO, PORT_HI = 20000, 29999
CHAIN = f'''name = "sfc"
egress = "pcap0"
chain = ["fw", "mon", "nat"]
[[nf]]
name = "fw"
plugin = "fw"
[nf.config]
rules = "../fw.rules"
stateful = true
cache_size = 16384
[[nf]]
name = "mon"
plugin = "mon"
[nf.config]
max_hosts = 16384
[[nf]]
name = "nat"
plugin = "nat"
[nf.config]
inside = "198.18.0.0/16"
external = "{EXTERNAL[0]}-{EXTERNAL[-1]}"
ports = [{PORT_LO}, {PORT_HI}]
max_mappings = 16384
'''


def flow_tuple(f):
    """(proto, src, dst, sport, dport) of flow number f: inside -> outside."""
    proto = (6, 17, 1)[f % 3 if f % 7 else 2]  # about 40% TCP, 40% UDP, 20% ICMP echo
    src = ipaddress.ip_address("198.18.0.0") + 1 + f
    dst = ipaddress.ip_address("198.51.100.0") + 1 + f % 200
    sport = 1024 + f
    dport = (80, 53, 0)[(6, 17, 1).index(proto)]
    return proto, src, dst, sport, dport


def frame(f, seq):
    proto, src, dst, sport, dport = flow_tuple(f)
    marker = struct.pack("!II", f, seq)
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x18, 8192, 0, 0) + marker
    elif proto == 17:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(marker), 0) + marker
    else:
        l4 = struct.pack("!BBHHH", 8, 0, 0, sport, seq & 0xFFFF) + marker
        l4 = l4[:2] + struct.pack("!H", csum(l4)) + l4[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), seq & 0xFFFF, 0x4000, 64, proto, 0, src.packed,
                     dst.packed)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00" + ip + l4


def scale(host, n):
    out = subprocess.run([CTL, "-s", host.path("ctl.sock"), "scale", "sfc", str(n), "--json"], capture_output=True, text=True,
                         timeout=30)
    if out.returncode != 0:
        fail(f"serpensctl scale sfc {n}: {out.stdout}{out.stderr}")
    reply = json.loads(out.stdout)
    check(reply["after"] == n, f"scale to {n}: the host reports {reply['after']} instance(s): {reply}")
    return reply


def run(queues, start, lcores, events):
    host = Host(plugins=())
    host.add_built_plugins("fw", "mon", "nat")
    with open(host.path("fw.rules"), "w") as f:
        f.write("default allow\n")
    host.chain("sfc", CHAIN)
    # Flows are split over the queues by number, as RSS splits them by hash:
    # each flow arrives on one queue.
    trace = [[] for _ in range(queues)]
    for seq in range(ROUNDS):
        for f in range(FLOWS):
            trace[f % queues].append(frame(f, seq))
    fifos = [host.path(f"in{q}.fifo") for q in range(queues)]
    for path in fifos:
        os.mkfifo(path, stat.S_IRUSR | stat.S_IWUSR)
    rx = ",".join(f"rx_pcap={p}" for p in fifos)
    host.config(f'[[port]]\nname = "pcap0"\ndevice = "net_pcap0,{rx},tx_pcap={host.path("out.pcap")}"\n'
                f'\n[[gateway.rule]]\nname = "all"\nchain = "sfc"\n'
                f'\n[[instance]]\nchain = "sfc"\ncount = {start}\nlcores = {lcores}\n'
                '\n[instances]\nring_size = 16384\npool = 1\n')
    feeders = [Feeder(path, frames) for path, frames in zip(fifos, trace)]
    for feeder in feeders:
        feeder.start()
    proc = subprocess.Popen([HOST, "-c", host.path("host.toml"), "--log-level", "info", "--stats-json",
                             host.path("stats.json"), "--idle-exit", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    total = sum(len(t) for t in trace)
    try:
        for deadline in range(300):
            if os.path.exists(host.path("ctl.sock")):
                break
            time.sleep(0.1)
        for bad, why in ((["scale", "sfc", "17"], "outside 0..16"), (["scale", "nope", "1"], "no chain 'nope'"),
                         (["scale", "sfc", "+1", "-l", "63"], "lcore 63 is not enabled")):
            out = subprocess.run([CTL, "-s", host.path("ctl.sock")] + bad, capture_output=True, text=True, timeout=30)
            check(out.returncode == 1 and why in out.stderr, f"serpensctl {' '.join(bad)}: {out.stdout}{out.stderr}")
        replies = []
        for k, n in enumerate(events, start=1):
            while sum(f.written for f in feeders) < total * k // (len(events) + 1):
                check(proc.poll() is None, "serpens-host stopped before the trace was fed")
                time.sleep(0.002)
            replies.append(scale(host, n))
        for feeder in feeders:
            feeder.join(timeout=120)
            check(feeder.error is None, f"feeding the trace: {feeder.error}")
        log, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    check(proc.returncode == 0, f"serpens-host exited {proc.returncode}:\n{log}")
    written = sum(f.written for f in feeders) - queues  # minus the file headers
    check(written == total, f"fed {written} of {total} packets")

    stats = host.stats()
    out = read_pcap(host.path("out.pcap"))
    check(total_drops(stats) == 0, f"the host dropped packets: {json.dumps(stats['dispatch'])} "
          f"{[(p['name'], p['tx_ring_dropped']) for p in stats['ports']]} "
          f"{[(i['index'], i['dropped'], i['tx_dropped']) for i in stats['instances']]}")
    check(len(out) == total, f"{total} packets in, {len(out)} out")

    # Order and NAT mappings, from the marker each packet carries.
    next_seq = [0] * FLOWS
    mapping = {}
    for fr in out:
        ip = fr[14:]
        end = struct.unpack("!H", ip[2:4])[0]
        f, seq = struct.unpack("!II", ip[end - 8:end])
        check(f < FLOWS, f"a packet with flow number {f} left the host")
        if seq != next_seq[f]:
            fail(f"flow {f}: packet {seq} left after packet {next_seq[f] - 1}: out of order or lost")
        next_seq[f] += 1
        proto = ip[9]
        l4 = ip[20:]
        ext = (ip[12:16], struct.unpack("!H", l4[4:6] if proto == 1 else l4[0:2])[0], proto)
        if mapping.setdefault(f, ext) != ext:
            fail(f"flow {f}: NAT mapping changed from {mapping[f]} to {ext}")
    check(all(n == ROUNDS for n in next_seq), "a flow lost packets")
    check(len(set(mapping.values())) == FLOWS, "two flows share one external (address, port, protocol)")
    for addr, port, proto in mapping.values():
        check(ipaddress.ip_address(addr) in EXTERNAL and PORT_LO <= port <= PORT_HI,
              f"mapping {ipaddress.ip_address(addr)}:{port} is outside the NAT pool")

    # mon's counts, per flow, from the state it left behind.
    # (Word 0 of mon's area in the chain's flow table: the flow's packets.)
    dump = subprocess.run([STATE_TOOL, "--root", host.state, "flows", "sfc", "--json"],
                          capture_output=True, text=True, check=True).stdout
    counted = {}
    for e in json.loads(dump)["entries"]:
        if e["areas"]["mon"][0] == 0:
            continue  # a flow mon never saw
        a, b = ipaddress.ip_address(e["addr_a"]), ipaddress.ip_address(e["addr_b"])
        counted[(a, b) if a < b else (b, a)] = e["areas"]["mon"][0]
    check(len(counted) == FLOWS, f"mon counted {len(counted)} flows, {FLOWS} were sent")
    for f in range(FLOWS):
        _, src, dst, _, _ = flow_tuple(f)
        got = counted.get((src, dst) if src < dst else (dst, src))
        check(got == ROUNDS, f"flow {f}: mon counted {got} packets, it sent {ROUNDS}")

    chain = stats["chains"]["sfc"]
    check(chain["metered_packets"] == total, f"metered {chain['metered_packets']} packets, the chain got {total}")
    check(stats["rules"]["all"] == total, f"the gateway matched {stats['rules']['all']} of {total}")
    pauses = [r["pause_us"] for r in replies if r["moved_buckets"] > 0]
    print(f"{queues} queue(s): {total} packets, events {events}, pauses (us) {pauses}, "
          f"pool starts {chain['pool_starts']}, wakeups {chain['wakeups']}")
    host.cleanup()


run(queues=1, start=1, lcores="[1, 0]", events=[2, 3, 1, 0, 1])
run(queues=2, start=2, lcores="[0, 1]", events=[3, 1, 0, 2])
print("scaling under traffic: OK")
