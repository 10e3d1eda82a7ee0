//! Small OS and quoting helpers the harness needs (no extra crates).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The effective uid of this process (Linux: from /proc/self/status).
pub(crate) fn euid() -> Result<u32> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("Uid:") {
            // real, effective, saved, filesystem
            let effective = rest
                .split_whitespace()
                .nth(1)
                .context("malformed Uid: line in /proc/self/status")?;
            return effective
                .parse()
                .with_context(|| format!("parsing effective uid {effective:?}"));
        }
    }
    bail!("no Uid: line in /proc/self/status")
}

/// uid and primary gid of a system user, from /etc/passwd.
pub(crate) fn lookup_user(name: &str) -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == name {
            let uid = fields[2].parse().context("parsing uid in /etc/passwd")?;
            let gid = fields[3].parse().context("parsing gid in /etc/passwd")?;
            return Ok((uid, gid));
        }
    }
    bail!(
        "user {name:?} not found in /etc/passwd; when running as root the PostgreSQL server \
         runs as {name:?} (install the postgresql packages, which create it)"
    )
}

/// `n` random bytes as lower-case hex, from /dev/urandom.
pub(crate) fn random_hex(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Percent-encode everything except RFC 3986 unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An SQL identifier, double-quoted.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A libpq connection-string value, single-quoted.
pub(crate) fn conninfo_value(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Remove inherited libpq/server environment variables (`PG*`, but not `PGKEEP_*`) so that
/// nothing from the caller's environment redirects a child to another server.
pub(crate) fn scrub_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if let Some(k) = key.to_str() {
            if k.starts_with("PG") && !k.starts_with("PGKEEP_") {
                cmd.env_remove(k);
            }
        }
    }
}

/// The directory of `program` found on PATH, with symlinks resolved.
pub(crate) fn which_dir(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .and_then(|found| std::fs::canonicalize(found).ok())
        .and_then(|real| real.parent().map(Path::to_path_buf))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(percent_encode("a b/'c;"), "a%20b%2F%27c%3B");
        assert_eq!(percent_encode("ü"), "%C3%BC");
        assert_eq!(quote_ident(r#"a "b""#), r#""a ""b""""#);
        assert_eq!(conninfo_value(r"a'b\c"), r"'a\'b\\c'");
    }

    #[test]
    fn ids() {
        euid().unwrap();
        assert_eq!(random_hex(8).unwrap().len(), 16);
    }
}
