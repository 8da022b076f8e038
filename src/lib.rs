//! auditlog facade (filled in by the writer issue).
