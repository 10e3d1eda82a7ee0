//! The `dump` Lambda function: not wired to AWS yet (see the AWS backends issue).
//! It exists so the workspace layout is final; it refuses to run rather than pretend.

fn main() {
    eprintln!("pgkeep-dump: this Lambda function is not wired yet; use the `pgkeep` command");
    std::process::exit(1);
}
