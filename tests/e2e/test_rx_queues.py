"""Every lcore receives: a port with two RX queues (net_pcap, one capture per
queue, each flow in one of them as RSS would put it) and instances on two
lcores.  Both lcores receive; a flow owned by the other lcore's instance
crosses to it through its ring; every packet leaves, each flow on one
instance and in its original order."""
import zlib
from collections import defaultdict

from harness import Host, by_flow, check, flow_of

host = Host()
host.pktgen("--packets", "8000", "--flows", "600", "--malformed-ratio", "0", "--seed", "5",
            "--mix", "tcp=50,udp=40,icmp=10")
frames = host.input()
# One capture per queue, split by flow like a NIC's symmetric RSS would.
queues = ([], [])
for frame in frames:
    queues[zlib.crc32(repr(flow_of(frame)).encode()) % 2].append(frame)
check(all(len(q) > 1000 for q in queues), f"queues of {[len(q) for q in queues]} packets")
host.config(host.traced_queues(queues) +
            '\n[[gateway.rule]]\nname = "all"\nchain = "c"\n'
            '\n[[instance]]\nchain = "c"\ncount = 2\nlcores = [0, 1]\n')
host.run("--idle-exit", "1")

stats = host.stats()
by_lcore = {l["id"]: l for l in stats["lcores"]}
for lcore, queue in ((0, 0), (1, 1)):
    check(by_lcore[lcore]["rx_queues"] == [{"port": "pcap0", "queue": queue}],
          f"lcore {lcore} receives queue {queue}: {by_lcore[lcore]}")
    check(by_lcore[lcore]["rx"] == len(queues[queue]),
          f"lcore {lcore} received {by_lcore[lcore]['rx']} of queue {queue}'s {len(queues[queue])}")

instances_of = defaultdict(set)
outputs = host.output()
check(len(outputs) == len(frames), f"{len(outputs)} packets out of {len(frames)}")
for frame in outputs:
    tag = frame[-1]
    check(tag in (0xC0, 0xC1), f"trailer {tag:#x} is not an instance tag")
    instances_of[flow_of(frame[:-1])].add(tag - 0xC0)
sent = by_flow(frames)
received = by_flow(frame[:-1] for frame in outputs)
split = [f for f, s in instances_of.items() if len(s) > 1]
check(not split, f"{len(split)} flows ran on more than one instance")
reordered = [f for f in sent if received[f] != sent[f]]
check(not reordered, f"{len(reordered)} of {len(sent)} flows left out of order or incomplete")
# Flows cross lcores both ways: each queue has flows of both instances.
crossing = [sum(1 for f in {flow_of(fr) for fr in q} if instances_of[f] == {1 - n}) for n, q in enumerate(queues)]
check(all(c > 0 for c in crossing), f"flows received on one lcore and run on the other: {crossing}")
check(sum(i["packets"] for i in stats["instances"]) == len(frames), "metered packets add up")
print(f"ok: {len(sent)} flows, queues {[len(q) for q in queues]}, crossing flows per queue {crossing}")
host.cleanup()
