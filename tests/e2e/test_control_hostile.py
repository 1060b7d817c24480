"""serpens-host keeps forwarding and answering while its control socket is
abused: clients gone before their reply, a 10 MB line, 500 idle connections,
a one-byte drip, a foreign user; its socket is 0600 under umask 000; a file
at the socket path stops the host and stays intact."""
import grp
import json
import os
import shutil
import socket
import subprocess
import threading
import time

from harness import CTL, HOST, Host, check, fail

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

host = Host()
host.chain("c", 'name = "c"\negress = "null0"\n[[nf]]\nname = "t"\nplugin = "trace"\n')
# net_null without no-rx receives endlessly: traffic flows all test long.
host.config('[[port]]\nname = "null0"\ndevice = "net_null0"\n'
            '\n[[gateway.rule]]\nchain = "c"\n\n[[instance]]\nchain = "c"\nlcores = [0]\n', eal=host.eal("0"))
sock_path = host.path("ctl.sock")
old_umask = os.umask(0)  # the host must not take its socket's mode from this
try:
    proc = subprocess.Popen([HOST, "-c", host.path("host.toml"), "--log-level", "warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
finally:
    os.umask(old_umask)


def ctl(*args, prefix=()):
    return subprocess.run(list(prefix) + [CTL, "--socket", sock_path] + list(args),
                          capture_output=True, text=True, timeout=10)


def stats():
    t0 = time.monotonic()
    out = ctl("stats", "--json")
    took = time.monotonic() - t0
    if out.returncode != 0:
        died = f", host exited {proc.returncode}" if proc.poll() is not None else ""
        fail(f"stats failed ({out.returncode}{died}): {out.stdout} {out.stderr}")
    return json.loads(out.stdout), took


def rx(s):
    return sum(p["rx"] for p in s["ports"])


def healthy(after):
    """The host lives, answers stats promptly and still receives."""
    if proc.poll() is not None:
        fail(f"after {after}: host exited {proc.returncode}: {proc.stderr.read()}")
    first, took1 = stats()
    time.sleep(0.2)
    second, took2 = stats()
    check(max(took1, took2) < 1.0, f"after {after}: stats took {max(took1, took2):.2f} s")
    check(rx(second) > rx(first), f"after {after}: rx stalled at {rx(first)}")
    print(f"ok: {after} (rx {rx(first)} -> {rx(second)}, stats in {max(took1, took2) * 1000:.0f} ms)")


def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)  # blocking: with a timeout, a full backlog is EAGAIN at once
    s.settimeout(5)
    return s


def read_all(s):
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
    except (ConnectionResetError, socket.timeout):
        return data


try:
    for _ in range(100):  # start-up
        if ctl("ping").stdout.strip() == "pong":
            break
        time.sleep(0.1)
    check(ctl("ping").stdout.strip() == "pong", "host never answered ping")
    mode = os.stat(sock_path).st_mode & 0o7777
    check(mode == 0o600, f"socket mode {mode:o} under umask 000, expected 600")
    healthy("start-up under umask 000 (socket 0600)")

    # Gone before the reply: the host's reply meets a closed socket.
    for _ in range(50):
        s = connect()
        s.sendall(b'{"v":1,"cmd":"stats"}\n')
        s.close()
    healthy("50 clients closed before their reply")

    # A 10 MB line: an error reply, then the connection ends.
    s = connect()
    try:
        s.sendall(b"x" * (10 << 20))
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass  # the host stopped reading
    reply = read_all(s)
    s.close()
    check(reply.endswith(b"\n") and json.loads(reply)["error"]["code"] == "too_large",
          f"10 MB request got {reply[:100]!r}")
    healthy("a 10 MB request")

    # 500 connections that never send: the next client is served at once.
    idle = [connect() for _ in range(500)]
    _, took = stats()
    check(took < 1.0, f"stats took {took:.2f} s behind 500 idle connections")
    let_go = 0
    for s in idle:
        s.setblocking(False)
        try:
            let_go += 1 if s.recv(1) == b"" else 0
        except BlockingIOError:
            pass
        except ConnectionResetError:
            let_go += 1
    check(let_go >= 500 - 256, f"only {let_go} of 500 idle connections were let go at once")
    for s in idle:
        s.close()
    healthy(f"500 idle connections ({let_go} let go at once)")

    # One byte every 0.9 s: closed at the 2 s deadline, nobody waits for it.
    drip = {}

    def dripper():
        s = connect()
        t0 = time.monotonic()
        got = b""
        try:
            while time.monotonic() - t0 < 8:
                s.send(b"p")
                s.settimeout(0.9)
                try:
                    chunk = s.recv(4096)
                except socket.timeout:
                    continue
                got += chunk
                if not chunk:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        drip["after"], drip["got"] = time.monotonic() - t0, got
        s.close()

    t = threading.Thread(target=dripper)
    t.start()
    time.sleep(0.3)
    healthy("a client dripping one byte every 0.9 s (while it drips)")
    t.join()
    check(1.5 < drip["after"] < 4.0, f"the dripping client was closed after {drip['after']:.1f} s, not at 2 s")
    said = json.loads(drip["got"]) if drip["got"].endswith(b"\n") else {}
    check(said.get("error", {}).get("code") == "timeout" and "within 2000 ms" in said["error"]["message"],
          f"drip got {drip['got']!r}")
    healthy(f"the drip closed at {drip['after']:.1f} s")

    # Another user: the socket's mode keeps it out; with the mode loosened,
    # SO_PEERCRED still does.
    ctl_copy = host.path("serpensctl")
    shutil.copy(CTL, ctl_copy)
    os.chmod(ctl_copy, 0o755)
    os.chmod(host.dir, 0o711)
    as_nobody = subprocess.run(NOBODY + [ctl_copy, "--socket", sock_path, "wake-threshold", "7"],
                               capture_output=True, text=True, timeout=10)
    check(as_nobody.returncode != 0 and "Permission denied" in as_nobody.stderr,
          f"uid 65534 reached a 0600 socket: {as_nobody.stdout} {as_nobody.stderr}")
    os.chmod(sock_path, 0o666)
    as_nobody = subprocess.run(NOBODY + [ctl_copy, "--socket", sock_path, "wake-threshold", "7"],
                               capture_output=True, text=True, timeout=10)
    check(as_nobody.returncode == 1 and "(permission_denied)" in as_nobody.stderr,
          f"uid 65534 was not refused by SO_PEERCRED: {as_nobody.stdout} {as_nobody.stderr}")
    check(ctl("wake-threshold").stdout.strip() == "wake threshold: 128 packets", "uid 65534 changed the wake threshold")
    check(ctl("wake-threshold", "7").stdout.strip() == "wake threshold: 7 packets", "root may change the wake threshold")
    healthy("uid 65534 refused, root served")
finally:
    if proc.poll() is None:
        proc.terminate()
    rc = proc.wait(timeout=30)
check(rc == 0, f"host exited {rc}: {proc.stderr.read()}")
check(not os.path.exists(sock_path), "socket removed at exit")
host.cleanup()

# A regular file where the socket should go: the host refuses to start and
# the file survives.
other = Host()
other.chain("c", 'name = "c"\negress = "null0"\n[[nf]]\nname = "t"\nplugin = "trace"\n')
other.config('[[port]]\nname = "null0"\ndevice = "net_null0,no-rx=1"\n\n[[gateway.rule]]\nchain = "c"\n',
             eal=other.eal("0"))
with open(other.path("ctl.sock"), "w") as f:
    f.write("precious\n")
run = other.run(timeout=60, expect_rc=None)
check(run.returncode != 0, "the host started over a regular file at its control socket path")
check(other.path("ctl.sock") in run.stderr and "is not a socket" in run.stderr,
      f"unclear refusal: {run.stderr}")
with open(other.path("ctl.sock")) as f:
    check(f.read() == "precious\n", "the regular file at the socket path was changed")
print("ok: a regular file at control_socket stops the host and stays intact")

# An unknown control_group is a config error at its line.
with open(other.path("host.toml")) as f:
    text = f.read()
with open(other.path("host.toml"), "w") as f:
    f.write(text.replace('control_socket = "ctl.sock"\n',
                         'control_socket = "ctl.sock"\ncontrol_group = "no-such-serpens-group"\n'))
run = other.run(timeout=60, expect_rc=2)
check(other.path("host.toml") + ":" in run.stderr and "no-such-serpens-group" in run.stderr,
      f"unknown control_group: {run.stderr}")
print("ok: an unknown control_group is refused with file:line:col")

# A known control_group: its members are served, the socket is 0660 and theirs.
with open(other.path("host.toml"), "w") as f:
    group_65534 = grp.getgrgid(65534).gr_name  # nogroup on Debian, nobody elsewhere
    f.write(text.replace('control_socket = "ctl.sock"\n',
                         f'control_socket = "ctl.sock"\ncontrol_group = "{group_65534}"\n'))
os.remove(other.path("ctl.sock"))
os.chmod(other.dir, 0o711)
shutil.copy(CTL, other.path("serpensctl"))
os.chmod(other.path("serpensctl"), 0o755)
proc = subprocess.Popen([HOST, "-c", other.path("host.toml"), "--log-level", "warn"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
try:
    member = None
    for _ in range(100):
        member = subprocess.run(NOBODY + [other.path("serpensctl"), "--socket", other.path("ctl.sock"), "ping"],
                                capture_output=True, text=True, timeout=10)
        if member.stdout.strip() == "pong" or proc.poll() is not None:
            break
        time.sleep(0.1)
    check(member.stdout.strip() == "pong", f"a member of control_group was not served: {member.stdout} {member.stderr}")
    st = os.stat(other.path("ctl.sock"))
    check(st.st_mode & 0o7777 == 0o660 and st.st_gid == 65534,
          f"socket with control_group: mode {st.st_mode & 0o7777:o} gid {st.st_gid}, expected 660 and 65534")
finally:
    proc.terminate()
    rc = proc.wait(timeout=30)
check(rc == 0, f"host with control_group exited {rc}: {proc.stderr.read()}")
print("ok: control_group's members are served; the socket is 0660 and the group's")
other.cleanup()
