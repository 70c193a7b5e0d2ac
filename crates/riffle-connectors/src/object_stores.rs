//! Object stores by URL: `file://` (and plain paths), `s3://`, `gs://`, `az://`.
//!
//! Credentials and endpoints come from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`, as
//! the object_store crate reads them) and from table options prefixed with the scheme:
//! `'s3.endpoint' = 'http://127.0.0.1:9000'`, `'s3.access-key-id' = '...'`,
//! `'s3.allow-http' = 'true'`, and so on (any key the object_store builder knows, with
//! dashes or underscores). Two more keys bound how long a failing store is retried, with
//! backoff: `'<scheme>.max-retries'` (default 10) and `'<scheme>.retry-timeout'` (seconds, or
//! a number with `ms`/`s`/`m`; default 3 minutes).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::{ObjectStore, RetryConfig};
use riffle_common::{Result, RiffleError};

use crate::faulty_store::{FaultyStore, StoreFaults};
use url::Url;

/// Makes sure `runtime` can reach the store that `url` names, building it from `options`.
/// Local paths need nothing: DataFusion knows the local file system.
pub fn register_object_store(
    runtime: &RuntimeEnv,
    url: &Url,
    options: &BTreeMap<String, String>,
) -> Result<()> {
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "file" => return Ok(()),
        "s3" | "s3a" => {
            let mut builder = AmazonS3Builder::from_env().with_url(url.as_str());
            builder = builder.with_retry(retry_config(options, "s3")?);
            for (key, value) in scheme_options(options, "s3") {
                let parsed =
                    AmazonS3ConfigKey::from_str(&key).map_err(|_| unknown_option("s3", &key))?;
                builder = builder.with_config(parsed, value);
            }
            Arc::new(builder.build().map_err(|e| store_config_error(url, e))?)
        }
        "gs" => {
            let mut builder = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            builder = builder.with_retry(retry_config(options, "gs")?);
            for (key, value) in scheme_options(options, "gs") {
                let parsed =
                    GoogleConfigKey::from_str(&key).map_err(|_| unknown_option("gs", &key))?;
                builder = builder.with_config(parsed, value);
            }
            Arc::new(builder.build().map_err(|e| store_config_error(url, e))?)
        }
        "az" | "abfs" | "abfss" => {
            let mut builder = MicrosoftAzureBuilder::from_env().with_url(url.as_str());
            builder = builder.with_retry(retry_config(options, "az")?);
            for (key, value) in scheme_options(options, "az") {
                let parsed =
                    AzureConfigKey::from_str(&key).map_err(|_| unknown_option("az", &key))?;
                builder = builder.with_config(parsed, value);
            }
            Arc::new(builder.build().map_err(|e| store_config_error(url, e))?)
        }
        other => {
            return Err(RiffleError::user(format!(
                "unsupported object store scheme '{other}' in {url}"
            ))
            .with_hint("use a local path, file://, s3://, gs:// or az://"));
        }
    };
    // Failure injection for tests and benchmarks (see `faulty_store`).
    let store: Arc<dyn ObjectStore> = match options.get("test.store-faults") {
        Some(faults) => Arc::new(FaultyStore::new(store, StoreFaults::parse(faults)?)),
        None => store,
    };
    let mut root = url.clone();
    root.set_path("");
    runtime.register_object_store(&root, store);
    Ok(())
}

/// Keys Riffle reads itself rather than passing to the store's builder.
const RETRY_KEYS: [&str; 2] = ["max_retries", "retry_timeout"];

/// The store `runtime` holds for `url` (registered by [`register_object_store`], or the local
/// file system).
pub fn registered_store(runtime: &RuntimeEnv, url: &Url) -> Result<Arc<dyn ObjectStore>> {
    let store_url = ObjectStoreUrl::parse(&url[..url::Position::BeforePath])?;
    Ok(runtime.object_store(&store_url)?)
}

/// The options for `scheme`, with the prefix removed and dashes turned into underscores.
fn scheme_options(options: &BTreeMap<String, String>, scheme: &str) -> Vec<(String, String)> {
    let prefix = format!("{scheme}.");
    options
        .iter()
        .filter_map(|(key, value)| {
            key.strip_prefix(&prefix)
                .map(|key| (key.replace('-', "_"), value.clone()))
        })
        .filter(|(key, _)| !RETRY_KEYS.contains(&key.as_str()))
        .collect()
}

/// How often and how long requests to the store are retried.
fn retry_config(options: &BTreeMap<String, String>, scheme: &str) -> Result<RetryConfig> {
    let mut config = RetryConfig::default();
    let option = |name: &str| {
        options
            .get(&format!("{scheme}.{name}"))
            .or_else(|| options.get(&format!("{scheme}.{}", name.replace('-', "_"))))
    };
    if let Some(value) = option("max-retries") {
        config.max_retries = value.trim().parse().map_err(|_| {
            RiffleError::user(format!(
                "'{scheme}.max-retries' must be a whole number, not '{value}'"
            ))
        })?;
    }
    if let Some(value) = option("retry-timeout") {
        config.retry_timeout = parse_duration(value).ok_or_else(|| {
            RiffleError::user(format!(
                "'{scheme}.retry-timeout' must be a duration such as '30s' or '500ms', not '{value}'"
            ))
        })?;
    }
    Ok(config)
}

/// Parses `500ms`, `30s`, `2m` or a plain number of seconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number.trim().parse().ok()?;
    (value >= 0.0 && value.is_finite()).then(|| Duration::from_secs_f64(value * scale))
}

fn unknown_option(scheme: &str, key: &str) -> RiffleError {
    RiffleError::user(format!("unknown object store option '{scheme}.{key}'")).with_hint(format!(
        "see the object_store crate's {scheme} configuration keys, e.g. '{scheme}.endpoint'"
    ))
}

fn store_config_error(url: &Url, error: object_store::Error) -> RiffleError {
    RiffleError::user(format!(
        "cannot configure the object store for {url}: {error}"
    ))
}

/// Parses a table path into a URL: a URL with a scheme, or a local path (made absolute).
pub fn parse_location(path: &str) -> Result<Url> {
    // A one-letter scheme is a Windows drive, not a URL.
    if let Ok(url) = Url::parse(path)
        && url.scheme().len() > 1
    {
        return Ok(url);
    }
    let absolute = std::path::absolute(path)
        .map_err(|e| RiffleError::user(format!("invalid path '{path}': {e}")))?;
    Url::from_file_path(without_dots(&absolute))
        .map_err(|_| RiffleError::user(format!("invalid path '{path}'")))
}

/// `path` with its `.` and `..` resolved by their names (as `os.path.abspath` does, not
/// following links): object stores refuse `..` in a path.
fn without_dots(path: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut resolved = std::path::PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            // Above the root is the root.
            Component::ParentDir => {
                resolved.pop();
            }
            other => resolved.push(other),
        }
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_are_absolute_without_dots_and_urls_stay() {
        let url = parse_location("/data/a/./b/../../photos/x.jpg").unwrap();
        assert_eq!(url.as_str(), "file:///data/photos/x.jpg");
        assert_eq!(parse_location("/../x").unwrap().as_str(), "file:///x");
        let here = std::env::current_dir().unwrap();
        let relative = parse_location("../sibling").unwrap();
        let expected = Url::from_file_path(here.parent().unwrap().join("sibling")).unwrap();
        assert_eq!(relative, expected);
        // A URL is the url crate's, which resolves dot segments too.
        let s3 = parse_location("s3://bucket/a/../b").unwrap();
        assert_eq!(s3.as_str(), "s3://bucket/b");
    }
}
