//! Talking to PostgreSQL: connection settings, the server's version, and which client binaries
//! (pg_dump, pg_restore) to run against it.
//!
//! Credentials reach child processes only through their environment (`PGPASSWORD`) or the
//! user's passfile, never their argument vector, so they never show in `ps`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config, NoTls};

pub mod auth;
pub mod rds_iam;
pub mod tls;

use rds_iam::RdsIamAuth;

/// Why PostgreSQL could not be reached or used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The connection string does not parse.
    #[error("invalid database URL: {0} (expected postgresql://user@host:port/database)")]
    BadUrl(String),
    /// The server refused or could not be reached.
    #[error("cannot connect to {target}: {message}")]
    Connect {
        /// The target without its password.
        target: String,
        /// The server's or network's reason.
        message: String,
    },
    /// A query failed.
    #[error("query on {target} failed: {message}")]
    Query {
        /// The target without its password.
        target: String,
        /// The server's reason.
        message: String,
    },
    /// No suitable client binary.
    #[error("{0}")]
    Tool(String),
    /// The credentials for a connection could not be made (an RDS IAM token).
    #[error("{0}")]
    Auth(String),
    /// TLS could not be set up (an unreadable CA bundle).
    #[error("{0}")]
    Tls(String),
}

/// Where a target's password comes from, per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The URL's password, `PGPASSWORD` or the passfile, as libpq looks for one.
    Password,
    /// A fresh RDS IAM auth token for every connection (TLS required).
    RdsIamToken,
}

/// Where and how to connect; the one parsed form of `PGKEEP_DATABASE_URL`.
#[derive(Clone)]
pub struct PgTarget {
    config: Config,
    /// Signs a token per connection instead of a password.
    iam: Option<Arc<RdsIamAuth>>,
    /// CA bundle the server is verified against (`verify-full`); `None`: not verified.
    root_cert: Option<PathBuf>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl PgTarget {
    /// Parses a URL (`postgresql://…`) or a libpq key/value string.
    pub fn parse(url: &str) -> Result<Self, PgError> {
        let config = Config::from_str(url).map_err(|e| PgError::BadUrl(e.to_string()))?;
        if config.get_hosts().is_empty() {
            return Err(PgError::BadUrl("no host given".into()));
        }
        if config.get_dbname().is_none() {
            return Err(PgError::BadUrl("no database name given".into()));
        }
        Ok(PgTarget {
            config,
            iam: None,
            root_cert: None,
        })
    }

    /// A target from separate settings (a Secrets Manager secret), with no URL to escape.
    pub fn from_parts(host: &str, port: u16, user: &str, password: &str, database: &str) -> Self {
        let mut config = Config::new();
        config
            .host(host)
            .port(port)
            .user(user)
            .password(password)
            .dbname(database);
        PgTarget {
            config,
            iam: None,
            root_cert: None,
        }
    }

    /// What RDS IAM authentication needs from a URL, or why this one does not do: one TCP
    /// host, one port (5432 unless given), an explicit user, a database, and no password (the
    /// token replaces it). Returns the host, port and user.
    pub fn iam_endpoint(&self) -> Result<(String, u16, String), String> {
        let hosts = self.config.get_hosts();
        let host = match hosts {
            [Host::Tcp(host)] => host.clone(),
            [Host::Unix(_)] => return Err("a TCP host, not a Unix socket".into()),
            _ => return Err("exactly one host".into()),
        };
        let port = match self.config.get_ports() {
            [port] => *port,
            [] => 5432,
            _ => return Err("exactly one port".into()),
        };
        let user = self
            .config
            .get_user()
            .filter(|u| !u.is_empty())
            .ok_or("the database user (postgresql://USER@host:5432/db)")?;
        if self.config.get_password().is_some() {
            return Err("no password: the IAM token replaces it".into());
        }
        Ok((host, port, user.to_owned()))
    }

    /// The same target, authenticating with RDS IAM tokens from `auth` and requiring TLS:
    /// `verify-full` against `root_cert` when given, else `require`.
    pub fn with_rds_iam(mut self, auth: RdsIamAuth, root_cert: Option<PathBuf>) -> Self {
        self.config.ssl_mode(SslMode::Require);
        self.iam = Some(Arc::new(auth));
        self.root_cert = root_cert;
        self
    }

    /// Where each connection's password comes from.
    pub fn credential(&self) -> Credential {
        if self.iam.is_some() {
            Credential::RdsIamToken
        } else {
            Credential::Password
        }
    }

    /// Whether connections must be encrypted (`sslmode=require` or stronger).
    pub fn requires_tls(&self) -> bool {
        self.config.get_ssl_mode() == SslMode::Require
    }

    /// libpq's `sslmode` for the client tools, when pgkeep decides it.
    fn sslmode(&self) -> Option<&'static str> {
        match (self.config.get_ssl_mode(), &self.root_cert) {
            (SslMode::Require, Some(_)) => Some("verify-full"),
            (SslMode::Require, None) => Some("require"),
            (SslMode::Disable, _) => Some("disable"),
            _ => None,
        }
    }

    /// The password of a connection starting now: a fresh IAM token, else none from here
    /// (libpq and [`PgTarget::connect`] look in the URL, `PGPASSWORD` and the passfile).
    fn iam_token(&self) -> Result<Option<String>, PgError> {
        self.iam
            .as_ref()
            .map(|auth| auth.token(SystemTime::now()))
            .transpose()
    }

    /// The first TCP host, if any (to combine a URL with a secret that lacks one).
    pub fn host(&self) -> Option<String> {
        self.config.get_hosts().iter().find_map(|h| match h {
            Host::Tcp(name) => Some(name.clone()),
            Host::Unix(_) => None,
        })
    }

    /// The first port, if the URL gave one.
    pub fn port(&self) -> Option<u16> {
        self.config.get_ports().first().copied()
    }

    /// The database this target names.
    pub fn database(&self) -> &str {
        self.config.get_dbname().unwrap_or_default()
    }

    /// The same server and credentials, another database.
    pub fn with_database(&self, database: &str) -> Self {
        let mut target = self.clone();
        target.config.dbname(database);
        target
    }

    /// The role name used to connect.
    pub fn user(&self) -> String {
        self.config
            .get_user()
            .map(str::to_owned)
            .or_else(|| std::env::var("PGUSER").ok())
            .unwrap_or_else(|| "postgres".into())
    }

    /// Whether the URL itself carries a password (so a caller can warn about argv exposure).
    pub fn has_password(&self) -> bool {
        self.config.get_password().is_some()
    }

    fn hosts(&self) -> String {
        self.config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    fn ports(&self) -> String {
        let ports = self.config.get_ports();
        if ports.is_empty() {
            "5432".into()
        } else {
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
    }

    /// `postgresql://user@host:port/database`: safe to print and log.
    pub fn redacted(&self) -> String {
        format!(
            "postgresql://{}@{}:{}/{}",
            self.user(),
            self.hosts(),
            self.ports(),
            self.database()
        )
    }

    /// The password: from the URL, else `PGPASSWORD`, else the passfile, as libpq would.
    fn password(&self) -> Option<Vec<u8>> {
        if let Some(p) = self.config.get_password() {
            return Some(p.to_vec());
        }
        if let Ok(p) = std::env::var("PGPASSWORD") {
            return Some(p.into_bytes());
        }
        let first_host = self
            .hosts()
            .split(',')
            .next()
            .unwrap_or_default()
            .to_owned();
        let first_port = self.ports().split(',').next().unwrap_or("5432").to_owned();
        passfile_lookup(&first_host, &first_port, self.database(), &self.user())
            .map(String::into_bytes)
    }

    /// Sets libpq's environment on a client command (pg_dump, pg_restore, psql) so it connects
    /// to this target; the password (or a fresh IAM token) goes in `PGPASSWORD`, never in
    /// arguments. Fails only when an IAM token cannot be made.
    pub fn apply_env(&self, cmd: &mut tokio::process::Command) -> Result<(), PgError> {
        cmd.env("PGHOST", self.hosts())
            .env("PGPORT", self.ports())
            .env("PGUSER", self.user())
            .env("PGDATABASE", self.database())
            .env("PGAPPNAME", "pgkeep")
            .env("PGCONNECT_TIMEOUT", "30");
        if let Some(token) = self.iam_token()? {
            cmd.env("PGPASSWORD", token);
        } else if let Some(pw) = self.config.get_password() {
            cmd.env("PGPASSWORD", String::from_utf8_lossy(pw).into_owned());
        }
        if let Some(mode) = self.sslmode() {
            cmd.env("PGSSLMODE", mode);
        }
        if let Some(root) = &self.root_cert {
            cmd.env("PGSSLROOTCERT", root);
        }
        Ok(())
    }

    /// Opens a connection (TLS when the target requires it, else plain TCP or a Unix
    /// socket); the connection task runs in the background.
    pub async fn connect(&self) -> Result<Client, PgError> {
        let mut config = self.config.clone();
        if let Some(token) = self.iam_token()? {
            config.password(token);
        } else if config.get_password().is_none() {
            if let Some(pw) = self.password() {
                config.password(pw);
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(30));
        }
        config.application_name("pgkeep");
        let connect_error = |e: tokio_postgres::Error| PgError::Connect {
            target: self.redacted(),
            message: describe(&e),
        };
        let client = if self.requires_tls() {
            let tls = tls::connector(self.root_cert.as_deref())?;
            let (client, connection) = config.connect(tls).await.map_err(connect_error)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "database connection closed with an error");
                }
            });
            client
        } else {
            let (client, connection) = config.connect(NoTls).await.map_err(connect_error)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "database connection closed with an error");
                }
            });
            client
        };
        Ok(client)
    }

    /// The error for a failed query on this target.
    pub fn query_error(&self, e: &tokio_postgres::Error) -> PgError {
        PgError::Query {
            target: self.redacted(),
            message: describe(e),
        }
    }
}

/// The server's message when there is one (e.g. `database "x" does not exist`), else the
/// client's (e.g. connection refused).
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_owned();
    }
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

/// Reads the passfile (`PGPASSFILE` or `~/.pgpass`) the way libpq does: the first line whose
/// host, port, database and user match (`*` matches anything; `\:` and `\\` escape).
fn passfile_lookup(host: &str, port: &str, database: &str, user: &str) -> Option<String> {
    let path = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pgpass")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let host = if host.starts_with('/') {
        "localhost"
    } else {
        host
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass(line);
            if fields.len() != 5 {
                return None;
            }
            let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
            (matches(&fields[0], host)
                && matches(&fields[1], port)
                && matches(&fields[2], database)
                && matches(&fields[3], user))
            .then(|| fields[4].clone())
        })
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("non-empty").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("non-empty").push(c),
        }
    }
    fields
}

/// The server's version, as pgkeep needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    /// `SHOW server_version`, e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub text: String,
    /// The major version, e.g. 15.
    pub major: u32,
}

/// Asks the server for its version.
pub async fn server_version(target: &PgTarget, client: &Client) -> Result<ServerVersion, PgError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int",
            &[],
        )
        .await
        .map_err(|e| target.query_error(&e))?;
    let text: String = row.get(0);
    let num: i32 = row.get(1);
    Ok(ServerVersion {
        text,
        major: (num / 10000) as u32,
    })
}

/// Finds a PostgreSQL client binary fit for a server of major version `server_major`.
///
/// Candidates: the configured directories (`PGKEEP_PG_BIN`, one directory or a `:`-separated
/// list, like `PATH`) alone when set; otherwise `/usr/lib/postgresql/<N>/bin` (the
/// Debian/Ubuntu layout, several majors side by side), then `PATH`. Of those, the server's own
/// major wins, else the newest newer one: an older pg_dump refuses or misreads newer servers,
/// and a newer one reads older servers (the first candidate wins a tie).
pub async fn locate_tool(
    tool: &str,
    configured: Option<&Path>,
    server_major: u32,
) -> Result<PathBuf, PgError> {
    Ok(locate_tool_with_major(tool, configured, server_major)
        .await?
        .0)
}

/// [`locate_tool`], with the found tool's major version.
pub async fn locate_tool_with_major(
    tool: &str,
    configured: Option<&Path>,
    server_major: u32,
) -> Result<(PathBuf, u32), PgError> {
    let candidates: Vec<PathBuf> = match configured {
        Some(dirs) => std::env::split_paths(dirs).map(|d| d.join(tool)).collect(),
        None => {
            let mut majors: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect();
            majors.sort();
            let mut c: Vec<PathBuf> = majors
                .iter()
                .map(|m| PathBuf::from(format!("/usr/lib/postgresql/{m}/bin/{tool}")))
                .collect();
            if let Some(path) = std::env::var_os("PATH") {
                c.extend(std::env::split_paths(&path).map(|d| d.join(tool)));
            }
            c
        }
    };
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    for candidate in candidates.iter().filter(|c| c.is_file()) {
        found.push((tool_major_version(candidate).await?, candidate.clone()));
    }
    let exact = found.iter().find(|(major, _)| *major == server_major);
    let newest_newer = found
        .iter()
        .filter(|(major, _)| *major > server_major)
        .fold(None::<&(u32, PathBuf)>, |best, c| match best {
            Some(b) if b.0 >= c.0 => Some(b),
            _ => Some(c),
        });
    if let Some((major, path)) = exact.or(newest_newer) {
        return Ok((path.clone(), *major));
    }
    let hint = match configured {
        Some(dirs) => format!("PGKEEP_PG_BIN={} ", dirs.display()),
        None => String::new(),
    };
    let seen: Vec<String> = found
        .iter()
        .map(|(major, path)| format!("{} is version {major}", path.display()))
        .collect();
    Err(PgError::Tool(if seen.is_empty() {
        format!(
            "{tool} not found ({hint}searched /usr/lib/postgresql/*/bin and PATH); install the PostgreSQL {server_major} client tools or set PGKEEP_PG_BIN to their bin directory"
        )
    } else {
        format!(
            "the server runs PostgreSQL {server_major} but {}; {tool} must be the server's major version or newer: install the PostgreSQL {server_major} client tools or set PGKEEP_PG_BIN",
            seen.join(", ")
        )
    }))
}

/// Runs `tool --version` and reads the major version from e.g.
/// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
pub async fn tool_major_version(tool: &Path) -> Result<u32, PgError> {
    let out = tokio::process::Command::new(tool)
        .arg("--version")
        .output()
        .await
        .map_err(|e| PgError::Tool(format!("cannot run {}: {e}", tool.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_tool_major(&text).ok_or_else(|| {
        PgError::Tool(format!(
            "{} --version printed {:?}, which is not a PostgreSQL version",
            tool.display(),
            text.trim()
        ))
    })
}

fn parse_tool_major(text: &str) -> Option<u32> {
    let after = text.split(')').nth(1)?.trim_start();
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(
            parse_tool_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(
            parse_tool_major("pg_restore (PostgreSQL) 9.6.24\n"),
            Some(9)
        );
        assert_eq!(parse_tool_major("pg_dump (PostgreSQL) 17devel\n"), Some(17));
        assert_eq!(parse_tool_major("something else"), None);
    }

    #[test]
    fn urls_parse_and_redact() {
        let t = PgTarget::parse("postgresql://alice:s3cret@db.example:6543/shop").unwrap();
        assert_eq!(t.database(), "shop");
        assert_eq!(t.redacted(), "postgresql://alice@db.example:6543/shop");
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(t.has_password());
        assert_eq!(t.with_database("other").database(), "other");
        assert!(PgTarget::parse("postgresql://alice@db.example/").is_err());
        assert!(PgTarget::parse("not a url at all ::").is_err());
    }

    #[test]
    fn pgpass_lines_split_with_escapes() {
        assert_eq!(
            split_pgpass(r"h:5432:db:u:pa\:ss"),
            vec!["h", "5432", "db", "u", "pa:ss"]
        );
        assert_eq!(
            split_pgpass(r"*:*:*:u:a:b"),
            vec!["*", "*", "*", "u", "a:b"]
        );
    }
}
