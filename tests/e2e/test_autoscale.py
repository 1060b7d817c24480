"""The autoscaler: a chain under load scales out, then back in once the load
is gone, without flapping, and every decision is counted and logged.

The load is synthetic: a noop that spins 40 us per packet, fed at a paced
rate through a veth (net_af_packet in a namespace of the test's own), which
keeps one lcore busy well above the target of 0.3.  [[autoscale.chain]]
allows 1..2 instances.  While the traffic lasts the chain must go to 2; after
it, back to 1; exactly one decision each way.  No packet is lost.
"""
import re
import time

from harness import Host, Netns, check, read_pcap, write_pcap


ns = Netns("auto")
ns.veth("asa", "asb")

host = Host(plugins=())
host.add_built_plugins("noop")
# About 3 s of traffic at the sender's pace (32 frames per 2 ms).
host.pktgen("--packets", "24000", "--flows", "400", "--malformed-ratio", "0", "--seed", "3", "--mix", "tcp=50,udp=50",
            "--vlan-ratio", "0")
frames = host.input()
write_pcap(host.path("empty.pcap"), [])
host.chain("c", 'name = "c"\negress = "out"\n[[nf]]\nname = "spin"\nplugin = "noop"\n[nf.config]\nspin_ns = 40000\n')
host.config('[[port]]\nname = "in"\ndevice = "net_af_packet0,iface=asa,framecnt=8192"\n'
            f'\n[[port]]\nname = "out"\ndevice = "net_pcap0,rx_pcap={host.path("empty.pcap")},'
            f'tx_pcap={host.path("out.pcap")}"\n'
            '\n[[gateway.rule]]\nname = "in"\nin_port = "in"\nchain = "c"\n'
            '\n[[instance]]\nchain = "c"\ncount = 1\nlcores = [1, 0]\n'
            '\n[autoscale]\ninterval_ms = 100\nscale_out_ms = 300\nscale_in_ms = 1000\n'
            '[[autoscale.chain]]\nchain = "c"\nmin = 1\nmax = 2\ntarget_busy = 0.3\n')
proc = host.start("--idle-exit", "4", ns=ns)

sent = ns.send_pcap("asb", host.path("in.pcap"))
check(sent.returncode == 0, f"sending failed: {sent.stderr}")
under_load = host.chain_stats("c")
check(under_load["autoscale_out"] == 1 and under_load["instances"] == 2,
      f"the chain scaled out to 2 under load: {under_load}")
end = time.monotonic() + 6
while time.monotonic() < end and host.chain_stats("c")["instances"] != 1:
    time.sleep(0.1)
log, _ = proc.communicate(timeout=60)
check(proc.returncode == 0, f"host exited {proc.returncode}:\n{log}")

chain = host.stats()["chains"]["c"]
check(chain["autoscale_out"] == 1 and chain["autoscale_in"] == 1 and chain["instances"] == 1,
      f"one scale-out, one scale-in, back at 1 (no flapping): {chain}\n{log}")
decisions = re.findall(r"chain 'c': (\d) -> (\d) instance\(s\) \(autoscale: load ([0-9.]+) (above|below)", log)
check([(a, b, d) for a, b, _, d in decisions] == [("1", "2", "above"), ("2", "1", "below")],
      f"the log names both decisions with their load: {decisions}\n{log}")
out = read_pcap(host.path("out.pcap"))
check(len(out) == len(frames), f"{len(frames)} packets sent, {len(out)} left")
print(f"ok: autoscaled 1 -> 2 -> 1 ({[float(load) for _, _, load, _ in decisions]} load), {len(out)} packets")
host.cleanup()
