//! `flagtail replay --sink NAME [--since T] [--until T] [--events type:action] [--id KEY]
//! [--dry-run]`: send a sink's dead letters again, all of them or those selected (the others
//! stay), through [`crate::delivery::replay`]. Exit status 1 if a selected letter failed again or
//! a line could not be read.

use super::dead_letters::Selection;
use super::{Failure, find_sink};
use crate::config::Config;
use crate::delivery::Transport;
use crate::delivery::dead_letter;
use crate::delivery::replay::{self, Options};
use tokio_util::sync::CancellationToken;

pub async fn replay(
    config: &Config,
    name: &str,
    selection: &Selection,
    dry_run: bool,
) -> Result<(), Failure> {
    let sink = find_sink(config, name)?;
    if dry_run {
        println!("would replay (nothing is sent or changed):");
        return super::dead_letters::list(config, name, false, selection);
    }
    let mut link = Transport::for_sink(&sink)
        .map_err(|(key, e)| Failure::usage(format!("sink {name}: {key}: {e}")))?
        .link();
    let log = dead_letter::log(&config.file.state_dir, name);
    let select = |letter: &dead_letter::DeadLetter| selection.takes(letter);
    // Reasons quote what receivers answered: never raw to the terminal.
    let report = |text: &str| eprintln!("{}", super::table::printable(text));
    let options = Options {
        select: &select,
        stop_at_failure: false,
        report: Some(&report),
    };
    let summary = replay::replay(&sink, &mut link, &log, &options, &CancellationToken::new())
        .await
        .map_err(|e| Failure::runtime(format!("{}: {e}", log.path().display())))?
        .ok_or_else(|| {
            Failure::runtime(format!(
                "another replay of sink {name} is running (the daemon's automatic one, or another flagtail replay); try again when it is done"
            ))
        })?;
    println!(
        "replayed {} dead letters of sink {name}: {} delivered, {} failed again, {} not selected",
        summary.delivered + summary.failed,
        summary.delivered,
        summary.failed,
        summary.left
    );
    if summary.failed + summary.unreadable == 0 {
        Ok(())
    } else {
        Err(Failure::runtime(format!(
            "{} dead letters failed again or could not be read; they are kept in {}",
            summary.failed + summary.unreadable,
            log.path().display()
        )))
    }
}
