//! The supervisor's decisions, as plain code: a state, an event, the time,
//! and the effects that follow. No process is started and no clock is
//! read here, so unit tests drive it with a table of events (s6-supervise's
//! state/event switch and FreeBSD daemon(8)'s single kqueue loop are the
//! models; docs/design.md has the contract).
//!
//! The supervisor's loop (`supervise`) turns descriptors into [`Event`]s,
//! calls [`Machine::step`], carries out the [`Effect`]s, and sleeps until
//! the next event or [`Machine::deadline`]: every wait (the restart delay,
//! the readiness timeout, the watchdog, the kill escalation) is that one
//! deadline, never a sleep.
//!
//! The first run is the caller's start, which `supervise` confirms exactly
//! as a plain start is confirmed (`launch`, `ready`); the machine takes
//! over from there ([`Machine::confirmed`]), so it decides only about
//! restarts.
//!
//! Any run that ends before it was healthy counts towards the backoff,
//! an exit 0 under `--restart=always` too: a command that exits at once,
//! successfully or not, must not be restarted in a tight loop.

use std::time::{Duration, Instant};

/// When COMMAND is restarted (`--restart[=POLICY]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Always,
    /// After a failure only: a non-zero exit, a signal other than TERM,
    /// INT, HUP or PIPE, a missed readiness or watchdog deadline (as
    /// systemd's `Restart=on-failure`).
    OnFailure,
    /// Not at all: log capture without `--restart` (the supervisor ends
    /// with COMMAND's first run).
    Never,
}

/// The supervision settings, from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    pub policy: Policy,
    /// The delay before the first restart; doubled for each consecutive
    /// failed run, up to `max_delay`.
    pub delay: Duration,
    pub max_delay: Duration,
    /// Give up after this many consecutive restarts without a healthy run;
    /// 0 never gives up.
    pub max_restarts: u32,
    /// Whether COMMAND declares readiness (`--wait-ready`, `--ready-fd`...).
    pub readiness: bool,
    /// How long a start may take to be ready; `None` waits for ever.
    pub ready_timeout: Option<Duration>,
    /// `--watchdog`: the longest gap allowed between `WATCHDOG=1` pings.
    pub watchdog: Option<Duration>,
    /// How long COMMAND has between the stop signal and SIGKILL.
    pub stop_timeout: Duration,
}

/// A run without readiness that lasts this long was healthy: it resets the
/// restart delay and count (docs/design.md, "Supervision").
pub const HEALTHY_RUN: Duration = Duration::from_secs(10);

/// How a run of COMMAND ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Exited(i32),
    Signaled(i32),
    /// It could not be started (the spawn failed).
    NotStarted,
}

impl End {
    /// Whether this end is a failure (for `on-failure` and the backoff).
    pub fn failed(self) -> bool {
        use nix::libc::{SIGHUP, SIGINT, SIGPIPE, SIGTERM};
        match self {
            End::Exited(code) => code != 0,
            End::Signaled(sig) => ![SIGTERM, SIGINT, SIGHUP, SIGPIPE].contains(&sig),
            End::NotStarted => true,
        }
    }
}

/// Something the loop saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// COMMAND (the current child) ended.
    Exited(End),
    /// COMMAND declared itself ready.
    Ready,
    /// `WATCHDOG=1`.
    Watchdog,
    /// COMMAND said it failed before it was ready (`ERRNO=`, or it closed
    /// its `--ready-fd` without a newline): a failed run, as a missed
    /// readiness deadline is.
    NotReady,
    /// The deadline passed.
    Timer,
    /// TERM or INT to the supervisor, or `--stop`: end supervision. The
    /// signal number goes on to COMMAND.
    Stop(i32),
    /// `--restart-now`.
    RestartNow,
}

/// What the loop must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Start COMMAND (the pidfile then names it).
    Spawn,
    /// Send this signal to COMMAND.
    Signal(i32),
    /// COMMAND is gone and will not be restarted for now: the pidfile is
    /// emptied (docs/design.md, "Supervision": empty while a
    /// restart is pending).
    ClearPid,
    /// Write this to the log/status channel.
    Say(String),
    /// End the supervisor (after cleaning up its pidfiles).
    Exit,
}

/// Where the supervisor is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum State {
    /// COMMAND runs and has not declared itself ready yet.
    Starting { since: Instant },
    /// COMMAND runs (and is ready, if it declares readiness).
    Up {
        since: Instant,
        /// The last sign of life the watchdog counts from.
        pinged: Instant,
    },
    /// COMMAND was sent a signal and will be restarted when it ends
    /// (`--restart-now`, a missed deadline).
    Restarting {
        since: Instant,
        kill_at: Instant,
        killed: bool,
        /// The run counts as failed (a missed deadline).
        failed: bool,
    },
    /// Supervision ends once COMMAND has.
    Stopping { kill_at: Instant, killed: bool },
    /// Waiting out the restart delay.
    Waiting { until: Instant },
    /// Supervision has ended.
    Done,
}

/// The state plus the counters that `--status` shows.
#[derive(Clone, Debug)]
pub struct Machine {
    pub config: Config,
    pub state: State,
    /// Consecutive restarts without a healthy run in between.
    pub streak: u32,
    /// Every restart since the supervisor began.
    pub restarts: u64,
    /// How the last run ended.
    pub last_end: Option<End>,
}

impl Machine {
    /// A machine whose first child was confirmed at `now`: it runs, and is
    /// ready if it declares readiness (a healthy start).
    pub fn confirmed(config: Config, now: Instant) -> Machine {
        Machine {
            config,
            state: State::Up {
                since: now,
                pinged: now,
            },
            streak: 0,
            restarts: 0,
            last_end: None,
        }
    }

    /// A machine whose first child has just been started at `now`.
    #[cfg(test)]
    pub fn started(config: Config, now: Instant) -> Machine {
        let readiness = config.readiness;
        let mut machine = Machine::confirmed(config, now);
        if readiness {
            machine.state = State::Starting { since: now };
        }
        machine
    }

    /// When the loop must wake up with [`Event::Timer`], if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Starting { since } => self.config.ready_timeout.map(|t| since + t),
            State::Up { pinged, .. } => self.config.watchdog.map(|w| pinged + w),
            State::Restarting {
                kill_at, killed, ..
            }
            | State::Stopping { kill_at, killed } => (!killed).then_some(kill_at),
            State::Waiting { until } => Some(until),
            State::Done => None,
        }
    }

    /// The delay before the restart that follows `streak` consecutive
    /// restarts: `delay`, doubled each time, at most `max_delay`.
    pub fn backoff(&self, streak: u32) -> Duration {
        let factor = 2u32.saturating_pow(streak.min(31));
        self.config
            .delay
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.config.max_delay)
    }

    /// Takes one event at time `now` and says what to do.
    pub fn step(&mut self, event: Event, now: Instant) -> Vec<Effect> {
        use State::*;
        let stop_timeout = self.config.stop_timeout;
        match (self.state, event) {
            (Done, _) => Vec::new(),

            (Starting { .. }, Event::Ready) => {
                // Ready is healthy: the backoff starts over.
                self.streak = 0;
                self.state = Up {
                    since: now,
                    pinged: now,
                };
                Vec::new()
            }
            (Up { since, .. }, Event::Watchdog) => {
                self.state = Up { since, pinged: now };
                Vec::new()
            }
            (Starting { since }, Event::Timer) if self.deadline().is_some_and(|d| now >= d) => self
                .fail_run(
                    since,
                    now,
                    "not ready in time: stopping it to restart it",
                    nix::libc::SIGTERM,
                ),
            (Starting { since }, Event::NotReady) => self.fail_run(
                since,
                now,
                "it failed before it was ready: stopping it to restart it",
                nix::libc::SIGTERM,
            ),
            (Up { since, .. }, Event::Timer) if self.deadline().is_some_and(|d| now >= d) => {
                // systemd's watchdog: SIGABRT, so a core shows where it hung.
                self.fail_run(
                    since,
                    now,
                    "watchdog timeout (no WATCHDOG=1 in time): aborting it",
                    nix::libc::SIGABRT,
                )
            }
            (
                Restarting {
                    since,
                    kill_at,
                    killed: false,
                    failed,
                },
                Event::Timer,
            ) if now >= kill_at => {
                self.state = Restarting {
                    since,
                    kill_at,
                    killed: true,
                    failed,
                };
                vec![
                    Effect::Say("still running after the stop timeout: SIGKILL".into()),
                    Effect::Signal(nix::libc::SIGKILL),
                ]
            }
            (
                Stopping {
                    kill_at,
                    killed: false,
                },
                Event::Timer,
            ) if now >= kill_at => {
                self.state = Stopping {
                    kill_at,
                    killed: true,
                };
                vec![
                    Effect::Say("still running after the stop timeout: SIGKILL".into()),
                    Effect::Signal(nix::libc::SIGKILL),
                ]
            }
            (Waiting { until }, Event::Timer) if now >= until => self.spawn(now),

            (Starting { .. } | Up { .. } | Restarting { .. }, Event::Stop(signal)) => {
                self.state = Stopping {
                    kill_at: now + stop_timeout,
                    killed: false,
                };
                vec![Effect::Signal(signal)]
            }
            (Waiting { .. }, Event::Stop(_)) => {
                // No restart may follow a stop, even one already scheduled.
                self.state = Done;
                vec![
                    Effect::Say("stopped while a restart was pending".into()),
                    Effect::Exit,
                ]
            }
            (Stopping { .. }, Event::Stop(_)) => Vec::new(),

            (Starting { since } | Up { since, .. }, Event::RestartNow) => {
                self.state = Restarting {
                    since,
                    kill_at: now + stop_timeout,
                    killed: false,
                    failed: false,
                };
                vec![Effect::Signal(nix::libc::SIGTERM)]
            }
            (Waiting { .. }, Event::RestartNow) => {
                self.streak = 0;
                self.spawn(now)
            }
            (Restarting { .. } | Stopping { .. }, Event::RestartNow) => Vec::new(),

            (Starting { .. }, Event::Exited(end)) => {
                // Ended before it was ready: a failed run whatever its status.
                self.ended(end, true, false, now)
            }
            (Up { since, .. }, Event::Exited(end)) => {
                let healthy =
                    self.config.readiness || now.saturating_duration_since(since) >= HEALTHY_RUN;
                self.ended(end, end.failed(), healthy, now)
            }
            (Restarting { failed, .. }, Event::Exited(end)) => {
                if !failed {
                    // --restart-now: at once, with the backoff reset.
                    self.streak = 0;
                    self.last_end = Some(end);
                    self.restarts += 1;
                    let mut effects =
                        vec![Effect::Say(format!("{}; restarting it now", describe(end)))];
                    effects.extend(self.spawn(now));
                    return effects;
                }
                self.ended(end, true, false, now)
            }
            (Stopping { .. }, Event::Exited(end)) => {
                self.last_end = Some(end);
                self.state = Done;
                vec![
                    Effect::ClearPid,
                    Effect::Say(format!("{}; stopped", describe(end))),
                    Effect::Exit,
                ]
            }

            // Events that mean nothing in this state (a ping before ready,
            // a timer that fired early, a stray exit while waiting).
            _ => Vec::new(),
        }
    }

    /// The running child missed a deadline or said it failed: `why` goes
    /// to the log, `signal` to the child, and its end will be a failed run.
    fn fail_run(&mut self, since: Instant, now: Instant, why: &str, signal: i32) -> Vec<Effect> {
        self.state = State::Restarting {
            since,
            kill_at: now + self.config.stop_timeout,
            killed: false,
            failed: true,
        };
        vec![Effect::Say(why.into()), Effect::Signal(signal)]
    }

    /// A run ended: restart it (after the backoff), or give up, or end.
    fn ended(&mut self, end: End, failed: bool, healthy: bool, now: Instant) -> Vec<Effect> {
        self.last_end = Some(end);
        if healthy {
            self.streak = 0;
        }
        let restart = match self.config.policy {
            Policy::Always => true,
            Policy::OnFailure => failed,
            Policy::Never => false,
        };
        if !restart {
            self.state = State::Done;
            let why = match self.config.policy {
                Policy::Never => "done (no --restart)",
                _ => "not restarting it (on-failure)",
            };
            return vec![
                Effect::ClearPid,
                Effect::Say(format!("{}; {why}", describe(end))),
                Effect::Exit,
            ];
        }
        if self.config.max_restarts > 0 && self.streak >= self.config.max_restarts {
            self.state = State::Done;
            return vec![
                Effect::ClearPid,
                Effect::Say(format!(
                    "{}; giving up after {} restarts without a healthy run (--max-restarts {})",
                    describe(end),
                    self.streak,
                    self.config.max_restarts
                )),
                Effect::Exit,
            ];
        }
        let delay = self.backoff(self.streak);
        self.streak += 1;
        self.restarts += 1;
        let mut effects = vec![
            Effect::ClearPid,
            Effect::Say(format!(
                "{}; restarting it in {:.3} s (restart {})",
                describe(end),
                delay.as_secs_f64(),
                self.restarts
            )),
        ];
        if delay.is_zero() {
            effects.extend(self.spawn(now));
        } else {
            self.state = State::Waiting { until: now + delay };
        }
        effects
    }

    /// Starts COMMAND again: the state a fresh run begins in.
    fn spawn(&mut self, now: Instant) -> Vec<Effect> {
        self.state = match self.config.readiness {
            true => State::Starting { since: now },
            false => State::Up {
                since: now,
                pinged: now,
            },
        };
        vec![Effect::Spawn]
    }
}

/// `exited with status 3`, `was killed by SIGSEGV`, as `--status` shows it.
pub fn describe(end: End) -> String {
    match end {
        End::Exited(code) => format!("exited with status {code}"),
        End::Signaled(sig) => match nix::sys::signal::Signal::try_from(sig) {
            Ok(s) => format!("was killed by {s}"),
            Err(_) => format!("was killed by signal {sig}"),
        },
        End::NotStarted => "could not be started".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::libc::{SIGABRT, SIGINT, SIGKILL, SIGSEGV, SIGTERM};

    fn config() -> Config {
        Config {
            policy: Policy::Always,
            delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            max_restarts: 0,
            readiness: false,
            ready_timeout: None,
            watchdog: None,
            stop_timeout: Duration::from_secs(10),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn kinds(effects: &[Effect]) -> Vec<&'static str> {
        effects
            .iter()
            .map(|e| match e {
                Effect::Spawn => "spawn",
                Effect::Signal(_) => "signal",
                Effect::ClearPid => "clear",
                Effect::Say(_) => "say",
                Effect::Exit => "exit",
            })
            .collect()
    }

    #[test]
    fn the_backoff_doubles_from_the_delay_up_to_the_maximum() {
        let m = Machine::started(
            Config {
                max_delay: Duration::from_secs(1),
                ..config()
            },
            Instant::now(),
        );
        let delays: Vec<u128> = (0..6).map(|k| m.backoff(k).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(m.backoff(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn a_crash_loop_waits_longer_each_time_and_gives_up_after_max_restarts() {
        let t0 = Instant::now();
        let mut m = Machine::started(
            Config {
                max_restarts: 3,
                ..config()
            },
            t0,
        );
        let crash = Event::Exited(End::Exited(1));
        let mut now = ms(0);
        let mut waits = Vec::new();
        for _ in 0..3 {
            now += ms(5);
            let effects = m.step(crash, t0 + now);
            assert_eq!(kinds(&effects), ["clear", "say"]);
            let State::Waiting { until } = m.state else {
                panic!("not waiting: {:?}", m.state)
            };
            waits.push(until - (t0 + now));
            assert_eq!(m.deadline(), Some(until));
            // A timer that fires early changes nothing.
            assert!(m.step(Event::Timer, until - ms(1)).is_empty());
            now = until - t0;
            assert_eq!(kinds(&m.step(Event::Timer, until)), ["spawn"]);
        }
        assert_eq!(waits, [ms(100), ms(200), ms(400)]);
        let effects = m.step(crash, t0 + now + ms(5));
        assert_eq!(kinds(&effects), ["clear", "say", "exit"]);
        assert!(matches!(&effects[1], Effect::Say(s) if s.contains("giving up")));
        assert_eq!(m.state, State::Done);
        assert_eq!(m.restarts, 3);
        assert_eq!(m.last_end, Some(End::Exited(1)));
    }

    #[test]
    fn a_healthy_run_resets_the_delay() {
        let t0 = Instant::now();
        let mut m = Machine::started(config(), t0);
        let crash = Event::Exited(End::Exited(1));
        m.step(crash, t0 + ms(1));
        m.step(Event::Timer, t0 + ms(101));
        m.step(crash, t0 + ms(102));
        let State::Waiting { until } = m.state else {
            panic!()
        };
        assert_eq!(until, t0 + ms(302), "the second delay doubles");
        m.step(Event::Timer, until);
        // This run lasts 10 s: healthy.
        let later = until + HEALTHY_RUN;
        m.step(crash, later);
        assert_eq!(
            m.state,
            State::Waiting {
                until: later + ms(100)
            }
        );
        assert_eq!(m.streak, 1);
    }

    #[test]
    fn readiness_is_health_and_a_start_that_misses_it_is_stopped_and_retried() {
        let t0 = Instant::now();
        let cfg = Config {
            readiness: true,
            ready_timeout: Some(Duration::from_secs(5)),
            ..config()
        };
        let mut m = Machine::started(cfg, t0);
        assert_eq!(m.deadline(), Some(t0 + Duration::from_secs(5)));
        let effects = m.step(Event::Timer, t0 + Duration::from_secs(5));
        assert_eq!(effects.last(), Some(&Effect::Signal(SIGTERM)));
        // It ignores TERM: SIGKILL at the stop timeout.
        let kill_at = t0 + Duration::from_secs(15);
        assert_eq!(m.deadline(), Some(kill_at));
        assert_eq!(
            m.step(Event::Timer, kill_at).last(),
            Some(&Effect::Signal(SIGKILL))
        );
        assert_eq!(m.deadline(), None, "after SIGKILL only its exit is awaited");
        let effects = m.step(Event::Exited(End::Signaled(SIGKILL)), kill_at + ms(1));
        assert_eq!(kinds(&effects), ["clear", "say"]);
        assert!(matches!(m.state, State::Waiting { .. }));
        m.step(Event::Timer, kill_at + ms(101));
        assert!(matches!(m.state, State::Starting { .. }));
        m.step(Event::Ready, kill_at + ms(200));
        assert_eq!(m.streak, 0, "ready resets the backoff");
        assert!(matches!(m.state, State::Up { .. }));
        // Ready and running: an exit 0 under `always` restarts after the
        // first delay.
        m.step(Event::Exited(End::Exited(0)), kill_at + ms(300));
        assert_eq!(
            m.state,
            State::Waiting {
                until: kill_at + ms(400)
            }
        );
    }

    #[test]
    fn on_failure_restarts_only_failures() {
        let table = [
            (End::Exited(0), false),
            (End::Signaled(SIGTERM), false),
            (End::Signaled(SIGINT), false),
            (End::Exited(1), true),
            (End::Signaled(SIGSEGV), true),
            (End::Signaled(SIGKILL), true),
            (End::NotStarted, true),
        ];
        for (end, restarts) in table {
            let t0 = Instant::now();
            let mut m = Machine::started(
                Config {
                    policy: Policy::OnFailure,
                    ..config()
                },
                t0,
            );
            let effects = m.step(Event::Exited(end), t0 + ms(1));
            assert_eq!(
                matches!(m.state, State::Waiting { .. }),
                restarts,
                "{end:?}: {effects:?}"
            );
            assert_eq!(effects.contains(&Effect::Exit), !restarts, "{end:?}");
        }
    }

    #[test]
    fn a_watchdog_miss_aborts_and_restarts_and_pings_keep_it_alive() {
        let t0 = Instant::now();
        let mut m = Machine::started(
            Config {
                readiness: true,
                watchdog: Some(Duration::from_secs(2)),
                ..config()
            },
            t0,
        );
        m.step(Event::Ready, t0 + ms(10));
        m.step(Event::Watchdog, t0 + ms(1500));
        assert_eq!(m.deadline(), Some(t0 + ms(3500)));
        assert!(
            m.step(Event::Timer, t0 + ms(2010)).is_empty(),
            "the ping moved the deadline"
        );
        let effects = m.step(Event::Timer, t0 + ms(3500));
        assert_eq!(effects.last(), Some(&Effect::Signal(SIGABRT)));
        let effects = m.step(Event::Exited(End::Signaled(SIGABRT)), t0 + ms(3600));
        assert_eq!(kinds(&effects), ["clear", "say"]);
        assert_eq!(m.restarts, 1);
    }

    #[test]
    fn a_stop_during_the_delay_ends_supervision_with_no_further_start() {
        let t0 = Instant::now();
        let mut m = Machine::started(
            Config {
                delay: Duration::from_secs(3600),
                max_delay: Duration::from_secs(3600),
                ..config()
            },
            t0,
        );
        m.step(Event::Exited(End::Exited(1)), t0 + ms(1));
        assert!(matches!(m.state, State::Waiting { .. }));
        assert_eq!(
            m.step(Event::Stop(SIGTERM), t0 + ms(2)),
            [
                Effect::Say("stopped while a restart was pending".into()),
                Effect::Exit
            ]
        );
        assert_eq!(m.state, State::Done);
        assert!(
            m.step(Event::Timer, t0 + Duration::from_secs(3601))
                .is_empty()
        );
        assert_eq!(m.deadline(), None);
    }

    #[test]
    fn a_stop_forwards_the_signal_and_never_restarts_whatever_the_end() {
        let t0 = Instant::now();
        let mut m = Machine::started(config(), t0);
        assert_eq!(
            m.step(Event::Stop(SIGINT), t0 + ms(1)),
            [Effect::Signal(SIGINT)]
        );
        assert!(m.step(Event::RestartNow, t0 + ms(2)).is_empty());
        let effects = m.step(Event::Exited(End::Exited(1)), t0 + ms(3));
        assert_eq!(kinds(&effects), ["clear", "say", "exit"]);
        assert_eq!(m.restarts, 0);
    }

    #[test]
    fn restart_now_restarts_at_once_with_the_backoff_reset() {
        let t0 = Instant::now();
        let mut m = Machine::started(config(), t0);
        m.step(Event::Exited(End::Exited(1)), t0 + ms(1));
        m.step(Event::Timer, t0 + ms(101));
        m.step(Event::Exited(End::Exited(1)), t0 + ms(102));
        assert_eq!(m.streak, 2);
        // While waiting: at once.
        assert_eq!(m.step(Event::RestartNow, t0 + ms(103)), [Effect::Spawn]);
        assert_eq!(m.streak, 0);
        // While running: TERM, then a start as soon as it has ended.
        assert_eq!(
            m.step(Event::RestartNow, t0 + ms(104)),
            [Effect::Signal(SIGTERM)]
        );
        let effects = m.step(Event::Exited(End::Signaled(SIGTERM)), t0 + ms(105));
        assert_eq!(kinds(&effects), ["say", "spawn"]);
        assert_eq!(m.restarts, 3);
    }

    #[test]
    fn a_confirmed_start_is_up_and_a_failure_before_ready_is_a_failed_run() {
        let t0 = Instant::now();
        let cfg = Config {
            readiness: true,
            watchdog: Some(Duration::from_secs(1)),
            ..config()
        };
        let mut m = Machine::confirmed(cfg, t0);
        assert!(matches!(m.state, State::Up { .. }));
        assert_eq!(m.deadline(), Some(t0 + Duration::from_secs(1)));
        // Ready, then ended: healthy, so the first delay.
        m.step(Event::Exited(End::Exited(1)), t0 + ms(500));
        assert_eq!(
            m.state,
            State::Waiting {
                until: t0 + ms(600)
            }
        );
        m.step(Event::Timer, t0 + ms(600));
        assert!(matches!(m.state, State::Starting { .. }));
        let effects = m.step(Event::NotReady, t0 + ms(700));
        assert_eq!(effects.last(), Some(&Effect::Signal(SIGTERM)));
        let effects = m.step(Event::Exited(End::Signaled(SIGTERM)), t0 + ms(710));
        assert_eq!(kinds(&effects), ["clear", "say"]);
        assert_eq!(
            m.state,
            State::Waiting {
                until: t0 + ms(910)
            }
        );
        // A ping or NotReady means nothing while waiting.
        assert!(m.step(Event::NotReady, t0 + ms(720)).is_empty());
        assert!(m.step(Event::Watchdog, t0 + ms(720)).is_empty());
    }

    #[test]
    fn a_zero_delay_restarts_in_the_same_step() {
        let t0 = Instant::now();
        let mut m = Machine::started(
            Config {
                delay: Duration::ZERO,
                ..config()
            },
            t0,
        );
        let effects = m.step(Event::Exited(End::Exited(1)), t0 + ms(1));
        assert_eq!(kinds(&effects), ["clear", "say", "spawn"]);
        assert!(matches!(m.state, State::Up { .. }));
    }
}
