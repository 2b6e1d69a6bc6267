#!/usr/bin/python3
"""A daemon for the readiness tests (tests/ready.rs), driven by its arguments.

    notify.py ACTION [ARG] ACTION [ARG] ...

The actions run in order; after the last one the program waits until it is
killed (for at most HOLD_LIMIT seconds, so that a test that died before it
could take ownership leaves nothing behind for long).

    mark TEXT        does nothing: TEXT (a unique marker) is only in argv
    send TEXT        send TEXT as one datagram to $NOTIFY_SOCKET
    write FD TEXT    write TEXT to descriptor FD
    close FD         close descriptor FD
    print TEXT       print TEXT and a newline on stdout, flushed
    pid FILE         write our PID and a newline to FILE
    env FILE         write $NOTIFY_SOCKET and a newline to FILE
    stamp FILE       write time.monotonic() (CLOCK_MONOTONIC) to FILE
    wait FILE        wait until FILE exists (exit 98 after WAIT_LIMIT s)
    ignore SIG       ignore signal SIG (a name without SIG, like TERM)
    kill SIG         send signal SIG to ourselves
    send-fd FILE     try to send a datagram carrying descriptor 0 (SCM_RIGHTS);
                     write "ok" or the errno name to FILE
    kill-parent SIG  send signal SIG to our parent (daemonize, as subreaper)
    exit N           exit with status N at once
    stamp-exit FILE N   stamp FILE, then exit N at once
    fork             run the remaining actions in a child; this process waits
    orphan           run the remaining actions in a grandchild whose parent
                     exits at once (so it is reparented); this process waits
    become UID       drop root by ourselves: no groups, then gid and uid UID
    swap-dir DIR FILE   try to rename the socket's directory away and put a
                     symlink to DIR in its place; write "ok" or the errno
                     name (like EACCES) to FILE. After a rename,
                     $NOTIFY_SOCKET names the socket where it went
    try-create FILE  try to create a directory in the socket's directory;
                     write "ok" or the errno name to FILE
    try-unlink FILE  try to remove the socket; write "ok" or the errno name

Files are written to a temporary name and renamed, so a reader never sees
half a line. Uses nothing but the standard library: it runs as any user.
"""

import errno
import os
import signal
import socket
import sys
import time

WAIT_LIMIT = 60.0
HOLD_LIMIT = 300.0


def write_file(path, text):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def send(text):
    path = os.environ["NOTIFY_SOCKET"]
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(text.encode(), path)


def attempt(path, action):
    """Runs action(); writes "ok", or the errno name it failed with, to path."""
    try:
        action()
        result = "ok"
    except OSError as e:
        result = errno.errorcode.get(e.errno, str(e.errno))
    write_file(path, result + "\n")
    return result == "ok"


def hold():
    deadline = time.monotonic() + HOLD_LIMIT
    while time.monotonic() < deadline:
        time.sleep(1)
    os._exit(0)


def signal_number(name):
    return getattr(signal, "SIG" + name)


def main(args):
    i = 0

    def arg():
        nonlocal i
        i += 1
        return args[i - 1]

    while i < len(args):
        action = arg()
        if action == "mark":
            arg()
        elif action == "send":
            send(arg())
        elif action == "write":
            fd = int(arg())
            os.write(fd, arg().encode())
        elif action == "close":
            os.close(int(arg()))
        elif action == "print":
            sys.stdout.write(arg() + "\n")
            sys.stdout.flush()
        elif action == "pid":
            write_file(arg(), "%d\n" % os.getpid())
        elif action == "env":
            write_file(arg(), os.environ.get("NOTIFY_SOCKET", "") + "\n")
        elif action == "stamp":
            write_file(arg(), "%.9f\n" % time.monotonic())
        elif action == "stamp-exit":
            path = arg()
            code = int(arg())
            write_file(path, "%.9f\n" % time.monotonic())
            os._exit(code)
        elif action == "wait":
            path = arg()
            deadline = time.monotonic() + WAIT_LIMIT
            while not os.path.exists(path):
                if time.monotonic() > deadline:
                    os._exit(98)
                time.sleep(0.005)
        elif action == "ignore":
            signal.signal(signal_number(arg()), signal.SIG_IGN)
        elif action == "kill":
            os.kill(os.getpid(), signal_number(arg()))
            # A caught or ignored signal must not let the script go on.
            os._exit(97)
        elif action == "send-fd":
            def send_fd():
                path = os.environ["NOTIFY_SOCKET"]
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                    rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, (0).to_bytes(4, sys.byteorder))
                    s.sendmsg([b"FDSTORE=1"], [rights], 0, path)
            attempt(arg(), send_fd)
        elif action == "kill-parent":
            os.kill(os.getppid(), signal_number(arg()))
        elif action == "exit":
            os._exit(int(arg()))
        elif action == "fork":
            if os.fork() != 0:
                hold()
        elif action == "orphan":
            child = os.fork()
            if child != 0:
                os.waitpid(child, 0)
                hold()
            if os.fork() != 0:
                os._exit(0)
        elif action == "become":
            uid = int(arg())
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        elif action == "swap-dir":
            target, path = arg(), arg()
            sock = os.environ["NOTIFY_SOCKET"]
            d = os.path.dirname(sock)
            moved = d + ".moved"
            if attempt(path, lambda: os.rename(d, moved)):
                os.environ["NOTIFY_SOCKET"] = os.path.join(moved, os.path.basename(sock))
                attempt(path, lambda: os.symlink(target, d))
        elif action == "try-create":
            d = os.path.dirname(os.environ["NOTIFY_SOCKET"])
            attempt(arg(), lambda: os.mkdir(os.path.join(d, "intruder")))
        elif action == "try-unlink":
            attempt(arg(), lambda: os.unlink(os.environ["NOTIFY_SOCKET"]))
        else:
            sys.stderr.write("notify.py: unknown action %r\n" % action)
            os._exit(96)
    hold()


if __name__ == "__main__":
    main(sys.argv[1:])
