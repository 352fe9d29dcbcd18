//! Turning the merged, substituted values into a [`ConfigFile`], reporting every problem rather
//! than the first: after each failed extraction the offending value is set aside and extraction
//! runs again. Every problem names its key path (`sinks.2.url: …`).

use super::file::ConfigFile;
use super::item::Located;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

/// How many problems one load reports at most (each found one extraction after another).
const MAX_PROBLEMS: usize = 64;

/// What extraction found: the config if what is left extracts, the problems, and the keys set
/// aside (checks that span keys leave out problems under them: they were reported already).
pub struct Extracted {
    pub file: Option<ConfigFile>,
    pub problems: Vec<String>,
    pub set_aside: Vec<String>,
}

/// One problem of an extraction: the key path and what is wrong.
struct Problem {
    path: Vec<String>,
    message: String,
}

impl Problem {
    /// figment's error; one an item made ([`Located`]) gets the key path below the item back.
    fn from_figment(e: &figment::Error) -> Problem {
        if let figment::error::Kind::Message(text) = &e.kind
            && let Some((below, message)) = Located::decode(text)
        {
            let mut path = e.path.clone();
            path.extend(below);
            return Problem { path, message };
        }
        let at = Located::from_figment(e);
        Problem {
            path: at.path,
            message: at.message,
        }
    }

    fn key(&self) -> String {
        self.path.join(".")
    }

    fn text(&self) -> String {
        match self.key() {
            key if key.is_empty() => self.message.clone(),
            key => format!("{key}: {}", self.message),
        }
    }

    /// A missing `name`, the only key every item needs: a stand-in lets the checks go on.
    fn missing_name(&self) -> bool {
        self.path.last().is_some_and(|k| k == "name") && self.message.starts_with("missing field")
    }
}

/// Extracts the typed config from `dict`, collecting every problem (at most [`MAX_PROBLEMS`]).
pub fn extract_all(mut dict: Dict, name: &str) -> Extracted {
    let mut problems = Vec::new();
    let mut set_aside: Vec<String> = Vec::new();
    let mut stood_in: Vec<String> = Vec::new();
    loop {
        let resolved = Figment::from(Resolved {
            dict: dict.clone(),
            name: name.to_string(),
        });
        let errors = match resolved.extract::<ConfigFile>() {
            Ok(file) => {
                return Extracted {
                    file: Some(file),
                    problems,
                    set_aside,
                };
            }
            Err(e) => e,
        };
        let mut progressed = false;
        for e in errors {
            let problem = Problem::from_figment(&e);
            // A problem under a key already set aside only follows from setting it aside.
            if set_aside.iter().any(|key| under(&problem.key(), key)) {
                progressed |= stand_in(&mut dict, &problem.path, &mut stood_in);
                continue;
            }
            problems.push(problem.text());
            progressed |= set_problem_aside(&mut dict, &problem, &mut set_aside, &mut stood_in);
        }
        if !progressed || problems.len() >= MAX_PROBLEMS {
            return Extracted {
                file: None,
                problems,
                set_aside,
            };
        }
    }
}

/// Whether the problem key `key` is `aside` or below it.
pub fn under(key: &str, aside: &str) -> bool {
    key.strip_prefix(aside)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', ':', ' ']))
}

/// Sets aside the value a problem is about (removed, so its default applies; a missing name gets
/// a stand-in). A bad list element (`events.0`) sets aside the whole list; a problem of a whole
/// source or sink replaces it with a stand-in of the same name.
fn set_problem_aside(
    dict: &mut Dict,
    problem: &Problem,
    set_aside: &mut Vec<String>,
    stood_in: &mut Vec<String>,
) -> bool {
    let mut placeholder = problem
        .missing_name()
        .then(|| format!("unnamed-{}", set_aside.len()));
    // Without its `type` a sink would be taken for a webhook and blamed for what it lacks.
    if matches!(problem.path.as_slice(), [list, _, key] if list == "sinks" && key == "type") {
        return stand_in(dict, &problem.path, stood_in);
    }
    let mut key = problem.path.clone();
    while !key.is_empty() {
        if is_item(&key) {
            return stand_in(dict, &problem.path, stood_in);
        }
        let joined = key.join(".");
        if set_aside.contains(&joined) {
            return false;
        }
        if set_value(dict, &key, placeholder.take()) {
            set_aside.push(joined);
            return true;
        }
        key.pop();
    }
    false
}

/// Whether `key` is one item of the sources or sinks (`sinks.2`).
fn is_item(key: &[String]) -> bool {
    matches!(key, [list, index] if (list == "sources" || list == "sinks") && index.parse::<usize>().is_ok())
}

/// Replaces the source or sink that `path` is in with a stand-in that keeps its name and the
/// sources it names, so that checks across items still see it, once; false if it already is one.
/// Problems of the stand-in's name and sources are still the item's: they are not set aside.
fn stand_in(dict: &mut Dict, path: &[String], stood_in: &mut Vec<String>) -> bool {
    let [list, index, ..] = path else {
        return false;
    };
    let item_key = format!("{list}.{index}");
    if !is_item(&path[..2]) || stood_in.contains(&item_key) {
        return false;
    }
    let Some(Value::Array(_, items)) = dict.get_mut(list) else {
        return false;
    };
    let Some(item) = index.parse::<usize>().ok().and_then(|i| items.get_mut(i)) else {
        return false;
    };
    let mut keep = Dict::new();
    for key in ["name", "sources"] {
        if let Some(v) = item.find_ref(key) {
            keep.insert(key.into(), v.clone());
        }
    }
    keep.entry("name".into())
        .or_insert_with(|| format!("set-aside-{}", stood_in.len()).into());
    if list == "sinks" {
        keep.insert("type".into(), "stdout".into());
    } else {
        keep.insert("file".into(), "/dev/null".into());
    }
    *item = Value::from(keep);
    stood_in.push(item_key);
    true
}

/// Removes the value at `key` (or sets it to `placeholder`); false if no dict holds that key.
/// `key` may go through lists (`sinks.0.url`).
fn set_value(dict: &mut Dict, key: &[String], placeholder: Option<String>) -> bool {
    fn parent<'a>(dict: &'a mut Dict, path: &[String]) -> Option<&'a mut Dict> {
        let Some((first, rest)) = path.split_first() else {
            return Some(dict);
        };
        let mut v = dict.get_mut(first)?;
        for part in rest {
            v = match v {
                Value::Dict(_, d) => d.get_mut(part)?,
                Value::Array(_, items) => items.get_mut(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        match v {
            Value::Dict(_, d) => Some(d),
            _ => None,
        }
    }
    let Some((last, parents)) = key.split_last() else {
        return false;
    };
    let Some(at) = parent(dict, parents) else {
        return false;
    };
    match placeholder {
        Some(text) => {
            at.insert(last.clone(), text.into());
            true
        }
        None => at.remove(last).is_some(),
    }
}

/// The merged, substituted values, handed back to figment so its errors still carry key paths.
struct Resolved {
    dict: Dict,
    name: String,
}

impl Provider for Resolved {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("config {}", self.name))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// figment's errors (of reading the files), each as `key: problem`.
pub fn figment_problems(e: figment::Error) -> Vec<String> {
    e.into_iter()
        .map(|e| Problem::from_figment(&e).text())
        .collect()
}
