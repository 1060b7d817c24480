"""Several instances of one chain: the router keeps both directions of every
flow on one instance (symmetric flow hash), and the instances share the load."""
from collections import defaultdict

from harness import Host, check, flow_of

host = Host()
host.pktgen("--packets", "6000", "--flows", "500", "--malformed-ratio", "0", "--seed", "21",
            "--mix", "tcp=50,udp=40,icmp=10")
host.chain("c", 'name = "c"\negress = "pcap0"\n[[nf]]\nname = "t"\nplugin = "trace"\n'
                'config = { by_instance = true }\n')
host.config(host.pcap_port() + '\n[[gateway.rule]]\nname = "all"\nchain = "c"\n'
            '\n[[instance]]\nchain = "c"\ncount = 3\nlcores = [0, 1, 1]\n')
host.run("--idle-exit", "1")


instances_of = defaultdict(set)
per_instance = defaultdict(int)
outputs = host.output()
check(len(outputs) == 6000, f"{len(outputs)} packets out of 6000")
for frame in outputs:
    tag = frame[-1]
    check(0xC0 <= tag <= 0xC2, f"trailer {tag:#x} is not an instance tag")
    instances_of[flow_of(frame[:-1])].add(tag - 0xC0)
    per_instance[tag - 0xC0] += 1
split = [f for f, s in instances_of.items() if len(s) > 1]
check(not split, f"{len(split)} flows ran on more than one instance, e.g. {split[:3]}")
check(len(per_instance) == 3, f"only instances {sorted(per_instance)} saw traffic")
stats = host.stats()
check(sorted(i["lcore"] for i in stats["instances"] if i["state"] == "active") == [0, 1, 1], "placement as configured")
check(sum(i["packets"] for i in stats["instances"]) == 6000, "metered packets add up")
print(f"ok: {len(instances_of)} flows, packets per instance {dict(per_instance)}")
host.cleanup()
