//! `pgkeep`: the local edge. Parses arguments (`args.rs`), resolves them into the library's
//! settings (`resolve.rs`), and hands each subcommand to its module under `commands/`, which
//! calls one operation of the `pgkeep` library and prints the result for people or (`--json`)
//! for scripts (`output.rs`). This file only dispatches.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches};

mod args;
mod commands;
mod output;
mod resolve;

use args::{Cli, Command};
use commands::Failure;
use resolve::Resolver;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging(cli.verbose);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = runtime.block_on(async {
        if let Err(e) = pgkeep::signals::install() {
            eprintln!("pgkeep: warning: cannot handle SIGINT/SIGTERM: {e}");
        }
        run(&cli, &matches).await
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("pgkeep: error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// One subcommand, one module. Backup, restore and verify end their own runs on SIGINT or
/// SIGTERM; any other command simply stops (exit 130 or 143).
async fn run(cli: &Cli, matches: &ArgMatches) -> Result<u8, Failure> {
    if matches!(
        cli.command,
        Command::Backup(_) | Command::Restore(_) | Command::Verify(_) | Command::Job(_)
    ) {
        return dispatch(cli, matches).await;
    }
    tokio::select! {
        result = dispatch(cli, matches) => result,
        signal = pgkeep::signals::received() => Ok(signal.exit_code()),
    }
}

async fn dispatch(cli: &Cli, matches: &ArgMatches) -> Result<u8, Failure> {
    // A job takes the functions' settings from the environment, not the command's.
    if let Command::Job(args) = &cli.command {
        return commands::job::run(args).await;
    }
    let resolver = Resolver::new(cli, matches)?;
    match &cli.command {
        Command::Backup(args) => commands::backup::run(&resolver, args).await,
        Command::List(args) => commands::list::run(&resolver, args).await,
        Command::Show(args) => commands::show::run(&resolver, args).await,
        Command::Status(args) => commands::status::run(&resolver, args).await,
        Command::Prune(args) => commands::prune::run(&resolver, args).await,
        Command::Delete(args) => commands::delete::run(&resolver, args).await,
        Command::Cat(args) => commands::cat::run(&resolver, args).await,
        Command::Verify(args) => commands::verify::run(&resolver, args).await,
        Command::Restore(args) => commands::restore::run(&resolver, args).await,
        Command::Repair(args) => commands::repair::run(&resolver, args).await,
        Command::Forget(args) => commands::forget::run(&resolver, args).await,
        Command::Init(args) => commands::init::run(&resolver, args).await,
        Command::Key(command) => commands::key::run(&resolver, command).await,
        Command::Audit(args) => commands::audit::run(&resolver, args).await,
        Command::Restores(args) => commands::restores::run(&resolver, args).await,
        Command::Report(args) => commands::report::run(&resolver, args).await,
        Command::Job(_) => unreachable!("dispatched above"),
    }
}
