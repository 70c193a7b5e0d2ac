//! Job configuration.

use crate::options::Options;

/// How a job runs: its default parallelism, batch size and channel credits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobConfig {
    /// Default number of parallel subtasks per vertex (the machine's cores by default).
    pub parallelism: usize,
    /// Target rows per batch produced by sources.
    pub batch_size: usize,
    /// Credit of one channel, in batches: a producer waits once this many are queued.
    pub channel_credit_batches: usize,
    /// Credit of one channel, in bytes of Arrow buffers queued.
    pub channel_credit_bytes: usize,
    /// Rows per batch through asynchronous functions (`file_read`, `url_download`) and the
    /// operators after them: small, because each row may be a whole image or document.
    pub async_batch_rows: usize,
    /// Options set by key (`SET 'key' = 'value'`, `-D key=value`): checkpointing, URL policy.
    pub options: Options,
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            parallelism: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            batch_size: 8192,
            channel_credit_batches: 8,
            channel_credit_bytes: 64 * 1024 * 1024,
            async_batch_rows: 32,
            options: Options::new(),
        }
    }
}

impl JobConfig {
    /// Sets the default parallelism (at least 1).
    pub fn with_parallelism(mut self, parallelism: usize) -> Self {
        self.parallelism = parallelism.max(1);
        self
    }

    /// Sets the rows per batch through asynchronous functions (at least 1).
    pub fn with_async_batch_rows(mut self, rows: usize) -> Self {
        self.async_batch_rows = rows.max(1);
        self
    }
}
