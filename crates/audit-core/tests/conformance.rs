//! The in-memory backend passes the conformance kit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use audit_core::testing::Harness;
use audit_core::{MemorySink, Sink};

#[derive(Default)]
struct Memory {
    logs: Mutex<HashMap<String, MemorySink>>,
}

#[async_trait]
impl Harness for Memory {
    async fn open(&self, name: &str) -> Arc<dyn Sink> {
        let mut logs = self.logs.lock().expect("lock");
        Arc::new(
            logs.entry(name.to_string())
                .or_insert_with(|| MemorySink::new(name))
                .clone(),
        )
    }
}

audit_core::conformance_tests!(Memory::default());
