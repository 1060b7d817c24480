"""Packets in = packets out + counted drops, with malformed traffic and NF drops."""
from harness import Host, check, total_drops

host = Host()
summary = host.pktgen("--packets", "6000", "--flows", "300", "--malformed-ratio", "0.05", "--seed", "11")
# steer by protocol: TCP -> port 0 (kept), UDP -> port 1 (kept), other -> port 2 (dropped).
host.chain("c", '''name = "c"
egress = "pcap0"
[[nf]]
name = "sel"
plugin = "steer"
config = { by = "proto" }
[[nf]]
name = "keep"
plugin = "trace"
[[distribute]]
from = "sel"
to = ["keep", "keep", "drop"]
''')
host.config(host.pcap_port() + '\n[[gateway.rule]]\nname = "all"\nchain = "c"\n')
host.run("--idle-exit", "1")
stats = host.stats()
out = host.output()
rx = stats["ports"][0]["rx"]
tx = stats["ports"][0]["tx"]
check(rx == summary["packets"], f"received {rx} of {summary['packets']} packets")
check(tx == len(out), f"port counted {tx} transmitted, output pcap has {len(out)}")
check(rx == tx + total_drops(stats), f"rx {rx} != tx {tx} + drops {total_drops(stats)}: {stats}")
check(stats["dispatch"]["malformed_dropped"] == summary["malformed"],
      f"malformed dropped {stats['dispatch']['malformed_dropped']}, generated {summary['malformed']}")
icmp = summary["packets_by_class"]["icmp"] + summary["packets_by_class"]["icmp6"]
check(stats["instances"][0]["dropped"] > 0, "the chain dropped nothing; ICMP should be dropped")
check(stats["instances"][0]["dropped"] <= icmp, "the chain dropped more than the ICMP packets")
print(f"ok: rx={rx} tx={tx} drops={total_drops(stats)}")
host.cleanup()
