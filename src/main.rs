//! The `flagtail` binary: parses the command line, loads the config, starts logging, and hands
//! over to the library. Signals are wired here: SIGTERM/SIGINT stop, SIGHUP reloads.

use clap::Parser;
use flagtail::cli::{Cli, Command};
use flagtail::command::{self, Failure};
use flagtail::config::Config;
use flagtail::{daemon, telemetry};
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Prints `shell`'s completion script (made in memory first: a reader that goes away, as `head`
/// does, is not a panic).
fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    let mut cli = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cli, "flagtail", &mut script);
    print_out(&String::from_utf8_lossy(&script))
}

/// Prints `text` made in memory; a reader that goes away is not an error.
fn print_out(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match std::io::Write::write_all(&mut out, text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flagtail: cannot write to standard output: {e}");
            ExitCode::from(1)
        }
    }
}

/// Prints a new key pair of `kind`: the secret for `signing_secret`, then the public key.
fn keygen(kind: flagtail::cli::KeyKind) -> ExitCode {
    match kind {
        flagtail::cli::KeyKind::Ed25519 => match flagtail::sink::sign::new_ed25519_key() {
            Ok((secret, public)) => {
                println!("signing_secret: {secret}\npublic_key: {public}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("flagtail: {e}");
                ExitCode::from(1)
            }
        },
    }
}

/// The commands answered without reading a config; `None` for the others.
fn without_config(cli: &Cli) -> Option<ExitCode> {
    match &cli.command {
        Some(Command::Completions { shell }) => Some(completions(*shell)),
        Some(Command::ConfigSchema) => Some(print_out(&(flagtail::config::config_schema() + "\n"))),
        Some(Command::Keygen { kind }) => Some(keygen(*kind)),
        // `status` needs a config only for its admin.listen: `--admin` (or no config at all,
        // for the default address) does without.
        Some(Command::Status { admin }) => {
            let no_config = cli.config.config.is_none()
                && cli.config.flipt_config.is_none()
                && !std::path::Path::new("./flagtail.yaml").exists();
            admin
                .clone()
                .or_else(|| no_config.then(|| command::status::DEFAULT_ADMIN.to_string()))
                .map(|admin| status(&admin))
        }
        _ => None,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(code) = without_config(&cli) {
        return code;
    }
    let config = match Config::load_from(&cli.config.paths()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flagtail: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.file.log.format, &config.file.log.level);
    // Idle blocking threads (file work, template renders) are kept, not reaped after 10 s: reaping
    // is a timer that wakes an idle daemon.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(std::time::Duration::from_secs(24 * 3600))
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flagtail: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = dispatch(config, cli.command.unwrap_or(Command::Run), &runtime);
    // A template render given up on may still run on a blocking thread: do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("flagtail: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Runs the command that takes a loaded config.
fn dispatch(
    config: Config,
    cmd: Command,
    runtime: &tokio::runtime::Runtime,
) -> Result<(), Failure> {
    match cmd {
        Command::Run => runtime.block_on(serve(config)),
        Command::Check { connect } => command::check::check(&config, connect),
        Command::Render {
            sink,
            source,
            input,
        } => command::render::render(&config, &sink, source.as_deref(), input.as_deref()),
        Command::Replay {
            sink,
            select,
            dry_run,
        } => selection(&select).and_then(|selection| {
            runtime.block_on(command::replay::replay(&config, &sink, &selection, dry_run))
        }),
        Command::DeadLetters { sink, select, json } => selection(&select)
            .and_then(|selection| command::dead_letters::list(&config, &sink, json, &selection)),
        Command::Attempts {
            sink,
            failed,
            since,
            limit,
            json,
        } => command::attempts::Filter::parse(failed, since.as_deref(), limit)
            .and_then(|filter| command::attempts::list(&config, &sink, json, &filter)),
        Command::Status { .. } => {
            runtime.block_on(command::status::status(&config.file.admin.listen))
        }
        // Answered before the config is read.
        Command::Completions { .. } | Command::ConfigSchema | Command::Keygen { .. } => Ok(()),
    }
}

/// `flagtail status --admin ADDR`.
fn status(admin: &str) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(command::status::status(admin)),
        Err(e) => Err(Failure::runtime(format!("cannot start the runtime: {e}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("flagtail: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn serve(config: Config) -> Result<(), Failure> {
    // Templates, secret and CA files are config: their errors exit 2, before anything starts.
    let sinks = command::build_sinks(&config)?;
    let stop = CancellationToken::new();
    let (reload_tx, reloads) = mpsc::channel(1);
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = signals else {
        return Err(Failure::runtime("cannot install signal handlers"));
    };
    let stopper = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => { let _ = reload_tx.try_send(()); }
            }
        }
        stopper.cancel();
    });
    daemon::run(config, sinks, reloads, stop)
        .await
        .map_err(|e| match e.downcast_ref::<flagtail::state_lock::Held>() {
            // Another daemon on the same state directory is a usage error (exit 2).
            Some(held) => Failure::usage(held.to_string()),
            None => Failure::runtime(format!("{e:#}")),
        })
}

fn selection(select: &flagtail::cli::Select) -> Result<command::dead_letters::Selection, Failure> {
    command::dead_letters::Selection::parse(
        select.since.as_deref(),
        select.until.as_deref(),
        &select.events,
        &select.id,
    )
}
