"""A pool refill that an NF refuses backs off instead of flooding the log.

A chain runs with a pool of one pre-initialized instance.  Its NF (the test
plugin faulty) is then made to refuse init under the running host, as an NF
whose resources ran out would, and `serpensctl scale c +1` takes the pooled
instance, so the host tries to pre-initialize another one, which the NF
refuses.  The host used to try again every 100 ms, logging two lines each
time; now it waits 1 s, 2 s, 4 s ... between tries.  Meanwhile scaling and
stats keep answering, and once the NF accepts again a scale-out starts an
instance at once.
"""
import os
import re
import signal
import time

from harness import Host, check

host = Host(plugins=("faulty",))
host.pktgen("--packets", "10")
refuse = host.path("refuse")
host.chain("c", 'name = "c"\n[[nf]]\nname = "f"\nplugin = "faulty"\n[nf.config]\ninit_fail_while = "../refuse"\n')
host.config(host.pcap_port() + '\n[[gateway.rule]]\nchain = "c"\n'
            '\n[[instance]]\nchain = "c"\ncount = 1\nlcores = [1]\n'
            '\n[instances]\nring_size = 1024\npool = 1\n')
proc = host.start()
deadline = time.monotonic() + 30
while not any(i["chain"] == "c" and i["state"] == "pooled" for i in host.ctl_json("instances")):
    check(time.monotonic() < deadline, "the pool never got its instance")
    time.sleep(0.05)

open(refuse, "w").close()
out = host.ctl("scale", "c", "+1")
check(out.returncode == 0, f"scale +1 with a pooled instance: {out.stdout}{out.stderr}")
time.sleep(4.5)
check(host.ctl("stats").returncode == 0, "stats while the pool cannot be refilled")
os.unlink(refuse)
out = host.ctl("scale", "c", "+1")
check(out.returncode == 0, f"scale +1 once the NF accepts again: {out.stdout}{out.stderr}")
proc.send_signal(signal.SIGINT)
log = proc.communicate(timeout=60)[0]
check(proc.returncode == 0, f"host exit {proc.returncode}:\n{log}")

tries = re.findall(r"cannot pre-initialize a pool instance \(try (\d+); next in (\d+) s\)", log)
# Tries at about 0, 1, 3 s (and 7 s, past the wait): four at most, not forty.
check(1 <= len(tries) <= 4, f"{len(tries)} refill tries in 4.5 s:\n{log}")
check([int(t) for t, _ in tries] == list(range(1, len(tries) + 1)), f"tries not counted up: {tries}")
check([int(w) for _, w in tries] == [1, 2, 4, 8][:len(tries)], f"waits do not double: {tries}")
check("refuse exists: refusing to start" in log, f"the refusal does not say why:\n{log}")
print(f"ok: {len(tries)} refill tries in 4.5 s, waits {[int(w) for _, w in tries]} s")
host.cleanup()
