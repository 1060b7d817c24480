"""An idle host sleeps: with no traffic for 5 s its threads use < 5% of a core."""
import os
import subprocess
import time

from harness import HOST, Host, check

host = Host()
host.chain("c", 'name = "c"\negress = "null0"\n[[nf]]\nname = "t"\nplugin = "trace"\n')
host.config('[[port]]\nname = "null0"\ndevice = "net_null0,no-rx=1"\n'
            '\n[[gateway.rule]]\nchain = "c"\n\n[[instance]]\nchain = "c"\nlcores = [1]\n')
proc = subprocess.Popen([HOST, "-c", host.path("host.toml"), "--log-level", "warn"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
ticks = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime, all threads


try:
    time.sleep(2)  # start-up (EAL, ports) is not idle time
    if proc.poll() is not None:
        check(False, f"host exited early ({proc.returncode}): {proc.stderr.read()}")
    t0, c0 = time.monotonic(), cpu_seconds(proc.pid)
    time.sleep(5)
    t1, c1 = time.monotonic(), cpu_seconds(proc.pid)
finally:
    proc.terminate()
    rc = proc.wait(timeout=30)
share = (c1 - c0) / (t1 - t0)
print(f"idle host used {share * 100:.2f}% of a core over {t1 - t0:.1f} s (exit {rc})")
check(rc == 0, f"host exited {rc} on SIGTERM")
check(share < 0.05, f"idle host used {share * 100:.1f}% of a core (limit 5%)")
host.cleanup()
