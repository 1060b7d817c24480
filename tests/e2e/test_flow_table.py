"""The chain's flow table in a running host: a noop that counts packets per
flow in it gets one entry per flow of the capture (both directions of a flow
share one), and the host's sweep removes them once they are idle past the
chain's flow_idle_s.  A table too small for the capture refuses new flows:
their packets are dropped before the chain (flow_full = "drop", the
default) or run through it without an entry ("pass").  Read from the host's
stats (`chains.<c>.flows`)."""

from harness import Host, check, flow_of


host = Host(plugins=())
host.add_built_plugins("noop")
host.pktgen("--packets", "3000", "--flows", "300", "--malformed-ratio", "0", "--vlan-ratio", "0", "--mix",
            "tcp=50,udp=50", "--seed", "5")
frames = host.input()
flows = {flow_of(f) for f in frames}
check(None not in flows and len(flows) > 100, f"a capture of TCP/UDP flows: {len(flows)}")
host.chain("c", 'name = "c"\negress = "pcap0"\n[[nf]]\nname = "count"\nplugin = "noop"\n'
           '[nf.config]\nflow_state = "count"\n')
host.config(host.pcap_port() + '\n[[gateway.rule]]\nname = "all"\nchain = "c"\n'
            '\n[[instance]]\nchain = "c"\ncount = 1\nflow_idle_s = 1\n')
# Idle for 4 s after the capture: every flow is past its 1 s (at most about
# 2.2 s in the table's units) and a sweep pass takes half of that.
host.run("--idle-exit", "4")
chain = host.stats()["chains"]["c"]
check("flows" in chain, f"the chain reports its flow table: {chain}")
table = chain["flows"]
check(table["created"] == len(flows), f"one entry per flow, both directions in one: {len(flows)} flows, {table}")
check(table["expired"] == len(flows) and table["live"] == 0, f"every idle flow expired: {table}")
check(table["refused_full"] == 0 and table["capacity"] >= 65536, f"the default capacity held them: {table}")
check(len(host.output()) == len(frames), f"{len(frames)} packets in, {len(host.output())} out")
print(f"ok: {len(flows)} flows, {table}")
host.cleanup()


def full_table(policy):
    """5000 flows into a table of 3584 (capacity 16: 14 flows in each of 256 parts)."""
    small = Host(plugins=())
    small.add_built_plugins("noop")
    small.pktgen("--packets", "6000", "--flows", "5000", "--malformed-ratio", "0", "--vlan-ratio", "0", "--mix",
                 "tcp=50,udp=50", "--seed", "6")
    small.chain("c", 'name = "c"\negress = "pcap0"\n[[nf]]\nname = "count"\nplugin = "noop"\n'
                '[nf.config]\nflow_state = "count"\n')
    small.config(small.pcap_port() + '\n[[gateway.rule]]\nname = "all"\nchain = "c"\n'
                 f'\n[[instance]]\nchain = "c"\ncount = 1\nflow_capacity = 16\n{policy}')
    small.run("--idle-exit", "1")
    stats = small.stats()
    sent, out = len(small.input()), len(small.output())
    refused = stats["chains"]["c"]["flows"]["refused_full"]
    check(refused > 0, f"the table refused flows: {stats['chains']['c']}")
    seen = sum(nf["packets"] for inst in stats["instances"] for nf in inst["nfs"])
    dropped = sum(inst["dropped"] for inst in stats["instances"])
    small.cleanup()
    return sent, out, refused, seen, dropped


sent, out, refused, seen, dropped = full_table("")
check(out == sent - refused and dropped == refused and seen == out,
      f"drop: the {refused} refused packets were dropped before the NF: {sent} in, {out} out, NF saw {seen}, "
      f"{dropped} dropped")
print(f"ok: a full table refused {refused} of {sent} packets, dropped before the chain")
sent, out, refused, seen, dropped = full_table('flow_full = "pass"\n')
check(out == sent and seen == sent and dropped == 0,
      f"pass: the {refused} refused packets ran through the chain: {sent} in, {out} out, NF saw {seen}")
print(f"ok: with flow_full = \"pass\" the {refused} refused packets ran through the chain without an entry")
