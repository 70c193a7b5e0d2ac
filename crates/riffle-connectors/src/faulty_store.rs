//! An object store that fails or delays writes on purpose: failure injection for tests and
//! benchmarks, set on a table as `'test.store-faults' = 'complete-every=3,copy-every=4'`.
//!
//! Keys (all optional): `put-every=N` fails every N-th single put, `complete-every=N` every
//! N-th completion of a multipart upload, `copy-every=N` every N-th copy (a rename on S3,
//! GCS and Azure is a copy), `delay=D` delays each of those calls by D (`20ms`, `1s`). Reads
//! and listings pass through. A failure is an error of the store, as a flaky network or
//! server gives, which restarts a job rather than failing it.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use riffle_common::{Result, RiffleError};

/// What to fail and how long to wait; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreFaults {
    put_every: Option<u64>,
    complete_every: Option<u64>,
    copy_every: Option<u64>,
    delay: Duration,
}

impl StoreFaults {
    /// Parses the option's value.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |what: String| {
            RiffleError::user(format!("option 'test.store-faults': {what} in '{text}'")).with_hint(
                "write 'complete-every=3,copy-every=4,put-every=5,delay=20ms' (any of them)",
            )
        };
        let mut faults = Self::default();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("'{pair}' is not key=value")))?;
            let every = || match value.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(bad(format!(
                    "{key} takes a count of at least 1, not '{value}'"
                ))),
            };
            match key.trim() {
                "put-every" => faults.put_every = every()?,
                "complete-every" => faults.complete_every = every()?,
                "copy-every" => faults.copy_every = every()?,
                "delay" => {
                    faults.delay =
                        riffle_common::options::parse_duration("test.store-faults", value)?
                }
                other => return Err(bad(format!("unknown key '{other}'"))),
            }
        }
        Ok(faults)
    }
}

/// Counts calls of one kind and fails every n-th.
#[derive(Debug, Default)]
struct Every {
    calls: AtomicU64,
}

impl Every {
    fn fails(&self, every: Option<u64>) -> bool {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        every.is_some_and(|n| call.is_multiple_of(n))
    }
}

fn injected(what: &str, path: &Path) -> object_store::Error {
    object_store::Error::Generic {
        store: "test.store-faults",
        source: format!("injected failure of {what} {path}").into(),
    }
}

/// Wraps a store with [`StoreFaults`].
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: StoreFaults,
    puts: Every,
    completes: Arc<Every>,
    copies: Every,
}

impl FaultyStore {
    /// `inner`, failing and delaying as `faults` says.
    pub fn new(inner: Arc<dyn ObjectStore>, faults: StoreFaults) -> Self {
        Self {
            inner,
            faults,
            puts: Every::default(),
            completes: Arc::default(),
            copies: Every::default(),
        }
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        tokio::time::sleep(self.faults.delay).await;
        if self.puts.fails(self.faults.put_every) {
            return Err(injected("put", location));
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultyUpload {
            inner: upload,
            location: location.clone(),
            completes: Arc::clone(&self.completes),
            faults: self.faults.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        tokio::time::sleep(self.faults.delay).await;
        if self.copies.fails(self.faults.copy_every) {
            return Err(injected("copy to", to));
        }
        self.inner.copy_opts(from, to, options).await
    }
}

/// A multipart upload whose completion fails every n-th time.
#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    location: Path,
    completes: Arc<Every>,
    faults: StoreFaults,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        tokio::time::sleep(self.faults.delay).await;
        if self.completes.fails(self.faults.complete_every) {
            return Err(injected("completing the upload of", &self.location));
        }
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test]
    async fn fails_every_nth_write_and_passes_the_rest() {
        let faults = StoreFaults::parse("put-every=2, copy-every=1").unwrap();
        let store = FaultyStore::new(Arc::new(InMemory::new()), faults);
        let a = Path::from("a");
        assert!(store.put(&a, PutPayload::from("x")).await.is_ok());
        let error = store.put(&a, PutPayload::from("x")).await.unwrap_err();
        assert!(
            error.to_string().contains("injected failure of put a"),
            "{error}"
        );
        assert!(store.copy(&a, &Path::from("b")).await.is_err());
        assert!(store.get(&a).await.is_ok(), "reads pass through");
    }

    #[test]
    fn a_malformed_value_names_what_is_wrong() {
        for (text, expected) in [
            ("complete-every=0", "at least 1"),
            ("sometimes", "not key=value"),
            ("explode-every=2", "unknown key 'explode-every'"),
        ] {
            let error = StoreFaults::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
