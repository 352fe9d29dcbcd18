//! `flagtail check`: load the config, build every sink (templates, secret files, CA files), and
//! print the resolved config as JSON with secrets as `***`.

use super::{Failure, build_sinks};
use crate::config::Config;

pub fn check(config: &Config) -> Result<(), Failure> {
    build_sinks(config)?;
    println!("{}", config.to_redacted_json());
    for note in &config.notes {
        eprintln!("note: {note}");
    }
    eprintln!("config {} is valid", config.paths);
    Ok(())
}
