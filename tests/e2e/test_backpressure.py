"""A worker slower than the receive side makes the dispatcher leave packets in
the port's RX queue (back-pressure) instead of dropping them at a full ring."""
from harness import Host, check

host = Host()
host.pktgen("--packets", "6000", "--flows", "100", "--malformed-ratio", "0", "--seed", "4")
host.chain("c", 'name = "c"\negress = "pcap0"\n[[nf]]\nname = "t"\nplugin = "trace"\n')
# A 64-packet ring on a worker lcore: far too small for a replay at full speed.
host.config(host.pcap_port() + '\n[[gateway.rule]]\nchain = "c"\n'
            '\n[instances]\nring_size = 64\nburst = 32\n\n[[instance]]\nchain = "c"\nlcores = [1]\n')
host.run("--idle-exit", "1")
stats = host.stats()
d = stats["dispatch"]
check(d["ring_full"] == 0, f"{d['ring_full']} packets dropped at a full ring")
check(stats["ports"][0]["tx"] == 6000, f"{stats['ports'][0]['tx']} of 6000 forwarded")
check(len(host.output()) == 6000, "output capture holds every packet")
print(f"ok: 6000 forwarded through a 64-packet ring; RX paused {d['rx_paused']} times")
host.cleanup()
