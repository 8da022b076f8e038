//! Segment files: naming, listing and finding the last line from the end.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// Segment files are `audit-<first sequence, 20 digits>[.<n>].jsonl`, so that a
/// plain name sort is chain order. The optional `.<n>` separates a fresh
/// segment from a replaced one that took the same first sequence.
pub const SEGMENT_PREFIX: &str = "audit-";
/// The segment file extension.
pub const SEGMENT_SUFFIX: &str = ".jsonl";

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Segment {
    /// The sequence the segment's first record should have.
    pub first_seq: u64,
    /// Disambiguator for segments sharing a first sequence.
    pub generation: u32,
    /// Its path.
    pub path: PathBuf,
}

/// The file name of a segment.
pub fn segment_name(first_seq: u64, generation: u32) -> String {
    if generation == 0 {
        format!("{SEGMENT_PREFIX}{first_seq:020}{SEGMENT_SUFFIX}")
    } else {
        format!("{SEGMENT_PREFIX}{first_seq:020}.{generation}{SEGMENT_SUFFIX}")
    }
}

/// What a file name says: a segment, a name of a segment's shape whose
/// numbers do not fit (no writer makes one, so it was planted), or neither.
#[derive(Debug, PartialEq, Eq)]
enum Name {
    Segment(u64, u32),
    OutOfRange,
    Other,
}

fn parse_name(name: &str) -> Name {
    let Some(rest) = name
        .strip_prefix(SEGMENT_PREFIX)
        .and_then(|r| r.strip_suffix(SEGMENT_SUFFIX))
    else {
        return Name::Other;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // Digits only: `parse` alone would also take a sign (`.+1`).
    let (seq, generation) = match rest.split_once('.') {
        Some((s, g)) if digits(g) => (s, Some(g)),
        Some(_) => return Name::Other,
        None => (rest, None),
    };
    if seq.len() != 20 || !digits(seq) {
        return Name::Other;
    }
    // A generation is 1 or more, without a leading zero: `X.0` or `X.01`
    // would sort beside `X` in one reader and elsewhere in another.
    if generation.is_some_and(|g| g.starts_with('0')) {
        return Name::OutOfRange;
    }
    match (seq.parse(), generation.map_or(Ok(0), str::parse)) {
        (Ok(seq), Ok(generation)) => Name::Segment(seq, generation),
        _ => Name::OutOfRange,
    }
}

/// The segments in `dir`, in chain order. Other files are ignored, except
/// one named like a segment whose numbers are out of range or whose
/// generation is written `0` or with a leading zero: an error.
pub fn list_segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_name(name) {
            Name::Segment(first_seq, generation) => out.push(Segment {
                first_seq,
                generation,
                path: entry.path(),
            }),
            // Skipping it would hide whatever it holds from one reader
            // while another reads it: refuse the directory instead.
            Name::OutOfRange => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: named like a segment, but its sequence or generation is out of range, or its generation is written 0 or with a leading zero (no writer makes such a name)",
                        entry.path().display()
                    ),
                ))
            }
            Name::Other => {}
        }
    }
    out.sort();
    Ok(out)
}

/// Where the file's complete lines end, and the last complete line.
#[derive(Debug)]
pub struct Tail {
    /// Length of the file up to and including the last newline.
    pub complete_len: u64,
    /// The file's length.
    pub file_len: u64,
    /// The last complete line without its newline, if any.
    pub last_line: Option<Vec<u8>>,
}

/// Where the data of a segment ends: its length without the run of NUL bytes
/// that preallocation leaves after the last record (see docs/FORMAT.md). No
/// record contains a NUL byte, so the run is never part of one.
pub fn data_end(file: &mut File) -> io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    // Preallocation leaves at most a few MiB of zeros. Past this many, the
    // tail is something else (a planted, terabyte-long sparse file, say), and
    // holes, which read as zeros, are skipped without being read.
    const SKIP_HOLES_AFTER: u64 = 64 << 20;
    let meta = file.metadata()?;
    let len = meta.len();
    let mut buf = Vec::new();
    if is_sparse(&meta) {
        // Only the data regions are read, last first: the holes between
        // them read as zeros and are skipped, however long (a hole before a
        // run of written zeros must not be read backwards either).
        if let Some(regions) = data_regions(file, len) {
            for &(from, to) in regions.iter().rev() {
                let mut end = to;
                while end > from {
                    let start = end.saturating_sub(CHUNK).max(from);
                    read_at(file, start, (end - start) as usize, &mut buf)?;
                    match buf.iter().rposition(|&b| b != 0) {
                        Some(i) => return Ok(start + i as u64 + 1),
                        None => end = start,
                    }
                }
            }
            return Ok(0);
        }
    }
    let mut end = len;
    let mut holes_checked = false;
    while end > 0 {
        if !holes_checked && len - end >= SKIP_HOLES_AFTER {
            holes_checked = true;
            end = end.min(last_data_end(file, end));
            continue;
        }
        let start = end.saturating_sub(CHUNK);
        read_at(file, start, (end - start) as usize, &mut buf)?;
        match buf.iter().rposition(|&b| b != 0) {
            Some(i) => return Ok(start + i as u64 + 1),
            None => end = start,
        }
    }
    Ok(0)
}

/// The file's data regions `[from, to)`, in order, by `SEEK_DATA`/`SEEK_HOLE`;
/// `None` where the filesystem cannot tell. As many as the file has
/// allocated extents, so bounded by what is stored, not by its length.
/// Leaves the file's cursor where it was.
#[cfg(target_os = "linux")]
fn data_regions(file: &File, len: u64) -> Option<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: lseek only moves this descriptor's offset, which is restored.
    let cursor = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) };
    if cursor < 0 {
        return None;
    }
    let mut regions = Vec::new();
    let mut pos: libc::off_t = 0;
    let ok = loop {
        // SAFETY: as above.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            // ENXIO: no data after `pos`; anything else: cannot tell.
            break io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole <= data {
            break false;
        }
        let (Ok(a), Ok(b)) = (u64::try_from(data), u64::try_from(hole)) else {
            break false;
        };
        regions.push((a.min(len), b.min(len)));
        if b >= len {
            break true;
        }
        pos = hole;
    };
    // SAFETY: as above.
    unsafe { libc::lseek(fd, cursor, libc::SEEK_SET) };
    ok.then_some(regions)
}

#[cfg(not(target_os = "linux"))]
fn data_regions(_file: &File, _len: u64) -> Option<Vec<(u64, u64)>> {
    None
}

/// Where the file's last data region ends, by `SEEK_DATA`/`SEEK_HOLE`; `len`
/// where the filesystem cannot tell. Leaves the file's cursor where it was.
#[cfg(target_os = "linux")]
fn last_data_end(file: &File, len: u64) -> u64 {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: lseek only moves this descriptor's offset, which is restored.
    let cursor = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) };
    if cursor < 0 {
        return len;
    }
    let mut pos: libc::off_t = 0;
    let mut end: libc::off_t = 0;
    let found = loop {
        // SAFETY: as above.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            // ENXIO: no data after `pos`; anything else: cannot tell.
            break io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            break false;
        }
        end = hole;
        pos = hole;
    };
    // SAFETY: as above.
    unsafe { libc::lseek(fd, cursor, libc::SEEK_SET) };
    if found {
        u64::try_from(end).map_or(len, |e| e.min(len))
    } else {
        len
    }
}

#[cfg(not(target_os = "linux"))]
fn last_data_end(_file: &File, len: u64) -> u64 {
    len
}

/// Where the next data region of `file` at or after `pos` starts, by
/// `SEEK_DATA`: `None` where the filesystem cannot tell, `len` when only a
/// hole follows. Leaves the file's cursor where it was.
#[cfg(target_os = "linux")]
pub fn next_data(file: &File, pos: u64, len: u64) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let at = libc::off_t::try_from(pos).ok()?;
    // SAFETY: lseek only moves this descriptor's offset, which is restored.
    let cursor = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) };
    if cursor < 0 {
        return None;
    }
    // SAFETY: as above.
    let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
    let found = if data < 0 {
        // ENXIO: nothing but a hole after `pos`.
        (io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO)).then_some(len)
    } else {
        u64::try_from(data).ok().map(|d| d.min(len))
    };
    // SAFETY: as above.
    unsafe { libc::lseek(fd, cursor, libc::SEEK_SET) };
    found
}

#[cfg(not(target_os = "linux"))]
pub fn next_data(_file: &File, _pos: u64, _len: u64) -> Option<u64> {
    None
}

/// Whether `file` has fewer blocks allocated than its length needs: a
/// sparse file, whose holes read as zeros without being stored.
#[cfg(unix)]
pub fn is_sparse(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.blocks().saturating_mul(512) < meta.len()
}

#[cfg(not(unix))]
pub fn is_sparse(_meta: &std::fs::Metadata) -> bool {
    false
}

/// The first NUL byte in `[from, to)` of `file`, if any.
pub fn find_nul(file: &mut File, from: u64, to: u64) -> io::Result<Option<u64>> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = Vec::new();
    let mut at = from;
    while at < to {
        let len = CHUNK.min(to - at);
        read_at(file, at, len as usize, &mut buf)?;
        if let Some(i) = memchr::memchr(0, &buf) {
            return Ok(Some(at + i as u64));
        }
        at += len;
    }
    Ok(None)
}

/// The offset just after the last newline before `pos` (0 if none).
pub fn line_start_before(file: &mut File, pos: u64) -> io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut end = pos;
    let mut buf = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        read_at(file, start, (end - start) as usize, &mut buf)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Reads backwards from the end of `file` to find the last complete line,
/// touching only the last line (and any torn bytes after it), never the rest.
pub fn read_tail(file: &mut File, max_line: usize) -> io::Result<Tail> {
    let file_len = file.metadata()?.len();
    read_tail_until(file, file_len, max_line)
}

/// [`read_tail`] for the first `file_len` bytes of `file`.
pub fn read_tail_until(file: &mut File, file_len: u64, max_line: usize) -> io::Result<Tail> {
    const CHUNK: u64 = 64 * 1024;
    // Pass 1: the last newline.
    let mut end = file_len;
    let mut last_nl: Option<u64> = None;
    let mut buf = Vec::new();
    while end > 0 && last_nl.is_none() {
        let start = end.saturating_sub(CHUNK);
        read_at(file, start, (end - start) as usize, &mut buf)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            last_nl = Some(start + i as u64);
        }
        end = start;
        if file_len - end > max_line as u64 + CHUNK && last_nl.is_none() {
            break;
        }
    }
    let Some(nl) = last_nl else {
        return Ok(Tail {
            complete_len: 0,
            file_len,
            last_line: None,
        });
    };
    // Pass 2: the newline before it, bounded by the longest line we accept.
    let mut line_start = 0u64;
    let mut end = nl;
    let mut found = false;
    while end > 0 && !found {
        let start = end
            .saturating_sub(CHUNK)
            .max(nl.saturating_sub(max_line as u64 + 1));
        read_at(file, start, (end - start) as usize, &mut buf)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            line_start = start + i as u64 + 1;
            found = true;
        }
        if start == nl.saturating_sub(max_line as u64 + 1) && !found && start > 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("last line is longer than {max_line} bytes"),
            ));
        }
        end = start;
    }
    let mut line = Vec::new();
    read_at(file, line_start, (nl - line_start) as usize, &mut line)?;
    Ok(Tail {
        complete_len: nl + 1,
        file_len,
        last_line: Some(line),
    })
}

/// Positional, so the file's cursor stays where a sequential reader left it.
fn read_at(file: &mut File, offset: u64, len: usize, buf: &mut Vec<u8>) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    buf.clear();
    buf.resize(len, 0);
    file.read_exact_at(buf, offset)
}

/// Opens an existing segment, refusing anything but a regular file. A FIFO or
/// device planted under a segment's name would otherwise block the open or
/// feed bytes without end. `O_NONBLOCK` keeps a FIFO from blocking the open;
/// it has no effect on regular files.
pub fn open_segment(path: &Path, write: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    match audit_core::worker::special_file_kind(&file.metadata()?.file_type()) {
        None => Ok(file),
        Some(what) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a segment must be a regular file; this is {what}"),
        )),
    }
}

/// fsyncs a directory so that a created, renamed or removed entry is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
