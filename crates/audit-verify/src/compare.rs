//! Comparing copies: lockstep by sequence, bounded memory. Where copies
//! disagree, the copy that fails its own checks there is named; when none
//! can be told wrong, every disagreeing copy is, whatever the listing order.

use audit_core::{parse_record, record_hash, Hash32, PrevHash, RecordCursor, StoredRecord};

use crate::finding::{Finding, FindingClass, Severity, SourceReport};
use crate::{Source, VerifyError, VerifyOptions};

/// One copy's record at the current sequence.
#[derive(Clone)]
struct Current {
    seq: u64,
    /// The hash of the bytes as stored: equal bytes, equal hash.
    computed: Hash32,
    /// The copy's own record fails a check here: its stored hash is not
    /// that of its bytes, or it does not link to the copy's record before it.
    broken: bool,
    location: String,
}

struct Copy {
    cursor: Box<dyn RecordCursor>,
    buffered: std::vec::IntoIter<StoredRecord>,
    current: Option<Current>,
    /// The last record taken: sequence and stored hash.
    last: Option<(u64, Hash32)>,
    last_seq: u64,
    forked: bool,
    done: bool,
}

impl Copy {
    async fn advance(&mut self, batch: usize) -> Result<(), audit_core::SinkError> {
        self.current = None;
        loop {
            for item in self.buffered.by_ref() {
                if item.oversized.is_some() || item.incomplete {
                    continue;
                }
                let Ok(p) = parse_record(&item.text) else {
                    continue;
                };
                // Out-of-order items were reported by the single-source pass.
                if p.seq <= self.last_seq {
                    continue;
                }
                let computed = record_hash(&item.text);
                let linked = match (self.last, p.prev) {
                    (_, PrevHash::Genesis) => p.seq == 1,
                    (Some((q, h)), PrevHash::Hash(prev)) if q.checked_add(1) == Some(p.seq) => {
                        h == prev
                    }
                    // A gap: the single-source pass reported it.
                    _ => true,
                };
                self.last_seq = p.seq;
                self.last = Some((p.seq, p.claimed_hash));
                self.current = Some(Current {
                    seq: p.seq,
                    computed,
                    broken: computed != p.claimed_hash || !linked,
                    location: item.location.to_string(),
                });
                return Ok(());
            }
            match self.cursor.next_batch(batch).await? {
                Some(items) => self.buffered = items.into_iter(),
                None => {
                    self.done = true;
                    return Ok(());
                }
            }
        }
    }
}

/// Whether a copy's own pass found it damaged at or after `seq` (a record
/// rewritten with recomputed hashes shows at its next signature), or
/// somewhere no sequence names.
fn damaged_from(report: &SourceReport, seq: u64) -> bool {
    report.findings_omitted > 0
        || report.findings.iter().any(|f| {
            f.severity == Severity::Error && f.seq.is_none_or(|q| q.saturating_add(1) >= seq)
        })
}

pub(crate) async fn compare(
    sources: &[Source],
    reports: &mut [SourceReport],
    options: &VerifyOptions,
) -> Result<(), VerifyError> {
    let mut copies = Vec::with_capacity(sources.len());
    for s in sources {
        let (reader, _, _) = s.open().await?;
        let cursor = reader.read_from(0).await.map_err(|e| VerifyError::Source {
            name: s.describe(),
            detail: e.to_string(),
        })?;
        copies.push(Copy {
            cursor,
            buffered: Vec::new().into_iter(),
            current: None,
            last: None,
            last_seq: 0,
            forked: false,
            done: false,
        });
    }
    let batch = options.batch;
    for (c, s) in copies.iter_mut().zip(sources) {
        c.advance(batch).await.map_err(|e| VerifyError::Source {
            name: s.describe(),
            detail: e.to_string(),
        })?;
    }
    // Each copy's own damage, from the single-source pass (before compare
    // adds anything).
    let own: Vec<SourceReport> = reports.to_vec();
    while let Some(min) = copies
        .iter()
        .filter(|c| !c.forked)
        .filter_map(|c| c.current.as_ref().map(|x| x.seq))
        .min()
    {
        let at: Vec<usize> = (0..copies.len())
            .filter(|&i| {
                !copies[i].forked && copies[i].current.as_ref().is_some_and(|x| x.seq == min)
            })
            .collect();
        // Group the copies by the bytes they hold at `min`.
        let mut groups: Vec<(Hash32, Vec<usize>)> = Vec::new();
        for &i in &at {
            let Some(c) = &copies[i].current else {
                continue;
            };
            match groups.iter_mut().find(|g| g.0 == c.computed) {
                Some(g) => g.1.push(i),
                None => groups.push((c.computed, vec![i])),
            }
        }
        if groups.len() > 1 {
            let bad = |i: usize| {
                copies[i].current.as_ref().is_some_and(|c| c.broken) || damaged_from(&own[i], min)
            };
            let good: Vec<usize> = (0..groups.len())
                .filter(|&g| groups[g].1.iter().all(|&i| !bad(i)))
                .collect();
            let known_good = (good.len() == 1).then(|| good[0]);
            for (g, (hash, members)) in groups.iter().enumerate() {
                if Some(g) == known_good {
                    continue;
                }
                for &i in members {
                    let Some(c) = copies[i].current.clone() else {
                        continue;
                    };
                    let others: Vec<String> = groups
                        .iter()
                        .enumerate()
                        .filter(|(o, _)| *o != g)
                        .flat_map(|(_, (_, m))| m.iter().map(|&j| sources[j].describe()))
                        .collect();
                    let detail = match known_good {
                        Some(k) => format!(
                            "this copy diverges at sequence {min}: it holds a record hashing to {hash}, while {} holds {} and passes its own checks there, and this copy does not",
                            groups[k].1.iter().map(|&j| sources[j].describe()).collect::<Vec<_>>().join(", "),
                            groups[k].0
                        ),
                        None => format!(
                            "the copies disagree at sequence {min} and none is known good: this copy holds a record hashing to {hash}, unlike {}",
                            others.join(", ")
                        ),
                    };
                    copies[i].forked = true;
                    reports[i].add(Finding {
                        class: FindingClass::Forked,
                        severity: Severity::Error,
                        seq: Some(min),
                        location: c.location,
                        detail,
                    });
                }
            }
        }
        for &i in &at {
            if !copies[i].forked {
                copies[i]
                    .advance(batch)
                    .await
                    .map_err(|e| VerifyError::Source {
                        name: sources[i].describe(),
                        detail: e.to_string(),
                    })?;
            }
        }
    }
    let longest = copies
        .iter()
        .filter(|c| !c.forked)
        .map(|c| c.last_seq)
        .max()
        .unwrap_or(0);
    let holders: Vec<String> = copies
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.forked && c.last_seq == longest)
        .map(|(i, _)| sources[i].describe())
        .collect();
    for (i, c) in copies.iter().enumerate() {
        if !c.forked && c.last_seq < longest {
            reports[i].add(Finding {
                class: FindingClass::Truncated,
                severity: Severity::Error,
                seq: Some(c.last_seq.saturating_add(1)),
                location: reports[i].source.clone(),
                detail: format!(
                    "this copy ends at sequence {} while {} reaches {longest}",
                    c.last_seq,
                    holders.join(", ")
                ),
            });
        }
    }
    Ok(())
}
