//! `--user` and `--group`: resolved to numeric ids and a supplementary group
//! list before fork, through the system user database (NSS may load modules,
//! allocate and open sockets, so it must never run after fork).
//!
//! The fork code only sees [`Credentials`]; it calls `setgroups`, then
//! `setresgid`, then `setresuid`, so that real, effective, saved and
//! filesystem ids all change and root cannot be regained.

use std::ffi::{CString, OsString};

use anyhow::{Context, anyhow, bail};
use nix::unistd::{Gid, Group, Uid, User, getegid, geteuid, getgid, getuid};

/// Who the daemon runs as.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The user as given (`app` or `1001`), for messages.
    pub shown: String,
    pub uid: Uid,
    pub gid: Gid,
    /// The complete supplementary group list, for `setgroups`.
    pub groups: Vec<Gid>,
    /// Whether the ids differ from ours. A non-root caller may name itself.
    pub change: bool,
    /// `HOME`, `USER`, `LOGNAME`, `SHELL` for the daemon, unless `-E` sets them.
    pub env: Vec<(OsString, OsString)>,
}

/// bmc/daemonize refuses to run setuid or setgid; so do we: every option
/// here would become a way to act as the file's owner.
pub fn refuse_setid() -> anyhow::Result<()> {
    if getuid() != geteuid() || getgid() != getegid() {
        bail!("refusing to run setuid or setgid (real and effective ids differ)");
    }
    Ok(())
}

pub fn resolve(user: Option<&str>, group: Option<&str>) -> anyhow::Result<Option<Credentials>> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    crate::sys::nss_files_only_if_static();
    let group = group.map(lookup_group).transpose()?;
    let creds = match user {
        Some(spec) => {
            let (uid, entry) = lookup_user(spec)?;
            match entry {
                Some(entry) => {
                    // `-g` replaces the primary group, as initgroups(3) would
                    // be told by start-stop-daemon --chuid user:group.
                    let gid = group.unwrap_or(entry.gid);
                    let name = CString::new(entry.name.as_bytes())
                        .context("user name contains a NUL byte")?;
                    let groups = nix::unistd::getgrouplist(&name, gid).with_context(|| {
                        format!("cannot list the groups of user '{}'", entry.name)
                    })?;
                    let mut env = vec![
                        ("HOME".into(), entry.dir.clone().into_os_string()),
                        ("USER".into(), entry.name.clone().into()),
                        ("LOGNAME".into(), entry.name.clone().into()),
                    ];
                    // passwd(5): an empty shell field means /bin/sh.
                    let shell = match entry.shell.as_os_str().is_empty() {
                        true => "/bin/sh".into(),
                        false => entry.shell.clone().into_os_string(),
                    };
                    env.push(("SHELL".into(), shell));
                    Credentials {
                        shown: spec.to_owned(),
                        uid,
                        gid,
                        groups,
                        change: true,
                        env,
                    }
                }
                None => {
                    // No entry: the primary group is --group, or else the
                    // group with the same number (never the caller's, which
                    // would leak root's group).
                    let gid = group.unwrap_or(Gid::from_raw(uid.as_raw()));
                    let env = vec![
                        ("HOME".into(), "/".into()),
                        ("USER".into(), uid.to_string().into()),
                        ("LOGNAME".into(), uid.to_string().into()),
                        ("SHELL".into(), "/bin/sh".into()),
                    ];
                    Credentials {
                        shown: spec.to_owned(),
                        uid,
                        gid,
                        groups: vec![gid],
                        change: true,
                        env,
                    }
                }
            }
        }
        None => {
            let gid = group.expect("checked above: a user or a group");
            Credentials {
                shown: getuid().to_string(),
                uid: getuid(),
                gid,
                groups: vec![gid],
                change: true,
                env: Vec::new(),
            }
        }
    };
    let creds = check_allowed(creds)?;
    tracing::debug!(
        uid = creds.uid.as_raw(),
        gid = creds.gid.as_raw(),
        groups = ?creds.groups,
        "user resolved"
    );
    Ok(Some(creds))
}

/// Only root can switch ids; anyone may "switch" to the ids they already have.
fn check_allowed(mut creds: Credentials) -> anyhow::Result<Credentials> {
    if geteuid().is_root() {
        return Ok(creds);
    }
    let current_groups = nix::unistd::getgroups().unwrap_or_default();
    let same = creds.uid == getuid()
        && creds.gid == getgid()
        && creds
            .groups
            .iter()
            .all(|g| *g == creds.gid || current_groups.contains(g));
    if !same {
        bail!(
            "cannot run as user '{}' (uid {}, gid {}): only root can change the user or group",
            creds.shown,
            creds.uid,
            creds.gid
        );
    }
    creds.change = false;
    Ok(creds)
}

/// A name first (a user may be called `1001`), then a number, which need
/// not have an entry.
fn lookup_user(spec: &str) -> anyhow::Result<(Uid, Option<User>)> {
    let by_name = User::from_name(spec).with_context(|| format!("cannot look up user '{spec}'"))?;
    if let Some(user) = by_name {
        return Ok((user.uid, Some(user)));
    }
    let uid = spec
        .parse::<u32>()
        .map(Uid::from_raw)
        .map_err(|_| anyhow!("unknown user '{spec}'"))?;
    let entry = User::from_uid(uid).with_context(|| format!("cannot look up uid {uid}"))?;
    Ok((uid, entry))
}

fn lookup_group(spec: &str) -> anyhow::Result<Gid> {
    let by_name =
        Group::from_name(spec).with_context(|| format!("cannot look up group '{spec}'"))?;
    if let Some(group) = by_name {
        return Ok(group.gid);
    }
    spec.parse::<u32>()
        .map(Gid::from_raw)
        .map_err(|_| anyhow!("unknown group '{spec}'"))
}
