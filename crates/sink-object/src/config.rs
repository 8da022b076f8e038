//! Object sink settings and building an OpenDAL operator from them.

use std::time::Duration;

use audit_core::SinkError;
use opendal::Operator;

/// S3 connection settings. Credentials come from the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`) when not given here.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// The bucket.
    pub bucket: String,
    /// The endpoint, e.g. `http://127.0.0.1:3900`; AWS when empty.
    pub endpoint: Option<String>,
    /// The region, e.g. `garage` or `us-east-1`.
    pub region: Option<String>,
    /// Access key; `AWS_ACCESS_KEY_ID` when absent.
    pub access_key_id: Option<String>,
    /// Secret key; `AWS_SECRET_ACCESS_KEY` when absent.
    pub secret_access_key: Option<String>,
}

/// Which OpenDAL service holds the objects.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Service {
    /// In memory, for tests.
    Memory,
    /// A local directory (OpenDAL's fs service).
    #[cfg(feature = "services-fs")]
    Fs {
        /// The root directory.
        root: std::path::PathBuf,
    },
    /// S3 or an S3-compatible store.
    #[cfg(feature = "services-s3")]
    S3(S3Options),
    /// Google Cloud Storage; credentials from `credential_path` or the environment.
    #[cfg(feature = "services-gcs")]
    Gcs {
        /// The bucket.
        bucket: String,
        /// A service-account JSON file.
        credential_path: Option<String>,
        /// Another endpoint (an emulator, say).
        endpoint: Option<String>,
    },
    /// Azure Blob Storage; the account key from `AZURE_STORAGE_KEY` when absent.
    #[cfg(feature = "services-azblob")]
    Azblob {
        /// The container.
        container: String,
        /// The endpoint, e.g. `https://ACCOUNT.blob.core.windows.net`.
        endpoint: String,
        /// The storage account.
        account_name: String,
        /// The account key.
        account_key: Option<String>,
    },
}

/// Where and how an object sink writes.
#[derive(Debug, Clone)]
pub struct ObjectSinkConfig {
    /// The sink's name.
    pub name: String,
    /// The service.
    pub service: Service,
    /// A key prefix inside the service (may be empty).
    pub prefix: String,
    /// The log's identity: objects live under `<prefix>/<log_id>/`.
    pub log_id: String,
    /// Write at most one segment object per this interval: appends that come
    /// sooner wait, and the writer gathers what arrives meanwhile into the next
    /// call. Zero writes one object per batch at once.
    pub min_segment_interval: Duration,
    /// Per-operation timeout (OpenDAL's timeout layer).
    pub op_timeout: Duration,
    /// Retries with exponential backoff for temporary errors (OpenDAL's retry layer).
    pub retries: usize,
    /// On a store that does not enforce `If-None-Match` (Garage), how long a
    /// writer's lease on the log lasts without renewal: a writer that died
    /// without releasing it keeps others out this long. At least three times
    /// the longest write (`op_timeout` times `retries + 1`, plus backoff) is
    /// used, whatever is set here. See docs/OBJECT_STORAGE.md.
    pub lease_ttl: Duration,
}

impl ObjectSinkConfig {
    /// Defaults: no prefix, one object per batch, 10-second operations, 4 retries.
    pub fn new(
        name: impl Into<String>,
        service: Service,
        prefix: impl Into<String>,
        log_id: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            service,
            prefix: prefix.into(),
            log_id: log_id.into(),
            min_segment_interval: Duration::ZERO,
            op_timeout: Duration::from_secs(10),
            retries: 4,
            lease_ttl: Duration::from_secs(30),
        }
    }

    /// The longest one write can take: every attempt times out after
    /// `op_timeout`, and the retry layer waits at most 2 s between attempts.
    pub(crate) fn write_budget(&self) -> Duration {
        let attempts = u32::try_from(self.retries.saturating_add(1)).unwrap_or(u32::MAX);
        self.op_timeout.saturating_mul(attempts)
            + Duration::from_secs(2).saturating_mul(attempts - 1)
    }

    /// How the service is named in errors: `s3 bucket b`, `fs /dir`, `memory`.
    pub fn describe(&self) -> String {
        match &self.service {
            Service::Memory => "memory".into(),
            #[cfg(feature = "services-fs")]
            Service::Fs { root } => format!("fs {}", root.display()),
            #[cfg(feature = "services-s3")]
            Service::S3(o) => format!(
                "s3 bucket {} at {}",
                o.bucket,
                o.endpoint.as_deref().unwrap_or("AWS")
            ),
            #[cfg(feature = "services-gcs")]
            Service::Gcs { bucket, .. } => format!("gcs bucket {bucket}"),
            #[cfg(feature = "services-azblob")]
            Service::Azblob {
                container,
                endpoint,
                ..
            } => format!("azblob container {container} at {endpoint}"),
        }
    }

    /// The key directory of this log: `<prefix>/<log_id>/`.
    pub(crate) fn log_dir(&self) -> String {
        let p = self.prefix.trim_matches('/');
        if p.is_empty() {
            format!("{}/", self.log_id)
        } else {
            format!("{p}/{}/", self.log_id)
        }
    }

    pub(crate) fn operator(&self) -> Result<Operator, SinkError> {
        let err = |e: opendal::Error| SinkError::Config {
            sink: self.name.clone(),
            detail: format!("{}: {e}", self.describe()),
        };
        let op = match &self.service {
            Service::Memory => Operator::new(opendal::services::Memory::default()).map_err(err)?,
            #[cfg(feature = "services-fs")]
            Service::Fs { root } => {
                let root = root.to_str().ok_or_else(|| SinkError::Config {
                    sink: self.name.clone(),
                    detail: format!("fs root {} is not UTF-8", root.display()),
                })?;
                Operator::new(opendal::services::Fs::default().root(root)).map_err(err)?
            }
            #[cfg(feature = "services-s3")]
            Service::S3(o) => {
                let mut b = opendal::services::S3::default()
                    .bucket(&o.bucket)
                    .disable_ec2_metadata();
                if let Some(e) = &o.endpoint {
                    b = b.endpoint(e);
                }
                b = b.region(o.region.as_deref().unwrap_or("us-east-1"));
                let key = o
                    .access_key_id
                    .clone()
                    .or_else(|| std::env::var("AWS_ACCESS_KEY_ID").ok());
                let secret = o
                    .secret_access_key
                    .clone()
                    .or_else(|| std::env::var("AWS_SECRET_ACCESS_KEY").ok());
                if let (Some(k), Some(s)) = (key, secret) {
                    b = b.access_key_id(&k).secret_access_key(&s);
                }
                Operator::new(b).map_err(err)?
            }
            #[cfg(feature = "services-gcs")]
            Service::Gcs {
                bucket,
                credential_path,
                endpoint,
            } => {
                let mut b = opendal::services::Gcs::default().bucket(bucket);
                if let Some(p) = credential_path {
                    b = b.credential_path(p);
                }
                if let Some(e) = endpoint {
                    b = b.endpoint(e);
                }
                Operator::new(b).map_err(err)?
            }
            #[cfg(feature = "services-azblob")]
            Service::Azblob {
                container,
                endpoint,
                account_name,
                account_key,
            } => {
                let mut b = opendal::services::Azblob::default()
                    .container(container)
                    .endpoint(endpoint)
                    .account_name(account_name);
                let key = account_key
                    .clone()
                    .or_else(|| std::env::var("AZURE_STORAGE_KEY").ok());
                if let Some(k) = key {
                    b = b.account_key(&k);
                }
                Operator::new(b).map_err(err)?
            }
        };
        Ok(op
            .layer(
                opendal::layers::RetryLayer::new()
                    .with_max_times(self.retries)
                    .with_jitter()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_delay(Duration::from_secs(2)),
            )
            .layer(opendal::layers::TimeoutLayer::new().with_timeout(self.op_timeout)))
    }
}
