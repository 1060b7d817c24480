"""The chain's flow table in a running host: a noop that counts packets per
flow in it gets one entry per flow of the capture (both directions of a flow
share one), and the host's sweep removes them once they are idle past the
chain's flow_idle_s.  Read from the host's stats (`chains.<c>.flows`)."""

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
