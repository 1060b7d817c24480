"""Copying a new build over a loaded plugin's .so (cp onto the same path)
leaves the running host alone: it keeps forwarding through the code it
loaded, and exits cleanly on SIGTERM."""
import json
import os
import shutil
import subprocess
import time

from harness import CTL, HOST, TEST_PLUGINS, Host, check, fail

host = Host()
host.pktgen("--packets", "500", "--flows", "50", "--seed", "5")
host.chain("c", 'name = "c"\negress = "sink"\n[[nf]]\nname = "t"\nplugin = "trace"\n')
# infinite_rx replays the capture for as long as the host runs.
host.config(f'[[port]]\nname = "src"\ndevice = "net_pcap0,rx_pcap={host.path("in.pcap")},infinite_rx=1"\n'
            '[[port]]\nname = "sink"\ndevice = "net_null0,no-rx=1"\n'
            '\n[[gateway.rule]]\nchain = "c"\n')
proc = subprocess.Popen([HOST, "-c", host.path("host.toml"), "--log-level", "warn"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def ctl(*args):
    return subprocess.run([CTL, "--socket", host.path("ctl.sock")] + list(args),
                          capture_output=True, text=True, timeout=10)


def progress():
    """(packets the trace NF has seen, packets sent out of the sink port)."""
    out = ctl("stats", "--json")
    if out.returncode != 0:
        died = proc.poll()
        fail(f"host died (exit {died})" if died is not None else f"serpensctl stats failed: {out.stderr}")
    stats = json.loads(out.stdout)
    seen = sum(nf.get("counters", {}).get("seen", 0)
               for inst in stats["instances"] for nf in inst["nfs"] if nf["name"] == "t")
    sink = next(p for p in stats["ports"] if p["name"] == "sink")
    return seen, sink["tx"]


def rising(before, what):
    """Waits (up to 10 s) until both counters pass `before`; returns them."""
    for _ in range(100):
        now = progress()
        if now[0] > before[0] and now[1] > before[1]:
            return now
        check(proc.poll() is None, f"host died {what}: exit {proc.returncode}")
        time.sleep(0.1)
    fail(f"traffic stopped {what}: still {progress()} after {before}")


try:
    for _ in range(100):  # wait for start-up
        if ctl("ping").stdout.strip() == "pong":
            break
        check(proc.poll() is None, "host exited during start-up")
        time.sleep(0.1)
    check(ctl("ping").stdout.strip() == "pong", "host never answered ping")
    before = rising((0, 0), "before the swap")

    loaded = host.path(os.path.join("plugins", "serpens_nf_trace.so"))
    shutil.copyfile(os.path.join(TEST_PLUGINS, "serpens_nf_noop.so"), loaded)  # same inode, new bytes
    time.sleep(0.5)
    check(proc.poll() is None, f"host died after the .so was overwritten: exit {proc.returncode}")
    after = rising(before, "after the swap")
    check(ctl("ping").stdout.strip() == "pong", "host stopped answering after the swap")
finally:
    if proc.poll() is None:
        proc.terminate()
    rc = proc.wait(timeout=30)
    stderr = proc.stderr.read()
check(rc == 0, f"host exited {rc}\nstderr:\n{stderr}")
print(f"ok: forwarding went on after the swap ({before} -> {after} seen/tx), clean exit")
host.cleanup()
