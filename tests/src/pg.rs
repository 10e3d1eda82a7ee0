//! A throwaway PostgreSQL cluster: `initdb` into a temp dir, `pg_ctl -w start`, stop and delete
//! on drop.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

use crate::sys;

const SUPERUSER: &str = "pgkeep_admin";
const HOST: &str = "127.0.0.1";
const START_ATTEMPTS: usize = 5;

/// A throwaway PostgreSQL cluster for one test (or one test run): stopped and deleted on drop.
///
/// The server listens only on 127.0.0.1 (scram-sha-256 password authentication) and on a unix
/// socket inside its own temp dir (trust). Durability is switched off for speed. When the test
/// runs as root, the server runs as the `postgres` system user (PostgreSQL refuses root).
pub struct PgCluster {
    /// `None` only while dropping.
    root: Option<tempfile::TempDir>,
    root_path: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    bin_dir: PathBuf,
    /// Where psql, pg_restore and pgbench come from (the server's own directory unless a
    /// server-only distribution needs another major's client tools).
    client_dir: PathBuf,
    port: u16,
    password: String,
    /// uid/gid the server runs as, when we are root.
    run_as: Option<(u32, u32)>,
}

impl fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgCluster")
            .field("data_dir", &self.data_dir)
            .field("bin_dir", &self.bin_dir)
            .field("host", &HOST)
            .field("port", &self.port)
            .field("user", &SUPERUSER)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl PgCluster {
    /// initdb into a fresh temp dir and start the server on a free loopback port (`pg_ctl -w`).
    pub fn start() -> Result<PgCluster> {
        let bin_dir = find_bin_dir()?;
        Self::start_with(&bin_dir, &bin_dir)
    }

    /// Like [`PgCluster::start`], with the server binaries from `bin_dir` and the client tools
    /// (psql, pg_restore, pgbench) from `client_dir`.
    pub fn start_with(bin_dir: &Path, client_dir: &Path) -> Result<PgCluster> {
        let bin_dir = bin_dir.to_path_buf();
        let client_dir = client_dir.to_path_buf();
        let run_as = if sys::euid()? == 0 {
            Some(sys::lookup_user("postgres")?)
        } else {
            None
        };

        let root = tempfile::Builder::new()
            .prefix("pgkeep-pg-")
            .tempdir()
            .context("creating the cluster's temp dir")?;
        let root_path = root.path().to_path_buf();
        let mut cluster = PgCluster {
            data_dir: root_path.join("data"),
            socket_dir: root_path.join("run"),
            log_file: root_path.join("server.log"),
            root: Some(root),
            root_path,
            bin_dir,
            client_dir,
            port: 0,
            password: sys::random_hex(24)?,
            run_as,
        };
        // From here on, an early return drops `cluster`, which stops a started server and
        // removes the temp dir.
        cluster.init()?;
        cluster.start_server()?;
        Ok(cluster)
    }

    fn init(&self) -> Result<()> {
        std::fs::create_dir(&self.socket_dir).context("creating the socket dir")?;
        let pwfile = self.root_path.join("pwfile");
        std::fs::write(&pwfile, format!("{}\n", self.password)).context("writing pwfile")?;
        for path in [&self.root_path, &self.socket_dir, &pwfile] {
            self.give_to_server_user(path)?;
        }

        let out = self
            .server_command("initdb")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["--no-sync", "-E", "UTF8", "--locale=C", "-U", SUPERUSER])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--auth-host=scram-sha-256", "--auth-local=trust"])
            .output()
            .context("running initdb")?;
        let _ = std::fs::remove_file(&pwfile);
        check_output("initdb", &out)?;

        let conf = self.data_dir.join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .with_context(|| format!("opening {}", conf.display()))?;
        writeln!(f, "\n# pgkeep test harness\ninclude 'pgkeep.conf'")?;
        Ok(())
    }

    /// Write pgkeep.conf for `port` and `pg_ctl -w start`; retry on another port when the one we
    /// picked was taken in the meantime.
    fn start_server(&mut self) -> Result<()> {
        for attempt in 1..=START_ATTEMPTS {
            self.port = free_port()?;
            self.write_conf()?;
            let log_len_before = std::fs::metadata(&self.log_file)
                .map(|m| m.len())
                .unwrap_or(0);
            let out = self
                .server_command("pg_ctl")
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&self.log_file)
                .args(["-w", "-t", "120", "start"])
                .output()
                .context("running pg_ctl start")?;
            if out.status.success() {
                return Ok(());
            }
            let log = std::fs::read(&self.log_file).unwrap_or_default();
            let new_log = String::from_utf8_lossy(&log[(log_len_before as usize).min(log.len())..]);
            let port_taken = new_log.contains("could not bind")
                || new_log.contains("Address already in use")
                || new_log.contains("could not create any TCP/IP sockets");
            if port_taken && attempt < START_ATTEMPTS {
                continue;
            }
            bail!(
                "pg_ctl start failed ({}) on port {}:\n{}{}\n--- server log ---\n{}",
                out.status,
                self.port,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                new_log.trim_end()
            );
        }
        unreachable!("the last attempt returns")
    }

    fn write_conf(&self) -> Result<()> {
        let socket_dir = self
            .socket_dir
            .to_str()
            .context("socket dir path is not UTF-8")?
            .replace('\'', "''");
        let conf = format!(
            "listen_addresses = '{HOST}'\n\
             port = {port}\n\
             unix_socket_directories = '{socket_dir}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             max_connections = 60\n\
             max_wal_size = '1GB'\n\
             password_encryption = 'scram-sha-256'\n\
             log_min_messages = warning\n",
            port = self.port,
        );
        let path = self.data_dir.join("pgkeep.conf");
        std::fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))?;
        self.give_to_server_user(&path)
    }

    fn give_to_server_user(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("chown {} to postgres", path.display()))?;
        }
        Ok(())
    }

    /// A server-side binary (initdb, pg_ctl) run as the server user, with a clean environment.
    fn server_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        sys::scrub_pg_env(&mut cmd);
        cmd.current_dir(&self.root_path).stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// The directory the PostgreSQL binaries come from: `PGKEEP_PG_BIN` if set, else the newest
    /// `/usr/lib/postgresql/<N>/bin`, else the directory of `initdb` on PATH.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }
    pub fn host(&self) -> &str {
        HOST
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn user(&self) -> &str {
        SUPERUSER
    }
    pub fn password(&self) -> &str {
        &self.password
    }
    /// The cluster's data directory (gone after drop).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    /// The server log (useful when a test fails).
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// `postgresql://user:password@127.0.0.1:port/database`, every component percent-encoded.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://{}:{}@{}:{}/{}",
            sys::percent_encode(SUPERUSER),
            sys::percent_encode(&self.password),
            HOST,
            self.port,
            sys::percent_encode(database)
        )
    }

    /// A client binary from [`bin_dir`](Self::bin_dir) with `PGHOST`/`PGPORT`/`PGUSER`/
    /// `PGPASSWORD` set (TCP to 127.0.0.1, so scram authentication is exercised) and every other
    /// inherited `PG*` variable removed.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.client_dir.join(program));
        sys::scrub_pg_env(&mut cmd);
        cmd.env("PGHOST", HOST)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", SUPERUSER)
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "30");
        cmd
    }

    /// `pgbench ARGS... DBNAME` against `database` (password via the environment). The database
    /// is appended as a quoted conninfo string, so any name works; do not pass one in `args`.
    pub fn pgbench(&self, database: &str, args: &[&str]) -> Command {
        let mut cmd = self.command("pgbench");
        cmd.args(args)
            .arg(format!("dbname={}", sys::conninfo_value(database)));
        cmd
    }

    /// A psql session holding ACCESS EXCLUSIVE on `table` (an SQL name, quoted by the
    /// caller) of `database` in an open transaction, as a migration would: a pg_dump waits
    /// for it. Killing the returned session releases the lock.
    pub fn hold_lock(&self, database: &str, table: &str) -> Result<std::process::Child> {
        use std::io::BufRead;
        let mut psql = self
            .command("psql")
            .args(["-X", "-q", "-At", "-d", database])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting psql")?;
        let mut sql = psql.stdin.take().expect("piped stdin");
        writeln!(
            sql,
            "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT 'locked';"
        )?;
        // The transaction lives as long as psql's stdin stays open: leak it on purpose.
        std::mem::forget(sql);
        let mut said = String::new();
        std::io::BufReader::new(psql.stdout.take().expect("piped stdout")).read_line(&mut said)?;
        if said.trim() != "locked" {
            bail!("psql did not take the lock on {table}: {said:?}");
        }
        Ok(psql)
    }

    /// Run `sql` with `psql -X -v ON_ERROR_STOP=1 -At` (script on stdin, database via
    /// `PGDATABASE`, taken literally) and return stdout. The error includes psql's stderr.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let mut child = self
            .command("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-f", "-"])
            .env("PGDATABASE", database)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {}", self.bin_dir.join("psql").display()))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let script = sql.to_owned();
        // Write from another thread so a large output cannot deadlock against a large input.
        let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
        let out = child.wait_with_output().context("waiting for psql")?;
        let write_result = writer.join().expect("stdin writer panicked");
        if !out.status.success() {
            bail!(
                "psql on database {database:?} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
        write_result.context("writing the script to psql")?;
        String::from_utf8(out.stdout).context("psql output is not UTF-8")
    }

    /// Turns TLS on (a certificate for 127.0.0.1 issued by a throwaway CA) and lets `role` in
    /// over TLS only, without checking a password (`hostssl … trust`, `hostnossl … reject`):
    /// the stand-in for a server that takes RDS IAM tokens, which no local server can check.
    /// Returns the CA certificate (PEM) that verifies the server.
    pub fn enable_tls(&self, role: &str) -> Result<PathBuf> {
        let dir = self.root_path.join("tls");
        std::fs::create_dir_all(&dir).context("creating the TLS dir")?;
        let openssl = |args: &[&str]| -> Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .context("running openssl (needed for the TLS tests)")?;
            check_output("openssl", &out)
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=pgkeep test CA",
        ])?;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ])?;
        std::fs::write(
            dir.join("server.ext"),
            "basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
             extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1
",
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ])?;
        for name in ["server.crt", "server.key"] {
            let target = self.data_dir.join(name);
            std::fs::copy(dir.join(name), &target).with_context(|| format!("copying {name}"))?;
            std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            self.give_to_server_user(&target)?;
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir.join("pgkeep.conf"))?;
        writeln!(
            conf,
            "ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'"
        )?;
        let hba_path = self.data_dir.join("pg_hba.conf");
        let hba = std::fs::read_to_string(&hba_path)?;
        let role = format!("\"{}\"", role.replace('"', "\"\""));
        std::fs::write(
            &hba_path,
            format!(
                "hostnossl all {role} {HOST}/32 reject\nhostssl all {role} {HOST}/32 trust\n{hba}"
            ),
        )?;
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("reload")
            .output()
            .context("running pg_ctl reload")?;
        check_output("pg_ctl reload", &out)?;
        // The postmaster applies the new settings when it handles the signal; new sessions then
        // see them.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.psql("postgres", "SHOW ssl")?.trim() != "on" {
            if std::time::Instant::now() > deadline {
                bail!(
                    "the server did not turn TLS on; see {}",
                    self.log_file.display()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(dir.join("ca.crt"))
    }

    /// Like [`url`](Self::url), connecting as another role.
    pub fn url_as(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgresql://{}:{}@{}:{}/{}",
            sys::percent_encode(user),
            sys::percent_encode(password),
            HOST,
            self.port,
            sys::percent_encode(database)
        )
    }

    /// Creates a login role with a random password and the given attributes (e.g.
    /// `"CREATEDB"`, `"NOCREATEDB"`); returns the password.
    pub fn create_role(&self, name: &str, attributes: &str) -> Result<String> {
        let password = sys::random_hex(16)?;
        self.psql(
            "postgres",
            &format!(
                "CREATE ROLE {} LOGIN PASSWORD '{password}' {attributes};",
                sys::quote_ident(name)
            ),
        )?;
        Ok(password)
    }

    /// Size in bytes of every non-template database (`pg_database_size`), by name.
    pub fn database_sizes(&self) -> Result<BTreeMap<String, i64>> {
        let out = self.psql(
            "postgres",
            "SELECT coalesce(json_object_agg(datname, pg_database_size(oid)), '{}') \
             FROM pg_database WHERE NOT datistemplate;",
        )?;
        serde_json::from_str(out.trim()).context("parsing database sizes")
    }

    /// `CREATE DATABASE` (the name is quoted, so spaces, quotes and semicolons are fine).
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {};", sys::quote_ident(name)),
        )
        .map(drop)
    }

    /// `DROP DATABASE IF EXISTS .. WITH (FORCE)`.
    pub fn drop_database(&self, name: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE);",
                sys::quote_ident(name)
            ),
        )
        .map(drop)
    }

    /// Names of all non-template databases, sorted.
    pub fn database_names(&self) -> Result<Vec<String>> {
        let out = self.psql(
            "postgres",
            "SELECT coalesce(json_agg(datname ORDER BY datname), '[]') \
             FROM pg_database WHERE NOT datistemplate;",
        )?;
        serde_json::from_str(out.trim()).context("parsing database names")
    }

    /// Exact row count of every ordinary table (relkind 'r', partitions included, partitioned
    /// parents excluded; rows of inheritance children are not counted in the parent), excluding
    /// pg_catalog, information_schema, pg_toast and temp schemas, keyed by raw (schema, table).
    pub fn table_counts(&self, database: &str) -> Result<BTreeMap<(String, String), i64>> {
        let out = self.psql(database, TABLE_COUNTS_SQL)?;
        let rows: Vec<(String, String, i64)> =
            serde_json::from_str(out.trim()).context("parsing table counts")?;
        Ok(rows.into_iter().map(|(s, t, n)| ((s, t), n)).collect())
    }
}

/// One JSON array of `[schema, table, count]`; `query_to_xml` runs the per-table `count(*)`.
const TABLE_COUNTS_SQL: &str = r"
SELECT coalesce(json_agg(json_build_array(n.nspname, c.relname,
         (xpath('/row/n/text()',
                query_to_xml(format('SELECT count(*) AS n FROM ONLY %I.%I', n.nspname, c.relname),
                             false, true, '')))[1]::text::bigint)
       ORDER BY n.nspname, c.relname), '[]')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%'
  AND n.nspname NOT LIKE 'pg\_temp\_%';
";

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.data_dir.join("postmaster.pid").exists() {
            let result = self
                .server_command("pg_ctl")
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "immediate", "-w", "-t", "60", "stop"])
                .output();
            match result {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "pgkeep-tests: pg_ctl stop failed for {} ({}): {}",
                    self.data_dir.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim_end()
                ),
                Err(e) => eprintln!("pgkeep-tests: could not run pg_ctl stop: {e}"),
            }
        }
        if let Some(root) = self.root.take() {
            if let Err(e) = root.close() {
                eprintln!(
                    "pgkeep-tests: could not remove {}: {e}",
                    self.root_path.display()
                );
            }
        }
    }
}

fn check_output(what: &str, out: &Output) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind((HOST, 0)).context("binding 127.0.0.1:0 to find a port")?;
    Ok(listener.local_addr()?.port())
}

/// See [`PgCluster::bin_dir`].
pub fn find_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PGKEEP_PG_BIN") {
        let dir = PathBuf::from(dir);
        if !sys::is_executable(&dir.join("initdb")) {
            bail!("PGKEEP_PG_BIN={} has no initdb", dir.display());
        }
        return Ok(dir);
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            sys::is_executable(&bin.join("initdb")).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    sys::which_dir("initdb").context(
        "PostgreSQL server binaries not found: set PGKEEP_PG_BIN, or install postgresql \
         (scripts/test does: apt-get install -y postgresql postgresql-contrib)",
    )
}
