//! A job's fault-tolerance settings, read from its options when the job starts:
//! checkpointing (`execution.checkpointing.*`), restarts (`restart-strategy.*`), sink
//! commits (`sink.commit-mode`) and injected faults (`riffle.test.fail`).

use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use riffle_common::{Options, Result, RiffleError};
use riffle_state::TrackerConfig;

use crate::fault::FaultPlan;
use crate::operators::CommitMode;

/// Everything a job reads from its options when it starts.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Checkpointing, when `execution.checkpointing.interval` is set.
    pub checkpointing: Option<CheckpointSettings>,
    /// How the job restarts after a failure.
    pub restart: RestartStrategy,
    /// `sink.commit-mode`, and whether the user set it.
    pub commit_mode: CommitMode,
    /// Whether `sink.commit-mode` was set explicitly.
    pub commit_mode_set: bool,
    /// Injected faults.
    pub faults: FaultPlan,
}

/// `execution.checkpointing.*`.
#[derive(Debug, Clone)]
pub struct CheckpointSettings {
    /// The tracker's configuration.
    pub tracker: TrackerConfig,
    /// Completed checkpoints kept.
    pub num_retained: usize,
    /// Where checkpoints go, as the user wrote it.
    pub dir: String,
    /// Where savepoints taken on demand are copied.
    pub savepoint_dir: String,
}

/// How a failed job restarts (Flink's `restart-strategy.*`).
#[derive(Debug, Clone, PartialEq)]
pub enum RestartStrategy {
    /// Never: the first failure fails the job.
    None,
    /// Up to `attempts` restarts, `delay` apart.
    FixedDelay {
        /// Restarts allowed.
        attempts: u64,
        /// Time before each restart.
        delay: Duration,
    },
    /// Up to `attempts` restarts, the delay growing by `multiplier` from `initial` to `max`.
    ExponentialDelay {
        /// Restarts allowed.
        attempts: u64,
        /// Delay before the first restart.
        initial: Duration,
        /// Longest delay.
        max: Duration,
        /// Growth per restart.
        multiplier: u32,
    },
}

impl RestartStrategy {
    /// The delay before restart number `restart` (1 for the first), or `None` when no more
    /// restarts are allowed.
    pub fn delay(&self, restart: u64) -> Option<Duration> {
        match self {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => {
                (restart <= *attempts).then_some(*delay)
            }
            RestartStrategy::ExponentialDelay {
                attempts,
                initial,
                max,
                multiplier,
            } => (restart <= *attempts).then(|| {
                let exponent = u32::try_from(restart.saturating_sub(1)).unwrap_or(u32::MAX);
                let factor = multiplier.saturating_pow(exponent.min(64));
                initial.saturating_mul(factor).min(*max)
            }),
        }
    }
}

fn duration(options: &Options, key: &str) -> Result<Duration> {
    options
        .get_duration(key)?
        .ok_or_else(|| RiffleError::internal(format!("option {key} has no default")))
}

fn count(options: &Options, key: &str) -> Result<u64> {
    options
        .get_u64(key)?
        .ok_or_else(|| RiffleError::internal(format!("option {key} has no default")))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl JobSettings {
    /// Reads the settings from `options`.
    pub fn from_options(options: &Options) -> Result<Self> {
        let dir = options
            .get("execution.checkpointing.dir")
            .unwrap_or("./.riffle/checkpoints")
            .to_string();
        let checkpointing = match options.get_duration("execution.checkpointing.interval")? {
            None => None,
            Some(interval) => Some(CheckpointSettings {
                tracker: TrackerConfig {
                    interval: Some(millis(interval).max(1)),
                    timeout: millis(duration(options, "execution.checkpointing.timeout")?),
                    min_pause: millis(duration(options, "execution.checkpointing.min-pause")?),
                    max_concurrent: count(
                        options,
                        "execution.checkpointing.max-concurrent-checkpoints",
                    )? as usize,
                    tolerable_failures: u32::try_from(count(
                        options,
                        "execution.checkpointing.tolerable-failed-checkpoints",
                    )?)
                    .unwrap_or(u32::MAX),
                },
                num_retained: count(options, "execution.checkpointing.num-retained")? as usize,
                dir: dir.clone(),
                savepoint_dir: match options.get("execution.checkpointing.savepoint-dir") {
                    Some(savepoints) if !savepoints.is_empty() => savepoints.to_string(),
                    _ => format!("{}/savepoints", dir.trim_end_matches('/')),
                },
            }),
        };
        let strategy = match options.get("restart-strategy.type") {
            Some(kind) => kind.to_ascii_lowercase(),
            None if checkpointing.is_some() => "exponential-delay".to_string(),
            None => "none".to_string(),
        };
        let restart = match strategy.as_str() {
            "fixed-delay" => RestartStrategy::FixedDelay {
                attempts: count(options, "restart-strategy.fixed-delay.attempts")?,
                delay: duration(options, "restart-strategy.fixed-delay.delay")?,
            },
            "exponential-delay" => RestartStrategy::ExponentialDelay {
                attempts: count(
                    options,
                    "restart-strategy.exponential-delay.attempts-before-reset-backoff",
                )?,
                initial: duration(
                    options,
                    "restart-strategy.exponential-delay.initial-backoff",
                )?,
                max: duration(options, "restart-strategy.exponential-delay.max-backoff")?,
                multiplier: u32::try_from(count(
                    options,
                    "restart-strategy.exponential-delay.backoff-multiplier",
                )?)
                .unwrap_or(u32::MAX),
            },
            _ => RestartStrategy::None,
        };
        let commit_mode = match options.get("sink.commit-mode") {
            Some(mode) if mode.eq_ignore_ascii_case("end") => CommitMode::End,
            _ => CommitMode::Checkpoint,
        };
        Ok(Self {
            checkpointing,
            restart,
            commit_mode,
            commit_mode_set: options.is_set("sink.commit-mode"),
            faults: FaultPlan::parse(options.get("riffle.test.fail").unwrap_or(""))?,
        })
    }
}

/// The object store and folder that `dir` (`execution.checkpointing.dir`) names: a local
/// folder (created when missing), `file://`, or an object store URL registered in the
/// session (s3://, gs://, az://: the stores a table of the session reaches).
pub fn checkpoint_location(
    dir: &str,
    context: &TaskContext,
) -> Result<(Arc<dyn ObjectStore>, Path)> {
    location_of("execution.checkpointing.dir", dir, context)
}

/// The object store and folder of `dir`, the value of option `key`, as
/// [`checkpoint_location`] reads it.
pub fn location_of(
    key: &str,
    dir: &str,
    context: &TaskContext,
) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let unwritable = |error: String| {
        RiffleError::user(format!("{key} '{dir}' cannot hold checkpoints: {error}"))
    };
    let local = |path: std::path::PathBuf| -> Result<(Arc<dyn ObjectStore>, Path)> {
        std::fs::create_dir_all(&path).map_err(|e| unwritable(e.to_string()))?;
        let absolute = std::fs::canonicalize(&path).map_err(|e| unwritable(e.to_string()))?;
        let probe = absolute.join(".riffle-write-check");
        std::fs::write(&probe, b"").map_err(|e| unwritable(e.to_string()))?;
        let _ = std::fs::remove_file(&probe);
        let folder =
            Path::from_filesystem_path(&absolute).map_err(|e| unwritable(e.to_string()))?;
        Ok((Arc::new(LocalFileSystem::new()), folder))
    };
    match url::Url::parse(dir) {
        Ok(url) if url.scheme() == "file" => {
            let path = url
                .to_file_path()
                .map_err(|_| unwritable("not a local path".into()))?;
            local(path)
        }
        // One letter is a Windows drive, not a scheme.
        Ok(url) if url.scheme().len() > 1 => {
            let base = ObjectStoreUrl::parse(&url[..url::Position::BeforePath])
                .map_err(|e| unwritable(e.to_string()))?;
            let store = context.runtime_env().object_store(&base).map_err(|_| {
                unwritable(format!(
                    "no object store is registered for {}",
                    base.as_str()
                ))
                .with_hint("declare a table on that store first (its options register it), or use a local folder")
            })?;
            let folder = Path::from_url_path(url.path()).map_err(|e| unwritable(e.to_string()))?;
            Ok((store, folder))
        }
        _ => local(std::path::PathBuf::from(dir)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_strategies_follow_flinks_defaults_and_delays() {
        let mut options = Options::new();
        assert_eq!(
            JobSettings::from_options(&options).unwrap().restart,
            RestartStrategy::None,
            "no checkpointing, no restarts"
        );
        options
            .set("execution.checkpointing.interval", "1 s")
            .unwrap();
        let settings = JobSettings::from_options(&options).unwrap();
        let strategy = settings.restart;
        assert_eq!(strategy.delay(1), Some(Duration::from_secs(1)));
        assert_eq!(strategy.delay(2), Some(Duration::from_secs(2)));
        assert_eq!(strategy.delay(10), Some(Duration::from_secs(60)), "capped");
        options.set("restart-strategy.type", "fixed-delay").unwrap();
        options
            .set("restart-strategy.fixed-delay.attempts", "2")
            .unwrap();
        options
            .set("restart-strategy.fixed-delay.delay", "0 ms")
            .unwrap();
        let strategy = JobSettings::from_options(&options).unwrap().restart;
        assert_eq!(strategy.delay(2), Some(Duration::ZERO));
        assert_eq!(strategy.delay(3), None, "attempts exhausted");
    }

    #[test]
    fn an_unwritable_checkpoint_folder_is_named() {
        let context = TaskContext::default();
        let file = tempfile::NamedTempFile::new().unwrap();
        let under_a_file = file.path().join("checkpoints");
        let error = checkpoint_location(under_a_file.to_str().unwrap(), &context)
            .err()
            .unwrap();
        assert!(
            error.to_string().contains("cannot hold checkpoints"),
            "{error}"
        );
    }
}
