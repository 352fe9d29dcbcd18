//! `flagtail check`: load the config, build every sink (templates, secret files, CA files), and
//! print the resolved config as JSON with secrets as `***`.

use super::{Failure, build_sinks};
use crate::config::Config;

pub fn check(config: &Config) -> Result<(), Failure> {
    build_sinks(config)?;
    println!("{}", config.to_redacted_json());
    eprintln!("config {} is valid", config.path.display());
    Ok(())
}
