//! Who this process is, and whether a process seen in a lease is still alive.
//!
//! A lease names its holder's process so that, on the same host (and PID namespace), a run
//! that was killed outright (`kill -9`, the OOM killer) frees its database at once instead of
//! after a heartbeat timeout. The pid alone is not enough (pids are reused), so the process's
//! start time goes with it. Only Linux's `/proc` is read; elsewhere the identity is unknown and
//! the heartbeat alone decides.

use std::sync::OnceLock;

use crate::model::ProcessIdentity;

/// This process, or `None` where `/proc` cannot tell.
pub fn current() -> Option<ProcessIdentity> {
    static CURRENT: OnceLock<Option<ProcessIdentity>> = OnceLock::new();
    CURRENT
        .get_or_init(|| {
            let pid = std::process::id();
            Some(ProcessIdentity {
                host: host()?,
                pid,
                started: match stat(pid) {
                    Stat::Alive(started) => started,
                    Stat::Gone | Stat::Unknown => return None,
                },
            })
        })
        .clone()
}

/// Whether `process` is known to be gone: it ran on this host and namespace, and no process
/// with its pid and start time is alive (a zombie counts as gone). `false` when it cannot be
/// told (another host, `/proc` unreadable).
pub fn is_gone(process: &ProcessIdentity) -> bool {
    match current() {
        Some(me) if me.host == process.host => match stat(process.pid) {
            Stat::Alive(started) => started != process.started,
            Stat::Gone => true,
            Stat::Unknown => false,
        },
        _ => false,
    }
}

fn host() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let namespace = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{} {}", name.trim(), namespace.display()))
}

enum Stat {
    /// Running (or sleeping, stopped…), started at this many ticks after boot.
    Alive(u64),
    /// No such process, or a zombie.
    Gone,
    /// `/proc` would not say.
    Unknown,
}

fn stat(pid: u32) -> Stat {
    let text = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Stat::Gone,
        Err(_) => return Stat::Unknown,
    };
    // `pid (comm) state ...`: comm may hold spaces and parentheses, so split after the last ')'.
    let Some((_, rest)) = text.rsplit_once(')') else {
        return Stat::Unknown;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); the start time is field 22.
    match (fields.first(), fields.get(19).and_then(|s| s.parse().ok())) {
        (Some(&("Z" | "X" | "x")), _) => Stat::Gone,
        (Some(_), Some(started)) => Stat::Alive(started),
        _ => Stat::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_another_process() {
        let Some(me) = current() else { return };
        assert!(!is_gone(&me));
        let reused = ProcessIdentity {
            started: me.started + 1,
            ..me.clone()
        };
        assert!(
            is_gone(&reused),
            "same pid, other start time: not the holder"
        );
        let elsewhere = ProcessIdentity {
            host: "another host".into(),
            pid: u32::MAX - 1,
            ..me.clone()
        };
        assert!(
            !is_gone(&elsewhere),
            "another host cannot be judged from here"
        );
    }

    #[test]
    fn an_exited_child_is_gone() {
        let Some(me) = current() else { return };
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let gone = ProcessIdentity { pid, ..me };
        assert!(is_gone(&gone));
    }
}
