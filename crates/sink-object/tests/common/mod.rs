//! Shared by the object sink's test files.

use sink_object::{ObjectSinkConfig, Service};

/// The sink `obj` over OpenDAL's fs service rooted at `root`, log `audit/log`.
pub fn fs_config(root: &std::path::Path) -> ObjectSinkConfig {
    ObjectSinkConfig::new(
        "obj",
        Service::Fs {
            root: root.to_path_buf(),
        },
        "audit",
        "log",
    )
}
