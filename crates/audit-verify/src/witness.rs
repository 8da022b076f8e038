//! Reading a witness directory: every checkpoint note in it, by content, with
//! special files refused and names checked against what the notes hold.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use audit_core::Hash32;

/// The largest note a witness directory may hold; a checkpoint note is a few
/// hundred bytes.
const MAX_NOTE: u64 = 64 * 1024;

/// One note from the witness directory, parsed but not yet signature-checked
/// (the keys may only be known at the end of the log, after its rotations).
#[derive(Debug, Clone)]
pub(crate) struct WitnessNote {
    pub path: PathBuf,
    pub note: String,
    pub seq: u64,
    pub head: Hash32,
}

/// Why a witness directory cannot be used.
pub(crate) type WitnessError = String;

/// A witness file whose name is not what its content says, and why.
pub(crate) type Misnamed = (PathBuf, String);

/// The sequence a witness file name promises: `checkpoint-<20 digits>.note`
/// or `checkpoint-<20 digits>.<digits>.note`.
fn named_seq(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("checkpoint-")?.strip_suffix(".note")?;
    let (digits, extra) = rest.split_at_checked(20)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match extra.strip_prefix('.') {
        None if extra.is_empty() => {}
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {}
        _ => return None,
    }
    digits.parse().ok()
}

/// Opens a regular file without blocking on a FIFO or a device.
pub(crate) fn read_regular(path: &Path) -> Result<String, WitnessError> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        // O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer.
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("witness note {}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("witness note {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "witness note {} is not a regular file (a FIFO, device or directory); refusing to read it",
            path.display()
        ));
    }
    if meta.len() > MAX_NOTE {
        return Err(format!(
            "witness note {} is {} bytes, larger than any checkpoint note",
            path.display(),
            meta.len()
        ));
    }
    let mut text = String::new();
    f.take(MAX_NOTE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("witness note {}: {e}", path.display()))?;
    Ok(text)
}

/// Every note in `dir` whose name starts with `checkpoint-`. A name that is
/// not a witness name, or that disagrees with the note's content, is
/// reported in the second list (an integrity finding: names are how a reader
/// without this check would pick the newest note).
pub(crate) fn read_dir(dir: &Path) -> Result<(Vec<WitnessNote>, Vec<Misnamed>), WitnessError> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("witness {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("witness {} is not a directory", dir.display()));
    }
    let mut notes = Vec::new();
    let mut misnamed = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("witness {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("witness {}: {e}", dir.display()))?;
        let name = entry.file_name();
        let path = entry.path();
        let Some(name) = name.to_str() else {
            continue;
        };
        if !name.starts_with("checkpoint-") {
            continue;
        }
        let text = read_regular(&path)?;
        let Some((seq, head)) = parse_body(&text) else {
            misnamed.push((path, "is not a checkpoint note".to_string()));
            continue;
        };
        match named_seq(name) {
            Some(n) if n == seq => notes.push(WitnessNote {
                path,
                note: text,
                seq,
                head,
            }),
            Some(n) => misnamed.push((
                path,
                format!("is named for record {n} but holds a checkpoint of record {seq}"),
            )),
            None => misnamed.push((
                path,
                format!(
                    "holds a checkpoint of record {seq} but is not named checkpoint-{seq:020}.note"
                ),
            )),
        }
    }
    notes.sort_by(|a, b| a.seq.cmp(&b.seq).then_with(|| a.path.cmp(&b.path)));
    Ok((notes, misnamed))
}

/// The sequence and hash a checkpoint note's body names (lines 2 and 3).
fn parse_body(note: &str) -> Option<(u64, Hash32)> {
    use base64::Engine as _;
    let body = note.split("\n\n").next()?;
    let mut lines = body.split('\n');
    let _origin = lines.next()?;
    let seq = lines.next()?.parse::<u64>().ok()?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(lines.next()?)
        .ok()?;
    Some((seq, Hash32(<[u8; 32]>::try_from(raw).ok()?)))
}

#[cfg(test)]
mod tests {
    use super::named_seq;

    #[test]
    fn witness_names() {
        assert_eq!(named_seq("checkpoint-00000000000000000099.note"), Some(99));
        assert_eq!(
            named_seq("checkpoint-00000000000000000099.17.note"),
            Some(99)
        );
        assert_eq!(named_seq("checkpoint-00000000000000000099.junk"), None);
        assert_eq!(named_seq("checkpoint-00000000000000000099.x.note"), None);
        assert_eq!(named_seq("checkpoint-0099.note"), None);
    }
}
