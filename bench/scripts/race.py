# Runs 40 concurrent starts on one pidfile, 50 times, and counts the trials in which
# exactly one daemon ran and the pidfile names it (issue 3). Run as root after
# `cargo build --release`: python3 bench/scripts/race.py
import os, subprocess, sys, time
import os as _os
D=_os.environ.get("DAEMONIZE", _os.path.join(_os.path.dirname(__file__), "../../target/x86_64-unknown-linux-gnu/release/daemonize"))
ok=0; trials=50
for t in range(trials):
    pf=f"/tmp/daemonize-race-{os.getpid()}-{t}.pid"
    if os.path.exists(pf): os.unlink(pf)
    marker=f"1000.{t:03d}{os.getpid()}"
    procs=[subprocess.Popen([D,"-p",pf,"--","sleep",marker],stderr=subprocess.DEVNULL) for _ in range(40)]
    codes=[p.wait() for p in procs]
    live=[]
    for pid in os.listdir("/proc"):
        if not pid.isdigit(): continue
        try:
            cmd=open(f"/proc/{pid}/cmdline","rb").read()
            st=open(f"/proc/{pid}/stat").read().rsplit(")",1)[1].split()[0]
        except OSError: continue
        if marker.encode() in cmd and b"sleep" in cmd.split(b"\0")[0] and st!="Z": live.append(int(pid))
    named=int(open(pf).read())
    good = codes.count(0)==1 and codes.count(1)==39 and live==[named]
    ok+=good
    for pid in live: os.kill(pid,9)
print(f"{ok}/{trials} trials: exactly one of 40 concurrent starts ran, 39 exited 1, pidfile named the survivor")
