"""RSS buckets (bucket_hash = "rss"): the router's bucket of a flow is the
low byte of the symmetric Toeplitz hash a NIC computes with the host's key,
so a NIC's redirection table can send each bucket to the lcore whose
instance owns it.

The NIC is played by this test: it hashes every frame with its own Toeplitz
(written from Microsoft's RSS definition, not from the host's code) and puts
it on RX queue bucket mod 2, one capture per queue.  With an instance on
each receiving lcore (listed in the other order), every flow must then run
on the instance of the lcore that received it (none crosses to the other
lcore), in order, each flow on one instance.  A net_null port with RSS
shows the redirection table the host wrote, as the device reads it back.
Then the same again through scale events (2 -> 1 -> 2 while the queues are
fed): buckets stay with instances on the lcore that receives them."""
import struct
from collections import defaultdict

from harness import Feeder, Host, addresses_of, by_flow, check, decode, flow_of, wait_until

KEY = bytes([0x6D, 0x5A] * 20)  # the host's key: 0x6d5a repeated, 40 bytes


def toeplitz(data):
    """Microsoft RSS: for every set input bit i (most significant first),
    XOR in the 32 key bits from bit i."""
    key = int.from_bytes(KEY, "big")
    key_bits = len(KEY) * 8
    result = 0
    for i in range(len(data) * 8):
        if data[i // 8] >> (7 - i % 8) & 1:
            result ^= (key >> (key_bits - 32 - i)) & 0xFFFFFFFF
    return result


def nic_input(frame):
    """What a NIC with RSS on IP, TCP and UDP hashes: source and destination
    address, then the ports for TCP and UDP (not for fragments)."""
    d = decode(frame)
    if d is None:
        return None
    version, proto, sport, dport = d
    addresses = b"".join(addresses_of(frame, version))
    if proto in (6, 17):  # decode() gives fragments ports 0: no bits, as if left out
        return addresses + struct.pack("!HH", sport, dport)
    return addresses


host = Host()
host.pktgen("--packets", "6000", "--flows", "500", "--malformed-ratio", "0", "--seed", "9",
            "--mix", "tcp=40,udp=30,icmp=10,tcp6=10,udp6=5,icmp6=5")
frames = host.input()
queues = ([], [])
queue_of_flow = {}
for frame in frames:
    data = nic_input(frame)
    check(data is not None, "pktgen wrote a frame the test cannot decode")
    q = (toeplitz(data) & 0xFF) % 2
    flow = flow_of(frame)
    check(queue_of_flow.setdefault(flow, q) == q, f"flow {flow} hashed to both queues: the key is not symmetric")
    queues[q].append(frame)
check(all(len(q) > 1500 for q in queues), f"queues of {[len(q) for q in queues]} packets")
host.config(host.traced_queues(queues) +
            '\n[[port]]\nname = "nic"\ndevice = "net_null0,no-rx=1"\n'
            '\n[[gateway.rule]]\nname = "all"\nchain = "c"\n'
            '\n[instances]\nring_size = 16384\nbucket_hash = "rss"\n'
            '\n[[instance]]\nchain = "c"\ncount = 2\nlcores = [1, 0]\n')
host.run("--idle-exit", "1")
stats = host.stats()

# The device with RSS (net_null) got a table whose entry i sends the
# buckets i, i + 128 to queue i mod 2, read back from the device; net_pcap
# has no table.
ports = {p["name"]: p for p in stats["ports"]}
table = ports["nic"].get("rss_table")
check(table is not None and len(table) == 128, f"nic's RSS table: {table}")
check(table == [i % 2 for i in range(128)], f"nic's RSS table does not follow the buckets: {table}")
check("rss_table" not in ports["pcap0"], "net_pcap has no RSS table to write")

outputs = host.output()
check(len(outputs) == len(frames), f"{len(outputs)} packets out of {len(frames)}")
instances_of = defaultdict(set)
for frame in outputs:
    tag = frame[-1]
    check(tag in (0xC0, 0xC1), f"trailer {tag:#x} is not an instance tag")
    instances_of[flow_of(frame[:-1])].add(tag - 0xC0)
split = [f for f, s in instances_of.items() if len(s) > 1]
check(not split, f"{len(split)} flows ran on more than one instance")
sent = by_flow(frames)
received = by_flow(frame[:-1] for frame in outputs)
reordered = [f for f in sent if received[f] != sent[f]]
check(not reordered, f"{len(reordered)} of {len(sent)} flows left out of order or incomplete")
# Instance i runs on lcore 1 - i, which receives queue 1 - i: dealt by
# instance order alone, every flow would cross; dealt by where its bucket
# arrives, none does.
crossing = [f for f, q in queue_of_flow.items() if instances_of[f] != {1 - q}]
check(not crossing, f"{len(crossing)} of {len(queue_of_flow)} flows ran on the other lcore's instance")
by_lcore = {l["id"]: l for l in stats["lcores"]}
for lcore in (0, 1):
    check(by_lcore[lcore]["rx"] == len(queues[lcore]),
          f"lcore {lcore} received {by_lcore[lcore]['rx']} of queue {lcore}'s {len(queues[lcore])}")
print(f"ok: {len(queue_of_flow)} flows, queues {[len(q) for q in queues]}, none crossing; nic's table {table[:8]}...")
host.cleanup()

# Scale events keep buckets on their receiving lcore.  The same queues, fed
# through FIFOs at a pace: once a sixth is in, 2 -> 1 (instance 1, on lcore
# 0, leaves: instance 0 on lcore 1 owns every bucket) and back to 2 with the
# new instance on lcore 0.  The newcomer must take exactly lcore 0's
# buckets: no packet fed after the events crosses.  (Dealt blind, it would
# take half of each lcore's.)  net_pcap blocks on an empty FIFO, so the
# feeders never stop: what counts is what they had written when the last
# event returned.
host = Host()
port = host.traced_queues(queues, fifos=True)
host.config(port + '\n[[gateway.rule]]\nname = "all"\nchain = "c"\n'
            '\n[instances]\nring_size = 16384\nbucket_hash = "rss"\n'
            '\n[[instance]]\nchain = "c"\ncount = 2\nlcores = [1, 0]\n')
feeders = [Feeder(host.path(f"q{q}.fifo"), queues[q], per_ms=1) for q in range(2)]
for feeder in feeders:
    feeder.start()
proc = host.start("--idle-exit", "2")
wait_until("a sixth fed", lambda: all(f.written > len(q) // 6 for f, q in zip(feeders, queues)), alive=[proc])
for args in (["scale", "c", "1"], ["scale", "c", "+1", "-l", "0"]):
    out = host.ctl(*args, "--json")
    check(out.returncode == 0, f"serpensctl {' '.join(args)}: {out.stdout}{out.stderr}")
fed_before = [f.written for f in feeders]  # the pcap header counts as one
check(all(n < len(q) - 200 for n, q in zip(fed_before, queues)), f"the events came too late: fed {fed_before}")
for feeder in feeders:
    feeder.join(timeout=60)
    check(feeder.error is None, f"feeding: {feeder.error}")
log, _ = proc.communicate(timeout=60)
check(proc.returncode == 0, f"serpens-host exited {proc.returncode}:\n{log}")

outputs = host.output()
check(len(outputs) == len(frames), f"{len(outputs)} packets out of {len(frames)} across the scale events")
tags = defaultdict(list)  # flow -> instance of each of its packets, in order
for frame in outputs:
    tags[flow_of(frame[:-1])].append(frame[-1] - 0xC0)
check(by_flow(frame[:-1] for frame in outputs) == by_flow(frames), "flows left out of order or incomplete")
# Lcore q receives queue q; the newcomer's index is whatever the pool gave.
lcore_of = {i["index"]: i["lcore"] for i in host.stats()["instances"] if i["chain"] == "c" and i["lcore"] is not None}
check(sorted(lcore_of.values()) == [0, 1], f"instances after the events: {lcore_of}")
crossing = set()
for q, qframes in enumerate(queues):
    before = defaultdict(int)  # each flow's packets fed before the events (the header was the first write)
    for frame in qframes[:fed_before[q] - 1]:
        before[flow_of(frame)] += 1
    for flow in {flow_of(frame) for frame in qframes}:
        if any(lcore_of.get(tag) != q for tag in tags[flow][before[flow]:]):
            crossing.add(flow)
check(not crossing, f"after the scale events {len(crossing)} of {len(tags)} flows ran on the other lcore's instance")
print(f"ok: after 2 -> 1 -> 2 (fed {fed_before} before), every flow runs on its receiving lcore")
host.cleanup()
