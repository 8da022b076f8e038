//! Comparing copies: lockstep by sequence, bounded memory.

use audit_core::{record_hash, Hash32, RecordCursor, StoredRecord};

use crate::finding::{Finding, FindingClass, Severity, SourceReport};
use crate::{Source, VerifyError, VerifyOptions};

struct Copy {
    cursor: Box<dyn RecordCursor>,
    buffered: std::vec::IntoIter<StoredRecord>,
    current: Option<(u64, Hash32, String)>,
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
                let Ok(p) = audit_core::parse_record(&item.text) else {
                    continue;
                };
                // Out-of-order items were reported by the single-source pass.
                if p.seq <= self.last_seq {
                    continue;
                }
                self.last_seq = p.seq;
                self.current = Some((p.seq, record_hash(&item.text), item.location.to_string()));
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
    while let Some(min) = copies
        .iter()
        .filter(|c| !c.forked)
        .filter_map(|c| c.current.as_ref().map(|x| x.0))
        .min()
    {
        let at: Vec<usize> = (0..copies.len())
            .filter(|&i| {
                !copies[i].forked && copies[i].current.as_ref().is_some_and(|x| x.0 == min)
            })
            .collect();
        // The majority hash wins; on a tie, the earliest source listed.
        let mut votes: Vec<(Hash32, usize, usize)> = Vec::new();
        for &i in &at {
            let h = copies[i]
                .current
                .as_ref()
                .map(|x| x.1)
                .unwrap_or(Hash32([0; 32]));
            match votes.iter_mut().find(|v| v.0 == h) {
                Some(v) => v.1 += 1,
                None => votes.push((h, 1, i)),
            }
        }
        votes.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        let (winner, _, reference) = votes[0];
        for &i in &at {
            let Some((_, h, loc)) = copies[i].current.clone() else {
                continue;
            };
            if h != winner {
                copies[i].forked = true;
                reports[i].findings.push(Finding {
                    class: FindingClass::Forked,
                    severity: Severity::Error,
                    seq: Some(min),
                    location: loc,
                    detail: format!(
                        "this copy diverges from {} at sequence {min}: record hash {h} instead of {winner}",
                        sources[reference].describe()
                    ),
                });
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
    let holder = copies
        .iter()
        .position(|c| !c.forked && c.last_seq == longest)
        .unwrap_or(0);
    for (i, c) in copies.iter().enumerate() {
        if !c.forked && c.last_seq < longest {
            reports[i].findings.push(Finding {
                class: FindingClass::Truncated,
                severity: Severity::Error,
                seq: Some(c.last_seq + 1),
                location: reports[i].source.clone(),
                detail: format!(
                    "this copy ends at sequence {} while {} reaches {longest}",
                    c.last_seq,
                    sources[holder].describe()
                ),
            });
        }
    }
    Ok(())
}
