//! Job options set by key: `SET 'key' = 'value';` in SQL, `-D key=value` on the command line,
//! [`Options::set`] from Rust.
//!
//! Every key Riffle knows is declared once in [`KNOWN_OPTIONS`], with its kind and default,
//! so that an unknown key or a value of the wrong shape is refused where it is set (naming
//! the key and what it expects) rather than ignored, and so that the documentation table of
//! options is generated from the same list (see [`options_table`]). Keys follow Flink's
//! names where Flink has the option.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Result, RiffleError};

/// The shape of an option's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionKind {
    /// `true` or `false`.
    Bool,
    /// A whole number of at least this value.
    Integer {
        /// The smallest value accepted.
        min: u64,
    },
    /// A duration: `200 ms`, `1 s`, `5 min`, `1 h`; a bare number is milliseconds (Flink).
    Duration,
    /// One of these words (case-insensitive).
    Choice(&'static [&'static str]),
    /// Any text (a path, a URL, a list).
    Text,
}

/// One option Riffle knows.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// The key, as the user writes it.
    pub key: &'static str,
    /// What values it takes.
    pub kind: OptionKind,
    /// Its default, as text; empty when it has none (the option is then off).
    pub default: &'static str,
    /// What it does, in one sentence.
    pub doc: &'static str,
}

/// Every option Riffle knows. Add a key here and it can be set everywhere and is documented.
pub const KNOWN_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "execution.checkpointing.interval",
        kind: OptionKind::Duration,
        default: "",
        doc: "Time between the starts of two checkpoints; checkpointing is off when unset.",
    },
    OptionSpec {
        key: "execution.checkpointing.timeout",
        kind: OptionKind::Duration,
        default: "10 min",
        doc: "A checkpoint not complete after this long is aborted (and counts as failed).",
    },
    OptionSpec {
        key: "execution.checkpointing.min-pause",
        kind: OptionKind::Duration,
        default: "0 ms",
        doc: "Least time between the end of one checkpoint and the start of the next.",
    },
    OptionSpec {
        key: "execution.checkpointing.max-concurrent-checkpoints",
        kind: OptionKind::Integer { min: 1 },
        default: "1",
        doc: "Checkpoints in progress at once at most.",
    },
    OptionSpec {
        key: "execution.checkpointing.tolerable-failed-checkpoints",
        kind: OptionKind::Integer { min: 0 },
        default: "0",
        doc: "Consecutive failed checkpoints tolerated before the job fails.",
    },
    OptionSpec {
        key: "execution.checkpointing.num-retained",
        kind: OptionKind::Integer { min: 1 },
        default: "3",
        doc: "Completed checkpoints kept; older ones are deleted.",
    },
    OptionSpec {
        key: "execution.checkpointing.dir",
        kind: OptionKind::Text,
        default: "./.riffle/checkpoints",
        doc: "Where checkpoints are written: a local folder or an object store URL (s3://, gs://, az://, file://).",
    },
    OptionSpec {
        key: "execution.checkpointing.savepoint-dir",
        kind: OptionKind::Text,
        default: "",
        doc: "Where savepoints taken on demand are copied (JobHandle::savepoint): a local folder or an object store URL; when unset, savepoints/ under execution.checkpointing.dir.",
    },
    OptionSpec {
        key: "restart-strategy.type",
        kind: OptionKind::Choice(&["none", "fixed-delay", "exponential-delay"]),
        default: "",
        doc: "How a failed job restarts: none, fixed-delay or exponential-delay; when unset, exponential-delay with checkpointing on and none with it off (Flink's default).",
    },
    OptionSpec {
        key: "restart-strategy.fixed-delay.attempts",
        kind: OptionKind::Integer { min: 0 },
        default: "1",
        doc: "Restarts allowed by the fixed-delay strategy before the job fails.",
    },
    OptionSpec {
        key: "restart-strategy.fixed-delay.delay",
        kind: OptionKind::Duration,
        default: "1 s",
        doc: "Time between a failure and the restart under the fixed-delay strategy.",
    },
    OptionSpec {
        key: "restart-strategy.exponential-delay.initial-backoff",
        kind: OptionKind::Duration,
        default: "1 s",
        doc: "Delay before the first restart under the exponential-delay strategy.",
    },
    OptionSpec {
        key: "restart-strategy.exponential-delay.max-backoff",
        kind: OptionKind::Duration,
        default: "1 min",
        doc: "Longest delay between a failure and the restart under the exponential-delay strategy.",
    },
    OptionSpec {
        key: "restart-strategy.exponential-delay.backoff-multiplier",
        kind: OptionKind::Integer { min: 1 },
        default: "2",
        doc: "Factor the exponential-delay strategy multiplies its delay by after each restart.",
    },
    OptionSpec {
        key: "restart-strategy.exponential-delay.attempts-before-reset-backoff",
        kind: OptionKind::Integer { min: 0 },
        default: "2147483647",
        doc: "Restarts allowed by the exponential-delay strategy before the job fails.",
    },
    OptionSpec {
        key: "sink.commit-mode",
        kind: OptionKind::Choice(&["checkpoint", "end"]),
        default: "checkpoint",
        doc: "When file sinks publish: at each completed checkpoint, or only when the job ends (always the case without checkpointing, and required by INSERT OVERWRITE).",
    },
    OptionSpec {
        key: "riffle.test.fail",
        kind: OptionKind::Text,
        default: "",
        doc: "Failure injection for tests and benchmarks: faults separated by ';', each 'attempt=A,vertex=V,subtask=S,after-batches=N,kind=K' with K one of error, panic, snapshot, commit, stall-snapshot; inert when unset.",
    },
    OptionSpec {
        key: "pipeline.operator-chaining.enabled",
        kind: OptionKind::Bool,
        default: "true",
        doc: "Runs the stateless parts of a job (scans, projections, filters, functions, LIMIT, sinks) as chains of Riffle operators, which checkpoints need; when false, every vertex is a DataFusion fragment.",
    },
    OptionSpec {
        key: "url.allow-private",
        kind: OptionKind::Bool,
        default: "false",
        doc: "Lets url_download reach loopback, link-local and private addresses.",
    },
    OptionSpec {
        key: "url.allowed-hosts",
        kind: OptionKind::Text,
        default: "",
        doc: "Comma-separated hosts (names or addresses) url_download may reach even when they resolve to private addresses.",
    },
];

/// Looks up a known option.
pub fn option_spec(key: &str) -> Option<&'static OptionSpec> {
    KNOWN_OPTIONS.iter().find(|spec| spec.key == key)
}

/// The options of a job or session: known keys only, each value checked when set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    values: BTreeMap<String, String>,
}

impl Options {
    /// No option set: every option has its default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, refusing unknown keys and values of the wrong shape.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let key = key.trim();
        let value = value.trim();
        let spec = option_spec(key).ok_or_else(|| unknown_key(key))?;
        check_value(spec, value)?;
        self.values.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// Parses `key=value` (the command line's `-D`) and sets it.
    pub fn set_pair(&mut self, pair: &str) -> Result<()> {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            RiffleError::user(format!("option '{pair}' is not of the form key=value"))
                .with_hint("write -D execution.checkpointing.interval=10s")
        })?;
        self.set(key, value)
    }

    /// The value set for `key`, or its default; `None` when neither is.
    pub fn get(&self, key: &str) -> Option<&str> {
        if let Some(value) = self.values.get(key) {
            return Some(value);
        }
        option_spec(key)
            .map(|spec| spec.default)
            .filter(|default| !default.is_empty())
    }

    /// Whether the user set `key` (rather than leaving its default).
    pub fn is_set(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// The keys the user set and their values, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A boolean option; its default when unset.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match self.get(key) {
            None => Ok(false),
            Some(value) => parse_bool(key, value),
        }
    }

    /// A duration option; `None` when neither set nor defaulted.
    pub fn get_duration(&self, key: &str) -> Result<Option<Duration>> {
        self.get(key)
            .map(|value| parse_duration(key, value))
            .transpose()
    }

    /// An integer option; `None` when neither set nor defaulted.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key)
            .map(|value| parse_integer(key, value))
            .transpose()
    }
}

fn unknown_key(key: &str) -> RiffleError {
    let near: Vec<&str> = KNOWN_OPTIONS
        .iter()
        .map(|spec| spec.key)
        .filter(|known| {
            let shared = known
                .split('.')
                .zip(key.split('.'))
                .take_while(|(a, b)| a == b)
                .count();
            shared >= 1
        })
        .collect();
    let error = RiffleError::user(format!("unknown option '{key}'"));
    if near.is_empty() {
        error.with_hint("the options Riffle knows are listed in docs/options.md")
    } else {
        error.with_hint(format!("options near it: {}", near.join(", ")))
    }
}

fn check_value(spec: &OptionSpec, value: &str) -> Result<()> {
    match spec.kind {
        OptionKind::Bool => parse_bool(spec.key, value).map(drop),
        OptionKind::Integer { min } => {
            let number = parse_integer(spec.key, value)?;
            if number < min {
                return Err(RiffleError::user(format!(
                    "option '{}' must be at least {min}, not {number}",
                    spec.key
                )));
            }
            Ok(())
        }
        OptionKind::Duration => {
            let duration = parse_duration(spec.key, value)?;
            if spec.key == "execution.checkpointing.interval" && duration.is_zero() {
                return Err(RiffleError::user(
                    "option 'execution.checkpointing.interval' must be longer than 0",
                )
                .with_hint("leave it unset to turn checkpointing off"));
            }
            Ok(())
        }
        OptionKind::Choice(choices) => {
            if choices.iter().any(|c| c.eq_ignore_ascii_case(value)) {
                Ok(())
            } else {
                Err(RiffleError::user(format!(
                    "option '{}' takes one of {}, not '{value}'",
                    spec.key,
                    choices.join(", ")
                )))
            }
        }
        OptionKind::Text => Ok(()),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(RiffleError::user(format!(
            "option '{key}' takes true or false, not '{value}'"
        ))),
    }
}

fn parse_integer(key: &str, value: &str) -> Result<u64> {
    value.parse::<u64>().map_err(|_| {
        RiffleError::user(format!(
            "option '{key}' takes a whole number, not '{value}'"
        ))
    })
}

/// Parses a duration the way Flink writes them: a number and a unit (`ms`, `s`, `min`, `h`,
/// `d`, and their long forms), with or without a space; a bare number is milliseconds.
pub fn parse_duration(key: &str, value: &str) -> Result<Duration> {
    let bad = || {
        RiffleError::user(format!(
            "option '{key}' takes a duration such as '200 ms', '10 s' or '5 min', not '{value}'"
        ))
    };
    let text = value.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let millis_per_unit = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000.0,
        "h" | "hour" | "hours" => 3_600_000.0,
        "d" | "day" | "days" => 86_400_000.0,
        _ => return Err(bad()),
    };
    let millis = number * millis_per_unit;
    if !(0.0..=1e15).contains(&millis) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(millis / 1_000.0))
}

/// The table of every known option, as Markdown: key, default, what it does.
pub fn options_table() -> String {
    let mut table = String::from("| key | default | what it does |\n|---|---|---|\n");
    for spec in KNOWN_OPTIONS {
        let default = if spec.default.is_empty() {
            "(unset)".to_string()
        } else {
            format!("`{}`", spec.default)
        };
        table.push_str(&format!("| `{}` | {default} | {} |\n", spec.key, spec.doc));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_take_checked_values() {
        let mut options = Options::new();
        options
            .set("execution.checkpointing.interval", "200 ms")
            .unwrap();
        assert_eq!(
            options
                .get_duration("execution.checkpointing.interval")
                .unwrap(),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            options
                .get_u64("execution.checkpointing.num-retained")
                .unwrap(),
            Some(3)
        );
        assert!(!options.get_bool("url.allow-private").unwrap());
        options.set_pair("url.allow-private=TRUE").unwrap();
        assert!(options.get_bool("url.allow-private").unwrap());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_what_was_wrong() {
        let mut options = Options::new();
        let error = options
            .set("execution.checkpointing.intervall", "1 s")
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unknown option 'execution.checkpointing.intervall'")
        );
        assert!(
            error
                .hint()
                .unwrap()
                .contains("execution.checkpointing.interval")
        );
        let error = options
            .set("execution.checkpointing.interval", "soon")
            .unwrap_err();
        assert!(error.to_string().contains("takes a duration"), "{error}");
        let error = options
            .set("execution.checkpointing.interval", "0 s")
            .unwrap_err();
        assert!(error.to_string().contains("longer than 0"), "{error}");
        let error = options
            .set("execution.checkpointing.num-retained", "0")
            .unwrap_err();
        assert!(error.to_string().contains("at least 1"), "{error}");
        assert!(options.set_pair("no-equals-sign").is_err());
        assert!(options.iter().next().is_none(), "nothing bad was kept");
    }

    #[test]
    fn durations_read_like_flinks() {
        let cases = [
            ("10 s", 10_000),
            ("10s", 10_000),
            ("1 min", 60_000),
            ("500", 500),
            ("1.5 h", 5_400_000),
            ("2 days", 172_800_000),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_duration("k", text).unwrap(),
                Duration::from_millis(millis),
                "{text}"
            );
        }
        for bad in ["", "s", "-1 s", "1 fortnight", "1e400 s"] {
            assert!(parse_duration("k", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_default_is_a_valid_value() {
        for spec in KNOWN_OPTIONS {
            if !spec.default.is_empty() {
                check_value(spec, spec.default).unwrap();
            }
        }
        assert!(options_table().contains("`execution.checkpointing.num-retained` | `3`"));
    }
}

#[cfg(test)]
mod docs_tests {
    /// docs/options.md carries the table of every option; it must say what the code says.
    #[test]
    fn the_documented_table_is_the_table_of_known_options() {
        let docs = include_str!("../../../docs/options.md");
        assert!(
            docs.contains(&super::options_table()),
            "docs/options.md is out of date; paste in riffle_common::options::options_table():\n{}",
            super::options_table()
        );
    }
}
