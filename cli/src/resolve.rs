//! From flags to the library's settings, in one step per concern: the settings types resolve
//! themselves (every rule is theirs, shared with the Lambda functions); what is the command's
//! own is here: per-user default paths, which of two keys the command line chose, opening the
//! backends, and the warning about a password on the command line.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::ArgMatches;
use pgkeep::backends::{BackendConfig, KeyUse, Services};
use pgkeep::config::{ActorSettings, BackendDefaults, DatabaseChoice, KeyPrecedence};
use pgkeep::ops;
use pgkeep::postgres::PgTarget;
use pgkeep::retention::Span;

use crate::args::{Cli, Command};
use crate::commands::Failure;

/// The parsed command line with what was resolved up front.
pub struct Resolver<'a> {
    /// The flags.
    pub cli: &'a Cli,
    matches: &'a ArgMatches,
    /// In-progress runs older than this are abandoned (resolved for every command, so a bad
    /// value fails whatever the command, as a malformed flag does).
    pub abandon_after: Span,
}

/// The process environment, for settings resolved after parsing (login name, key labels).
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn home_dir(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Whether argument `id` was given on the command line (not the environment or a default),
/// at the top or in the subcommand.
fn from_command_line(matches: &ArgMatches, id: &str) -> bool {
    let source = |m: &ArgMatches| {
        m.try_get_raw(id)
            .ok()
            .flatten()
            .and_then(|_| m.value_source(id))
    };
    source(matches).or_else(|| matches.subcommand().and_then(|(_, m)| source(m)))
        == Some(ValueSource::CommandLine)
}

impl<'a> Resolver<'a> {
    /// Resolves what every command needs.
    pub fn new(cli: &'a Cli, matches: &'a ArgMatches) -> Result<Self, Failure> {
        Ok(Resolver {
            cli,
            matches,
            abandon_after: cli.abandon.resolve().map_err(ops::Error::from)?,
        })
    }

    /// Where the command's notices go: the heartbeat of `PGKEEP_HEARTBEAT_URL`, read from the
    /// environment only (the URL is a credential), or nowhere.
    pub fn notifier(&self) -> Result<std::sync::Arc<dyn pgkeep::alert::Notifier>, Failure> {
        let url = pgkeep::config::heartbeat_url(&env).map_err(ops::Error::from)?;
        Ok(pgkeep::wiring::command_notifier(url.as_ref()).map_err(ops::Error::from)?)
    }

    /// The backends: the command's per-user defaults (a repository under `$XDG_DATA_HOME`, a
    /// key file under `$XDG_CONFIG_HOME`), and a key and a key file set in different places
    /// resolved for the command line.
    pub fn backend_config(&self) -> Result<BackendConfig, Failure> {
        let defaults = BackendDefaults {
            repo: Some(home_dir("XDG_DATA_HOME", ".local/share").join("pgkeep/repo")),
            key_file: Some(home_dir("XDG_CONFIG_HOME", ".config").join("pgkeep/pgkeep.key")),
        };
        let precedence = match (
            from_command_line(self.matches, "key"),
            from_command_line(self.matches, "key_file"),
        ) {
            (true, false) => KeyPrecedence::Key,
            (false, true) => KeyPrecedence::KeyFile,
            _ => KeyPrecedence::Refuse,
        };
        Ok(self
            .cli
            .backends
            .resolve(&self.cli.aws, &defaults, precedence)
            .map_err(ops::Error::from)?)
    }

    /// Builds the backends through the wiring every edge shares; also returns the AWS
    /// configuration when a backend (or `need_aws`) wants one, loaded once.
    pub async fn open_aws(
        &self,
        key_use: KeyUse,
        need_aws: bool,
    ) -> Result<(Services, Option<pgkeep::aws::SdkConfig>), Failure> {
        let config = self.backend_config()?;
        let (services, aws) = pgkeep::wiring::connect(&config, key_use, need_aws)
            .await
            .map_err(ops::Error::from)?;
        // A lost catalog is refused by every command but the one that rebuilds it.
        if !matches!(self.cli.command, Command::Repair(_) | Command::Init(_)) {
            ops::repair::check_catalog(&services).await?;
        }
        Ok((services, aws))
    }

    /// Builds the backends.
    pub async fn open(&self, key_use: KeyUse) -> Result<Services, Failure> {
        Ok(self.open_aws(key_use, false).await?.0)
    }

    /// The database settings, checked.
    pub fn database(&self) -> Result<DatabaseChoice, Failure> {
        Ok(self.cli.database.resolve().map_err(ops::Error::from)?)
    }

    /// Warns, once per run, when `target` (the value of argument `id`) carries a password and
    /// came from the command line, where other users can see it; `env` is the safer place.
    pub fn warn_password_on_command_line(
        &self,
        target: &PgTarget,
        id: &str,
        what: &str,
        env: &str,
    ) {
        if target.has_password() && from_command_line(self.matches, id) {
            tracing::warn!("{what} password is on the command line, where other users can see it; use {env} or ~/.pgpass");
        }
    }

    /// The server at `url` (`parsed` already): with RDS IAM tokens when `iam`, which needs
    /// the AWS configuration `aws` loaded for it.
    pub async fn server(
        &self,
        database: &DatabaseChoice,
        iam: bool,
        url: &str,
        parsed: PgTarget,
        aws: Option<&pgkeep::aws::SdkConfig>,
    ) -> Result<PgTarget, Failure> {
        match (iam, aws) {
            (true, Some(aws)) => Ok(database
                .auth
                .iam_target("--database-url", url, aws)
                .await
                .map_err(ops::Error::from)?),
            _ => Ok(parsed),
        }
    }

    /// Who asked for a backup taken by this command: `cli:` and the login name.
    pub fn cli_user(&self) -> String {
        format!("cli:{}", ActorSettings::default().resolve(env))
    }

    /// Who the audit trail names.
    pub fn actor(&self, actor: &ActorSettings) -> String {
        actor.resolve(env)
    }
}
