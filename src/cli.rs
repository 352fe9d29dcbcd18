//! The command line (SPEC §5), as clap parses it. No I/O here.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "flagtail",
    version,
    about = "Tails feature-flag audit logs and delivers every event to signed, templated webhooks"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// Config file (YAML, or TOML by its .toml extension). Default `./flagtail.yaml`, unless
    /// --flipt-config is given alone.
    #[arg(long, global = true, env = "FLAGTAIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// A Flipt config.yml: its audit log file and webhook sinks are read as flagtail config
    /// (added to --config's, when both are given).
    #[arg(long, global = true, env = "FLAGTAIL_FLIPT_CONFIG")]
    pub flipt_config: Option<PathBuf>,
}

impl ConfigArg {
    /// The files to read: `--config`, `--flipt-config`, or `./flagtail.yaml` when neither is given.
    pub fn paths(&self) -> crate::config::ConfigPaths {
        let flagtail = match (&self.config, &self.flipt_config) {
            (None, None) => Some(PathBuf::from("./flagtail.yaml")),
            (config, _) => config.clone(),
        };
        crate::config::ConfigPaths {
            flagtail,
            flipt: self.flipt_config.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Run,
    /// Validate the config and templates; print it with secrets as ***.
    Check {
        /// Also reach each sink (webhook: TCP and TLS; NATS: connect and find the stream that
        /// takes the subject), sending nothing.
        #[arg(long)]
        connect: bool,
    },
    /// Dry run: print the request each input line would become.
    Render {
        /// The sink whose requests to print.
        #[arg(long)]
        sink: String,
        /// Read lines in this source's format (default: the first source).
        #[arg(long)]
        source: Option<String>,
        /// Read lines from this file (default: stdin).
        #[arg(long)]
        input: Option<PathBuf>,
    },
    /// Send a sink's dead letters again (all, or those selected); those that fail again are kept.
    Replay {
        #[arg(long)]
        sink: String,
        #[command(flatten)]
        select: Select,
        /// List what would be replayed; send and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List a sink's dead letters: time, type:action, key, attempts, id, reason.
    DeadLetters {
        #[arg(long)]
        sink: String,
        #[command(flatten)]
        select: Select,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List a sink's recorded attempts, newest first: time, type:action, attempt, status, duration,
    /// id, error (the attempt log; works whether the daemon runs or not).
    Attempts {
        #[arg(long)]
        sink: String,
        /// Only failed attempts.
        #[arg(long)]
        failed: bool,
        /// Only attempts at or after: RFC 3339 UTC (2026-11-23T06:00:00Z) or a duration ago (2h).
        #[arg(long)]
        since: Option<String>,
        /// At most this many, the newest.
        #[arg(long)]
        limit: Option<usize>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a running daemon's status page as tables (from its admin endpoint's /status.json).
    Status {
        /// The admin endpoint, HOST:PORT. Default: the config's admin.listen, else 127.0.0.1:9464.
        #[arg(long)]
        admin: Option<String>,
    },
    /// Print a shell's completion script for flagtail (`source <(flagtail completions bash)`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the config's JSON Schema, for editors to check a config as it is typed.
    ConfigSchema,
    /// Print a new signing key: `ed25519` prints a `whsk_` signing_secret (Standard Webhooks
    /// `v1a`) and the `whpk_` public key its receivers verify with.
    Keygen {
        /// The kind of key: ed25519.
        kind: KeyKind,
    },
}

/// The kinds of key `flagtail keygen` makes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KeyKind {
    /// An ed25519 key pair for Standard Webhooks' asymmetric `v1a` signatures.
    Ed25519,
}

/// Which dead letters `replay` and `dead-letters` take.
#[derive(Debug, Args, Clone)]
pub struct Select {
    /// Dead-lettered at or after: RFC 3339 UTC (2026-11-23T06:00:00Z) or a duration ago (2h).
    #[arg(long)]
    pub since: Option<String>,
    /// Dead-lettered before: RFC 3339 UTC or a duration ago.
    #[arg(long)]
    pub until: Option<String>,
    /// Only these events, type:action patterns (flag:*,segment:created); repeatable.
    #[arg(long)]
    pub events: Vec<String>,
    /// Only the dead letter with this idempotency key; repeatable.
    #[arg(long)]
    pub id: Vec<String>,
}
