//! Call detail records: append-only, keyed by an id that only ever grows (the next id
//! is kept in `meta`, so ids are not reused even if old records are pruned one day).

use super::{META, Store, StoreResult, decode, encode};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

pub(super) const TABLE: TableDefinition<u64, &str> = TableDefinition::new("cdrs");
const NAME: &str = "cdrs";
const NEXT_ID_KEY: &str = "next_cdr_id";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Disposition {
    Answered,
    Busy,
    NoAnswer,
    Failed,
    Cancelled,
}

/// Which side ended the call; `System` for timeouts, errors, dialplan rejects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HangupBy {
    Caller,
    Callee,
    System,
}

/// One call. Times are seconds since the UNIX epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cdr {
    /// The A leg's Call-ID.
    pub call_id: String,
    pub caller: String,
    pub callee: String,
    pub start_unix: u64,
    #[serde(default)]
    pub answer_unix: Option<u64>,
    pub end_unix: u64,
    /// Answered time (end − answer); 0 for an unanswered call.
    pub duration_secs: u64,
    pub disposition: Disposition,
    pub hangup_by: HangupBy,
    /// The SIP status or Reason that ended the call, e.g. `"BYE"`, `"486 Busy Here"`.
    pub hangup_cause: String,
    /// What the call's media did (empty for a call that never had any).
    #[serde(flatten, default)]
    pub media: CallMedia,
}

/// The media of one call, per leg (the caller's and the callee's): the codec it used,
/// RTP packets received from its phone, lost on the way and the interarrival jitter;
/// and how audio crossed between the legs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallMedia {
    pub caller_codec: String,
    pub callee_codec: String,
    /// `relayed` (packets passed through), `transcoded` (decoded and encoded in at
    /// least one direction), or empty.
    pub media_path: String,
    pub caller_packets: u64,
    pub callee_packets: u64,
    pub caller_lost: u64,
    pub callee_lost: u64,
    pub caller_jitter_ms: u64,
    pub callee_jitter_ms: u64,
    /// Keys pressed on either phone, in order (RFC 4733, SIP INFO or in-band).
    pub dtmf: String,
}

impl Store {
    /// Appends a record; returns its id (ids start at 1).
    pub fn append_cdr(&self, cdr: &Cdr) -> StoreResult<u64> {
        let ids = self.append_cdrs(std::slice::from_ref(cdr))?;
        Ok(ids.first().copied().unwrap_or_default())
    }

    /// Appends several records in one write transaction (one disk sync), returning
    /// their ids in order: the CDR writer batches what queued while it last wrote.
    pub fn append_cdrs(&self, cdrs: &[Cdr]) -> StoreResult<Vec<u64>> {
        let rows = cdrs
            .iter()
            .map(|c| encode(NAME, c))
            .collect::<StoreResult<Vec<_>>>()?;
        self.write(|txn| {
            let mut meta = txn.open_table(META)?;
            let first = meta.get(NEXT_ID_KEY)?.map_or(1, |v| v.value());
            let mut table = txn.open_table(TABLE)?;
            let mut ids = Vec::with_capacity(rows.len());
            for (i, json) in rows.iter().enumerate() {
                let id = first + i as u64;
                table.insert(id, json.as_str())?;
                ids.push(id);
            }
            meta.insert(NEXT_ID_KEY, first + rows.len() as u64)?;
            Ok(ids)
        })
    }

    /// At most `limit` records in id order: with `after_id`, the first ones after it
    /// (to page forward or poll for new calls); without, the latest ones.
    pub fn list_cdrs(&self, limit: usize, after_id: Option<u64>) -> StoreResult<Vec<(u64, Cdr)>> {
        self.read(|txn| {
            let table = txn.open_table(TABLE)?;
            let rows: Vec<_> = match after_id {
                Some(after) => table
                    .range(after.saturating_add(1)..)?
                    .take(limit)
                    .collect(),
                None => {
                    let mut latest: Vec<_> = table.iter()?.rev().take(limit).collect();
                    latest.reverse();
                    latest
                }
            };
            rows.into_iter()
                .map(|row| {
                    let (id, json) = row?;
                    Ok((id.value(), decode(NAME, json.value())?))
                })
                .collect()
        })
    }
}

/// RFC 4180 CSV with a header row.
pub fn cdrs_to_csv(rows: &[(u64, Cdr)]) -> String {
    let mut out = String::from(
        "id,call_id,caller,callee,start_unix,answer_unix,end_unix,duration_secs,disposition,hangup_by,hangup_cause,\
         caller_codec,callee_codec,media_path,caller_packets,callee_packets,caller_lost,callee_lost,\
         caller_jitter_ms,callee_jitter_ms,dtmf\r\n",
    );
    for (id, c) in rows {
        let fields = [
            id.to_string(),
            c.call_id.clone(),
            c.caller.clone(),
            c.callee.clone(),
            c.start_unix.to_string(),
            c.answer_unix.map(|a| a.to_string()).unwrap_or_default(),
            c.end_unix.to_string(),
            c.duration_secs.to_string(),
            serde_json::to_value(c.disposition)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            serde_json::to_value(c.hangup_by)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            c.hangup_cause.clone(),
            c.media.caller_codec.clone(),
            c.media.callee_codec.clone(),
            c.media.media_path.clone(),
            c.media.caller_packets.to_string(),
            c.media.callee_packets.to_string(),
            c.media.caller_lost.to_string(),
            c.media.callee_lost.to_string(),
            c.media.caller_jitter_ms.to_string(),
            c.media.callee_jitter_ms.to_string(),
            c.media.dtmf.clone(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    /// Even-numbered calls were answered, odd ones not.
    fn cdr(n: u64) -> Cdr {
        let answered = n.is_multiple_of(2);
        Cdr {
            call_id: format!("call-{n}@pbx"),
            caller: "1001".into(),
            callee: "1002".into(),
            start_unix: 1000 + n,
            answer_unix: answered.then_some(1005 + n),
            end_unix: 1060 + n,
            duration_secs: if answered { 55 } else { 0 },
            disposition: if answered {
                Disposition::Answered
            } else {
                Disposition::NoAnswer
            },
            hangup_by: HangupBy::Callee,
            hangup_cause: "BYE".into(),
            media: CallMedia {
                caller_codec: "PCMU".into(),
                callee_codec: "G722".into(),
                media_path: "transcoded".into(),
                caller_packets: 100 * n,
                ..CallMedia::default()
            },
        }
    }

    #[test]
    fn cdrs_append_and_list() {
        let tmp = TempDir::new().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        for n in 1..=5 {
            assert_eq!(store.append_cdr(&cdr(n)).unwrap(), n);
        }
        let ids = |rows: Vec<(u64, Cdr)>| rows.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
        assert_eq!(ids(store.list_cdrs(2, None).unwrap()), vec![4, 5]);
        assert_eq!(ids(store.list_cdrs(2, Some(1)).unwrap()), vec![2, 3]);
        assert_eq!(ids(store.list_cdrs(10, Some(4)).unwrap()), vec![5]);
        assert_eq!(
            ids(store.list_cdrs(10, Some(u64::MAX)).unwrap()),
            Vec::<u64>::new()
        );
        assert_eq!(store.list_cdrs(1, Some(2)).unwrap(), vec![(3, cdr(3))]);
    }

    #[test]
    fn cdr_ids_keep_growing_across_a_restart() {
        let tmp = TempDir::new().unwrap();
        {
            let store = Store::open(tmp.path()).unwrap();
            store.append_cdr(&cdr(1)).unwrap();
            store.append_cdr(&cdr(2)).unwrap();
        }
        let store = Store::open(tmp.path()).unwrap();
        assert_eq!(store.append_cdr(&cdr(3)).unwrap(), 3);
        assert_eq!(
            store.list_cdrs(10, None).unwrap(),
            vec![(1, cdr(1)), (2, cdr(2)), (3, cdr(3))]
        );
    }

    #[test]
    fn records_written_before_media_fields_existed_still_read() {
        let old = r#"{"call_id":"c","caller":"1","callee":"2","start_unix":1,"end_unix":2,
            "duration_secs":0,"disposition":"busy","hangup_by":"system","hangup_cause":"486"}"#;
        let read: Cdr = serde_json::from_str(old).unwrap();
        assert_eq!(read.media, CallMedia::default());
        let json = encode(NAME, &cdr(2)).unwrap();
        assert!(json.contains(r#""media_path":"transcoded""#), "{json}");
    }

    #[test]
    fn disposition_is_stored_as_readable_text() {
        let json = encode(NAME, &cdr(1)).unwrap();
        assert!(json.contains(r#""disposition":"no-answer""#), "{json}");
        assert!(json.contains(r#""hangup_by":"callee""#), "{json}");
    }
}

#[cfg(test)]
mod csv_tests {
    use super::*;

    #[test]
    fn csv_quotes_fields_that_need_it() {
        let cdr = Cdr {
            call_id: "a,b".into(),
            caller: "1000".into(),
            callee: "1001".into(),
            start_unix: 1,
            answer_unix: None,
            end_unix: 3,
            duration_secs: 0,
            disposition: Disposition::Busy,
            hangup_by: HangupBy::System,
            hangup_cause: "said \"busy\"".into(),
            media: CallMedia::default(),
        };
        let csv = cdrs_to_csv(&[(7, cdr)]);
        let row = csv.lines().nth(1).unwrap();
        assert_eq!(
            row,
            r#"7,"a,b",1000,1001,1,,3,0,busy,system,"said ""busy""",,,,0,0,0,0,0,0,"#
        );
    }
}
