#!/usr/bin/env bash
# Regenerates link/order.txt, the order in which the linker lays out the
# functions of the release binary (lld --symbol-ordering-file, see build.rs).
#
# Why: the kernel maps file pages 64 KiB at a time around each page fault
# ("fault-around"). A static daemonize has about 1.1 MiB of code, and a run
# touches a few hundred functions scattered across all of it, so every
# window gets mapped: all of the code counts as resident, and each window
# costs a fault. Placing the functions a run executes side by side keeps
# both down (issue 6: peak RSS from about 1.5 MiB to well under 1 MiB).
#
# How: the functions are those callgrind sees in typical runs (the original
# process), the forked children's code (daemonize::detach, and the libc
# calls it makes), glibc's ifunc resolvers (run at start-up), and then, in a
# few rounds, whatever still page-faults outside the ordered region under
# perf (variants chosen on this CPU). A stale list only costs speed: unknown
# names are ignored. Needs valgrind and perf; run it after large changes.
set -euo pipefail
cd "$(dirname "$0")/.."
triple=$(rustc -vV | sed -n 's/^host: //p')
target=target/order-gen
bin=$target/$triple/release/daemonize
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

build() { cargo build -q --release -p daemonize --target-dir "$target"; }

# The runs to learn from: plain, with files, failures, users, control modes.
runs() {
    local run=$1
    $run "$bin" -- /bin/true
    $run "$bin" -V
    $run "$bin" -p "$work/a.pid" -o "$work/a.log" -E A=b -- /bin/true
    $run "$bin" -c "$work" -m 077 --truncate -o "$work/b.log" -e "$work/c.log" -- /bin/true
    $run "$bin" -- "$work/nonexistent" || true
    $run "$bin" -u nobody -g nogroup -- /bin/true
    $run "$bin" -p "$work/a.pid" --status || true
    $run "$bin" -p "$work/a.pid" --stop || true
}

build
cg() { valgrind -q --tool=callgrind --demangle=no --callgrind-out-file="$work/cg.%p" "$@" >/dev/null 2>&1; }
runs cg
{
    grep -ohE '^c?fn=\([0-9]+\) .+' "$work"/cg.* | sed -E 's/^c?fn=\([0-9]+\) //'
    nm "$bin" | awk '{print $NF}' | grep -E 'daemonize6detach|_ifunc$'
    printf '%s\n' execvp __execvpe execve clone __clone setsid umask chdir dup2 \
        __dup2 open64 __libc_open64 close __close syscall signal sigemptyset \
        __sigprocmask _exit __errno_location write __libc_write fcntl64 \
        strchrnul strnlen getenv mempcpy access __access read __libc_read
} | awk '!seen[$0]++' > "$work/order.txt"
cp "$work/order.txt" link/order.txt

for round in 1 2 3; do
    build
    nm -n "$bin" | awk 'NF == 3 && $2 ~ /[tTwW]/' > "$work/syms.txt"
    pf() { perf record -q -o "$work/pf.data" -e page-faults -c 1 -d -- "$@" >/dev/null 2>&1 || true
           perf script -i "$work/pf.data" -F ip,addr 2>/dev/null >> "$work/faults.txt"; }
    : > "$work/faults.txt"
    runs pf
    added=$(python3 - "$work/syms.txt" "$work/faults.txt" link/order.txt <<'PY'
import bisect, sys
syms = [(int(a, 16), n) for a, _, n in (l.split() for l in open(sys.argv[1]))]
addrs = [a for a, _ in syms]
order = open(sys.argv[3]).read().split()
known = set(order)
new = []
for line in open(sys.argv[2]):
    parts = line.split()
    if len(parts) < 2:
        continue
    addr, ip = int(parts[0], 16), int(parts[1], 16)
    if addr != ip:          # a data fault, not an instruction fetch
        continue
    i = bisect.bisect_right(addrs, ip) - 1
    if i >= 0 and syms[i][1] not in known:
        known.add(syms[i][1])
        new.append(syms[i][1])
open(sys.argv[3], "a").write("".join(n + "\n" for n in new))
print(len(new))
PY
)
    echo "round $round: $added functions added"
    [ "$added" = 0 ] && break
done
echo "link/order.txt: $(wc -l < link/order.txt) functions"
