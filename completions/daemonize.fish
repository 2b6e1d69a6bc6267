complete -c daemonize -s c -l chdir -d 'Working directory of the daemon [default: /]' -r -F
complete -c daemonize -s m -l umask -d 'File-mode creation mask of the daemon, in octal (022, 0o027, 0077) [default: 022]' -r
complete -c daemonize -s o -l stdout -d 'Append the daemon\'s standard output to FILE [default: /dev/null]' -r -F
complete -c daemonize -s e -l stderr -d 'Append the daemon\'s standard error to FILE [default: the --stdout file, else /dev/null]' -r -F
complete -c daemonize -s E -l env -d 'Set NAME to VALUE in the daemon\'s environment (repeatable)' -r
complete -c daemonize -l keep-fds -d 'Inherited descriptors above 2 to leave open (repeatable); all others are closed' -r
complete -c daemonize -s p -l pidfile -d 'Write the daemon\'s PID to FILE and hold a lock (on FILE.lock, 0600) while the daemon runs; refuse to start a second instance' -r -F
complete -c daemonize -s l -l lockfile -d 'Hold a lock on FILE (created 0600) while the daemon runs, without writing a PID' -r -F
complete -c daemonize -s u -l user -d 'Run the daemon as USER (name or uid): its uid, primary group and supplementary groups; root only' -r
complete -c daemonize -s g -l group -d 'Primary group of the daemon (name or gid) [default: the user\'s]' -r
complete -c daemonize -l ready-fd -d 'Return only once the daemon writes a newline to descriptor FD (s6)' -r
complete -c daemonize -l ready-timeout -d 'Seconds to wait for readiness before stopping the daemon and failing; 0 waits for ever [default: 60]' -r
complete -c daemonize -s r -l restart -d 'Keep COMMAND running: restart it whenever it ends (always, the default), or only when it fails (on-failure: a non-zero exit, a signal other than TERM, INT, HUP or PIPE, a missed readiness or watchdog deadline)' -r
complete -c daemonize -l restart-delay -d 'Seconds before the first restart; doubled after each run that was not healthy, up to --restart-max-delay [default: 0.1]' -r
complete -c daemonize -l restart-max-delay -d 'The longest delay between restarts [default: 30]' -r
complete -c daemonize -l max-restarts -d 'Give up after N restarts in a row without a healthy run (one that lasted 10 s, or became ready); 0 never gives up [default: 0]' -r
complete -c daemonize -s P -l supervisor-pidfile -d 'With --restart, write the supervisor\'s PID to FILE (locked, like --pidfile); control actions accept it instead of --pidfile' -r -F
complete -c daemonize -l watchdog -d 'With --restart and --wait-ready: COMMAND gets WATCHDOG_USEC and must send WATCHDOG=1 at least every SECS; a miss is SIGABRT and a restart' -r
complete -c daemonize -l log-max-size -d 'Rotate an output file before it would exceed SIZE (bytes, or K, M, G: powers of 1024), keeping --log-keep old ones: FILE.1 (newest) ... FILE.N' -r
complete -c daemonize -l log-keep -d 'How many rotated files --log-max-size keeps [default: 5]' -r
complete -c daemonize -l syslog -d 'Send each line of output to syslog as one message (standard output at info, standard error at err), with FACILITY [default: daemon]' -r
complete -c daemonize -l syslog-tag -d 'The tag of --syslog messages [default: COMMAND\'s file name]' -r
complete -c daemonize -l syslog-socket -d 'The syslog socket (a datagram socket, as rsyslog\'s and journald\'s) [default: /dev/log]' -r -F
complete -c daemonize -l signal -d 'With --stop, the signal that stops the daemon [default: TERM]; alone, send SIG to the daemon named by --pidfile and do nothing more (exit 7 if it is not running). By name or number: TERM, SIGUSR1, 15, RTMIN+3' -r
complete -c daemonize -l timeout -d 'Seconds --stop waits before sending SIGKILL [default: 10]' -r
complete -c daemonize -s a -l append -d 'Append to the output files (the default; kept for bmc/daemonize scripts)'
complete -c daemonize -l truncate -d 'Truncate the output files instead of appending'
complete -c daemonize -l wait-ready -d 'Return only once the daemon sends READY=1 to $NOTIFY_SOCKET (sd_notify)'
complete -c daemonize -l log-timestamps -d 'Prefix each line of the output files with its arrival time, RFC 3339 UTC with microseconds: 2026-11-22T02:14:30.123456Z'
complete -c daemonize -l reopen-logs -d 'Make the supervisor of the daemon named by --pidfile (or -P) close and reopen its output files, as logrotate\'s postrotate wants; returns once it has'
complete -c daemonize -l status -d 'Report whether the daemon named by --pidfile runs (LSB codes: 0 running, 1 stale pidfile, 3 not running, 4 unknown)'
complete -c daemonize -l stop -d 'Stop the daemon named by --pidfile: send --signal, wait --timeout seconds, then SIGKILL; a supervised one is not restarted'
complete -c daemonize -l reload -d 'Send SIGHUP to the daemon named by --pidfile (the same as --signal HUP)'
complete -c daemonize -l restart-now -d 'Restart the supervised daemon named by --pidfile (or -P) at once, with the restart delay reset'
complete -c daemonize -s v -l verbose -d 'Trace each step to standard error (-vv for more; DAEMONIZE_LOG overrides)'
complete -c daemonize -s h -l help -d 'Print help (see more with \'--help\')'
complete -c daemonize -s V -l version -d 'Print version'
