"""serpensctl reaches a running host: live counters, and the wake-up threshold
changed at runtime."""
import json
import os
import subprocess
import time

from harness import CTL, HOST, Host, check

host = Host()
host.chain("c", 'name = "c"\negress = "null0"\n[[nf]]\nname = "t"\nplugin = "trace"\n')
host.config('[[port]]\nname = "null0"\ndevice = "net_null0,no-rx=1"\n'
            '\n[[gateway.rule]]\nchain = "c"\n\n[instances]\nwake_threshold = 64\n')
proc = subprocess.Popen([HOST, "-c", host.path("host.toml"), "--log-level", "warn"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def ctl(*args):
    return subprocess.run([CTL, "--socket", host.path("ctl.sock")] + list(args),
                          capture_output=True, text=True, timeout=10)


try:
    for _ in range(100):  # wait for start-up
        if ctl("ping").stdout.strip() == "pong":
            break
        time.sleep(0.1)
    check(ctl("ping").stdout.strip() == "pong", "host never answered ping")
    check(ctl("wake-threshold").stdout.strip() == "wake threshold: 64 packets", "threshold from host.toml")
    check(json.loads(ctl("wake-threshold", "512", "--json").stdout) == {"wake_threshold": 512}, "set threshold")
    check(ctl("wake-threshold").stdout.strip() == "wake threshold: 512 packets", "threshold changed at runtime")
    for bad in ("-3", "0", "1048577", "x"):
        out = ctl("wake-threshold", bad)
        check(out.returncode == 2 and out.stderr, f"threshold {bad} is refused as a usage error: {out}")
    stats = json.loads(ctl("stats", "--json").stdout)
    check(stats["wake_threshold"] == 512 and stats["instances"][0]["chain"] == "c", f"live stats: {stats}")
finally:
    proc.terminate()
    rc = proc.wait(timeout=30)
check(rc == 0, f"host exited {rc}")
gone = ctl("ping")
check(gone.returncode == 3 and "cannot reach serpens-host" in gone.stderr, "socket removed at exit")
check(not os.path.exists(host.eal_runtime_dir()), f"the EAL's runtime directory {host.eal_runtime_dir()} removed at exit")
print("ok: ping, stats, wake-threshold get/set")
host.cleanup()
