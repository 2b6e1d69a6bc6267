# How long after the daemon's death before readiness daemonize exits 125 (issue 5):
# a static C daemon stamps CLOCK_MONOTONIC just before _exit(3). Needs gcc.
# Run after `cargo build --release`: python3 bench/scripts/deathlat.py
import os, subprocess, time, statistics
import os as _os
D=_os.environ.get("DAEMONIZE", _os.path.join(_os.path.dirname(__file__), "../../target/x86_64-unknown-linux-gnu/release/daemonize"))
import tempfile
work=tempfile.mkdtemp()
stamp=work+"/stamp"; lat=[]
DIE=work+"/die"
subprocess.run(["gcc","-O2","-static","-o",DIE,_os.path.join(_os.path.dirname(__file__),"die.c")],check=True)
for mode in (["--wait-ready"],["--ready-fd","3"]):
    lat=[]
    for i in range(25):
        r=subprocess.run([D,*mode,"--",DIE,stamp],stderr=subprocess.PIPE)
        t=time.monotonic()
        assert r.returncode==125 and b"status 3" in r.stderr, r
        lat.append(t-float(open(stamp).read()))
    print("%s: daemon's exit(3) to daemonize's exit 125: median %.2f ms (min %.2f, max %.2f, %d runs)"%(" ".join(mode),statistics.median(lat)*1e3,min(lat)*1e3,max(lat)*1e3,len(lat)))
