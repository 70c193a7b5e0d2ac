//! Object stores by URL: `file://` (and plain paths), `s3://`, `gs://`, `az://`.
//!
//! Credentials and endpoints come from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`, as
//! the object_store crate reads them) and from table options prefixed with the scheme:
//! `'s3.endpoint' = 'http://127.0.0.1:9000'`, `'s3.access-key-id' = '...'`,
//! `'s3.allow-http' = 'true'`, and so on (any key the object_store builder knows, with
//! dashes or underscores).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use riffle_common::{Result, RiffleError};
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
            for (key, value) in scheme_options(options, "s3") {
                let parsed =
                    AmazonS3ConfigKey::from_str(&key).map_err(|_| unknown_option("s3", &key))?;
                builder = builder.with_config(parsed, value);
            }
            Arc::new(builder.build().map_err(|e| store_config_error(url, e))?)
        }
        "gs" => {
            let mut builder = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            for (key, value) in scheme_options(options, "gs") {
                let parsed =
                    GoogleConfigKey::from_str(&key).map_err(|_| unknown_option("gs", &key))?;
                builder = builder.with_config(parsed, value);
            }
            Arc::new(builder.build().map_err(|e| store_config_error(url, e))?)
        }
        "az" | "abfs" | "abfss" => {
            let mut builder = MicrosoftAzureBuilder::from_env().with_url(url.as_str());
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
    let mut root = url.clone();
    root.set_path("");
    runtime.register_object_store(&root, store);
    Ok(())
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
        .collect()
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
    if let Ok(url) = Url::parse(path) {
        if url.scheme().len() > 1 {
            return Ok(url);
        }
    }
    let absolute = std::path::absolute(path)
        .map_err(|e| RiffleError::user(format!("invalid path '{path}': {e}")))?;
    Url::from_file_path(&absolute).map_err(|_| RiffleError::user(format!("invalid path '{path}'")))
}
