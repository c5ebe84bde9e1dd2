//! BigQuery as an export's destination, through its REST API (blocking
//! calls: run them off the async runtime).
//!
//! A table's rows (a Parquet file) are loaded by a load job (a resumable
//! upload) into a staging table of the dataset, created for the run with
//! the source's columns and an expiry of a day; one `MERGE` query job then
//! brings them into the destination on the key, with explicit column lists
//! in `UPDATE SET` and `INSERT (...) VALUES (...)` (never positional); the
//! staging table is dropped. A destination that does not exist is created
//! from the type mapping, its key said in its description. An existing
//! one is compared first, column by column by name: a compatible
//! difference is `CAST` in the `MERGE` (INT64 into NUMERIC, BIGNUMERIC or
//! FLOAT64; NUMERIC into BIGNUMERIC; DATE into DATETIME or TIMESTAMP;
//! DATETIME into TIMESTAMP; anything into STRING), a missing column or any
//! other difference refuses the table before anything is loaded. Jobs are
//! polled with backoff; their errors are passed through with the job's id.
//!
//! Incremental exports keep their watermark in the dataset's
//! `_pgbulk_state` table (written after the `MERGE`); the first run starts
//! at the destination's `max(column)`, read as BigQuery prints it
//! (microseconds, no truncation), at or after it (the key deduplicates).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::columns::{ExportColumn, Kind};
use super::google::{Credentials, Tokens};
use crate::error::{Error, ErrorKind, Result};

/// The state table's name in the dataset.
pub const STATE_TABLE: &str = "_pgbulk_state";

/// A BigQuery dataset to export into.
#[derive(Debug)]
pub struct BigQuery {
    agent: ureq::Agent,
    tokens: Tokens,
    /// `https://bigquery.googleapis.com`, or an emulator's address.
    base: String,
    project: String,
    dataset: String,
}

/// A column as a BigQuery table has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BqColumn {
    /// Its name.
    pub name: String,
    /// Its type, in standard SQL's names (`INT64`, `NUMERIC`, ...).
    pub type_name: String,
    /// `REPEATED` (an array of `type_name`).
    pub repeated: bool,
    /// `REQUIRED`.
    pub required: bool,
}

/// How a destination column is filled from the staging table's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    /// The destination column.
    pub column: String,
    /// The expression over the staging row `S`.
    pub expr: String,
}

impl BigQuery {
    /// A client of `project`'s `dataset`: at `endpoint` (an emulator,
    /// anonymous), else BigQuery with the credentials Google's clients
    /// would find.
    pub fn new(project: &str, dataset: &str, endpoint: Option<&str>) -> Result<Self> {
        let (base, credentials) = match endpoint {
            Some(e) => {
                let e = e.trim_end_matches('/');
                let base = if e.contains("://") {
                    e.to_owned()
                } else {
                    format!("http://{e}")
                };
                (base, Credentials::Anonymous)
            }
            None => (
                "https://bigquery.googleapis.com".to_owned(),
                Credentials::find()?,
            ),
        };
        for (what, id) in [("project", project), ("dataset", dataset)] {
            if id.is_empty() || id.contains(['/', '`', '\\', '?', '#']) {
                return Err(Error::config(format!(
                    "\"{id}\" is not a BigQuery {what} id"
                )));
            }
        }
        Ok(Self {
            agent: super::google::agent()?,
            tokens: Tokens::new(credentials),
            base,
            project: project.to_owned(),
            dataset: dataset.to_owned(),
        })
    }

    /// `project.dataset.table`, quoted for SQL.
    pub fn quoted(&self, table: &str) -> String {
        format!("`{}.{}.{}`", self.project, self.dataset, table)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/bigquery/v2/projects/{}/{path}", self.base, self.project)
    }

    /// Sends a request; the answer's status and JSON body.
    fn call(&mut self, method: &str, url: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let auth = self.tokens.header(&self.agent)?;
        let failed = |e: &dyn std::fmt::Display| {
            Error::new(
                ErrorKind::Connect,
                format!("BigQuery ({method} {url}) did not answer: {e}"),
            )
        };
        let mut response = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = self.agent.delete(url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (_, body) => {
                let mut r = self.agent.post(url).content_type("application/json");
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send(body.map(Value::to_string).unwrap_or_default())
            }
        }
        .map_err(|e| failed(&e))?;
        let (status, text) = answer(&mut response, url).map_err(|e| failed(&e))?;
        let json = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, json))
    }

    /// Sends a request that must succeed (2xx); `what` names it in errors.
    fn ok(&mut self, method: &str, url: &str, body: Option<&Value>, what: &str) -> Result<Value> {
        let (status, json) = self.call(method, url, body)?;
        if (200..300).contains(&status) {
            Ok(json)
        } else {
            Err(api_error(status, &json, what))
        }
    }

    /// The columns of `table`, or `None` when it does not exist.
    pub fn columns(&mut self, table: &str) -> Result<Option<Vec<BqColumn>>> {
        let url = self.url(&format!("datasets/{}/tables/{table}", self.dataset));
        let (status, json) = self.call("GET", &url, None)?;
        match status {
            404 => Ok(None),
            200 => Ok(Some(
                json["schema"]["fields"]
                    .as_array()
                    .map(|fields| fields.iter().map(bq_column).collect())
                    .unwrap_or_default(),
            )),
            _ => Err(api_error(
                status,
                &json,
                &format!("reading {}", self.quoted(table)),
            )),
        }
    }

    /// Creates `table` with `columns`' mapping; `description` says where it
    /// comes from; `expires`: dropped by BigQuery a day later.
    pub fn create(
        &mut self,
        table: &str,
        columns: &[ExportColumn],
        description: &str,
        expires: bool,
    ) -> Result<()> {
        let fields = columns
            .iter()
            .map(|c| schema_field(&c.name, &c.kind))
            .collect();
        self.create_fields(table, fields, description, expires)
    }

    /// Creates `table` with these schema fields.
    fn create_fields(
        &mut self,
        table: &str,
        fields: Vec<Value>,
        description: &str,
        expires: bool,
    ) -> Result<()> {
        let mut body = json!({
            "tableReference": {
                "projectId": self.project,
                "datasetId": self.dataset,
                "tableId": table,
            },
            "description": description,
            "schema": { "fields": fields },
        });
        if expires {
            let in_a_day = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() + 86_400_000)
                .unwrap_or_default();
            body["expirationTime"] = Value::String(in_a_day.to_string());
        }
        let url = self.url(&format!("datasets/{}/tables", self.dataset));
        self.ok(
            "POST",
            &url,
            Some(&body),
            &format!("creating {}", self.quoted(table)),
        )?;
        Ok(())
    }

    /// Drops `table` (gone already is fine).
    pub fn drop_table(&mut self, table: &str) -> Result<()> {
        let url = self.url(&format!("datasets/{}/tables/{table}", self.dataset));
        let (status, json) = self.call("DELETE", &url, None)?;
        if (200..300).contains(&status) || status == 404 {
            Ok(())
        } else {
            Err(api_error(
                status,
                &json,
                &format!("dropping {}", self.quoted(table)),
            ))
        }
    }

    /// Loads the Parquet file `path` into `table` (appending) by a load job
    /// with a resumable upload, and waits for it.
    pub fn load(&mut self, table: &str, path: &std::path::Path) -> Result<()> {
        let config = json!({
            "configuration": { "load": {
                "destinationTable": {
                    "projectId": self.project,
                    "datasetId": self.dataset,
                    "tableId": table,
                },
                "sourceFormat": "PARQUET",
                "writeDisposition": "WRITE_APPEND",
                "parquetOptions": { "enableListInference": true },
            }}
        });
        let what = format!("loading {} into {}", path.display(), self.quoted(table));
        let auth = self.tokens.header(&self.agent)?;
        let start = format!(
            "{}/upload/bigquery/v2/projects/{}/jobs?uploadType=resumable",
            self.base, self.project
        );
        let mut r = self.agent.post(&start).content_type("application/json");
        if let Some(a) = &auth {
            r = r.header("Authorization", a);
        }
        let failed = |e: &dyn std::fmt::Display| {
            Error::new(
                ErrorKind::Connect,
                format!("{what}: BigQuery did not answer: {e}"),
            )
        };
        let mut response = r.send(config.to_string()).map_err(|e| failed(&e))?;
        let status = response.status().as_u16();
        let session = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Some(session) = session.filter(|_| (200..300).contains(&status)) else {
            let text = response.body_mut().read_to_string().unwrap_or_default();
            let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
            return Err(api_error(status, &json, &what));
        };
        let file = std::fs::File::open(path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        let size = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?
            .len();
        // The whole file in one request: its last byte completes the
        // upload, and the answer is the job.
        let mut r = self
            .agent
            .put(&session)
            .content_type("application/octet-stream")
            .header(
                "Content-Range",
                format!("bytes 0-{}/{size}", size.saturating_sub(1)),
            );
        if let Some(a) = &auth {
            r = r.header("Authorization", a);
        }
        let mut response = r.send(file).map_err(|e| failed(&e))?;
        let (status, text) = answer(&mut response, &session).map_err(|e| failed(&e))?;
        let job: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !(200..300).contains(&status) {
            return Err(api_error(status, &job, &what));
        }
        self.wait(&job, &what).map(|_| ())
    }

    /// Polls the job `job` (a job resource) until it is done, with backoff;
    /// its error, with its id, when it failed.
    fn wait(&mut self, job: &Value, what: &str) -> Result<Value> {
        let mut job = job.clone();
        let mut pause = Duration::from_millis(100);
        let started = Instant::now();
        loop {
            let id = job["jobReference"]["jobId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if job["status"]["state"] == "DONE" {
                if let Some(e) = job["status"].get("errorResult") {
                    let mut message = format!(
                        "{what}: BigQuery job {id} failed: {}",
                        e["message"].as_str().unwrap_or("no message")
                    );
                    for detail in job["status"]["errors"].as_array().into_iter().flatten() {
                        if let Some(m) = detail["message"].as_str() {
                            if !message.contains(m) {
                                message.push_str(&format!("; {m}"));
                            }
                        }
                    }
                    return Err(Error::new(ErrorKind::Data, message));
                }
                return Ok(job);
            }
            if id.is_empty() {
                return Err(Error::new(
                    ErrorKind::Server,
                    format!("{what}: BigQuery answered without a job: {job}"),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(5));
            if started.elapsed() > Duration::from_secs(6 * 3600) {
                return Err(Error::new(
                    ErrorKind::Server,
                    format!("{what}: BigQuery job {id} did not end in six hours"),
                ));
            }
            let location = job["jobReference"]["location"]
                .as_str()
                .map(|l| format!("?location={l}"))
                .unwrap_or_default();
            let url = self.url(&format!("jobs/{id}{location}"));
            job = self.ok("GET", &url, None, what)?;
        }
    }

    /// Runs `sql` (standard SQL; `params`: named string parameters) as a
    /// query job and waits for it; the rows' cells as text, and the DML
    /// statistics when it was a DML statement.
    pub fn query(
        &mut self,
        sql: &str,
        params: &[(&str, &str)],
        what: &str,
    ) -> Result<(Vec<Vec<Option<String>>>, Value)> {
        let body = json!({
            "configuration": { "query": {
                "query": sql,
                "useLegacySql": false,
                "parameterMode": "NAMED",
                "queryParameters": params.iter().map(|(name, value)| json!({
                    "name": name,
                    "parameterType": { "type": "STRING" },
                    "parameterValue": { "value": value },
                })).collect::<Vec<_>>(),
            }}
        });
        let url = self.url("jobs");
        let job = self.ok("POST", &url, Some(&body), what)?;
        let job = self.wait(&job, what)?;
        let stats = job["statistics"]["query"].clone();
        if stats["statementType"]
            .as_str()
            .is_some_and(|t| t != "SELECT")
            || stats.get("dmlStats").is_some()
        {
            return Ok((Vec::new(), stats));
        }
        let id = job["jobReference"]["jobId"].as_str().unwrap_or_default();
        let location = job["jobReference"]["location"]
            .as_str()
            .map(|l| format!("?location={l}"))
            .unwrap_or_default();
        let url = self.url(&format!("queries/{id}{location}"));
        let results = self.ok("GET", &url, None, what)?;
        let rows = results["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        r["f"]
                            .as_array()
                            .map(|cells| {
                                cells
                                    .iter()
                                    .map(|c| match &c["v"] {
                                        Value::Null => None,
                                        Value::String(s) => Some(s.clone()),
                                        other => Some(other.to_string()),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok((rows, stats))
    }
}

/// The state table's column recording the `--where` of the run that
/// stored a watermark, as `{"sql": ...}` (`null` without one): state tables
/// created before it have none, and nothing is compared.
const FILTER_COLUMN: &str = "filter";

/// Where an incremental export of `table` starts: the watermark of
/// `column` stored in the dataset's state table (with the `--where` of the
/// run that stored it, when recorded: `Some(None)` for none), else the
/// destination's `max(column)` as BigQuery prints it (at or after it),
/// else the beginning. `existing`: the destination's columns, if it
/// exists.
pub fn read_mark(
    bq: &mut BigQuery,
    table: &str,
    column: &str,
    existing: Option<&[BqColumn]>,
) -> Result<(Option<crate::mark::Mark>, Option<Option<String>>)> {
    if let Some(state_columns) = bq.columns(STATE_TABLE)? {
        let recorded = state_columns.iter().any(|c| c.name == FILTER_COLUMN);
        let sql = format!(
            "SELECT watermark{} FROM {} WHERE table_name = @t AND column_name = @c",
            if recorded { ", `filter`" } else { "" },
            bq.quoted(STATE_TABLE)
        );
        let (rows, _) = bq.query(
            &sql,
            &[("t", table), ("c", column)],
            "reading the watermark",
        )?;
        let row = rows.into_iter().next().unwrap_or_default();
        let stored = row
            .first()
            .cloned()
            .flatten()
            .and_then(|w| serde_json::from_str::<Value>(&w).ok())
            .and_then(|w| crate::mark::Mark::from_json(&w));
        let filter = row
            .get(1)
            .cloned()
            .flatten()
            .and_then(|f| serde_json::from_str::<Value>(&f).ok())
            .map(|f| f.get("sql").and_then(Value::as_str).map(str::to_owned));
        if stored.is_some() {
            return Ok((stored, filter));
        }
    }
    let Some(dest) = existing.and_then(|cols| {
        cols.iter()
            .find(|c| c.name.eq_ignore_ascii_case(column))
            .map(|c| c.name.clone())
    }) else {
        return Ok((None, None));
    };
    let sql = format!(
        "SELECT CAST(MAX(`{dest}`) AS STRING) FROM {}",
        bq.quoted(table)
    );
    let (rows, _) = bq.query(&sql, &[], "reading the destination's newest row")?;
    Ok((
        rows.into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
            .map(crate::mark::Mark::at),
        None,
    ))
}

/// Stores `mark` (a [`crate::mark::Mark`]'s JSON) as where the next
/// incremental export of `table` by `column` starts, with the run's
/// `filter`, creating the state table when missing.
pub fn store_mark(
    bq: &mut BigQuery,
    table: &str,
    column: &str,
    mark: &str,
    filter: Option<&str>,
    source: &str,
) -> Result<()> {
    let recorded = match bq.columns(STATE_TABLE)? {
        Some(columns) => columns.iter().any(|c| c.name == FILTER_COLUMN),
        None => {
            let field =
                |name: &str, t: &str| json!({ "name": name, "type": t, "mode": "NULLABLE" });
            bq.create_fields(
                STATE_TABLE,
                vec![
                    field("table_name", "STRING"),
                    field("column_name", "STRING"),
                    field("source", "STRING"),
                    field("watermark", "STRING"),
                    field("updated_at", "TIMESTAMP"),
                    field(FILTER_COLUMN, "STRING"),
                ],
                "Where pgbulk's incremental exports into this dataset start next.",
                false,
            )?;
            true
        }
    };
    let state = bq.quoted(STATE_TABLE);
    let filter = json!({ "sql": filter }).to_string();
    let params = [
        ("t", table),
        ("c", column),
        ("s", source),
        ("w", mark),
        ("f", filter.as_str()),
    ];
    bq.query(
        &format!("DELETE FROM {state} WHERE table_name = @t AND column_name = @c"),
        &params[..2],
        "storing the watermark",
    )?;
    let (columns, values, params) = if recorded {
        (", `filter`", ", @f", &params[..])
    } else {
        ("", "", &params[..4])
    };
    bq.query(
        &format!(
            "INSERT INTO {state} (table_name, column_name, source, watermark, updated_at{columns}) \
             VALUES (@t, @c, @s, @w, CURRENT_TIMESTAMP(){values})"
        ),
        params,
        "storing the watermark",
    )?;
    Ok(())
}

/// The status and body of `response` (to `url`), logged at debug level.
fn answer(
    response: &mut ureq::http::Response<ureq::Body>,
    url: &str,
) -> std::result::Result<(u16, String), ureq::Error> {
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string()?;
    tracing::debug!("BigQuery {url}: {status} {}", crate::codec::shorten(&text));
    Ok((status, text))
}

/// An API error: the status, BigQuery's message and reason.
fn api_error(status: u16, json: &Value, what: &str) -> Error {
    let message = json["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| json.to_string());
    let kind = match status {
        401 | 403 => ErrorKind::Auth,
        404 => ErrorKind::Config,
        _ => ErrorKind::Server,
    };
    Error::new(
        kind,
        format!("{what}: BigQuery answered {status}: {message}"),
    )
}

/// A table field as the API gives it, with standard SQL's type names.
fn bq_column(field: &Value) -> BqColumn {
    let raw = field["type"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let type_name = match raw.as_str() {
        "INTEGER" => "INT64",
        "FLOAT" => "FLOAT64",
        "BOOLEAN" => "BOOL",
        "BIGDECIMAL" => "BIGNUMERIC",
        other => other,
    }
    .to_owned();
    let mode = field["mode"].as_str().unwrap_or("NULLABLE");
    BqColumn {
        name: field["name"].as_str().unwrap_or_default().to_owned(),
        type_name,
        repeated: mode == "REPEATED",
        required: mode == "REQUIRED",
    }
}

/// The BigQuery type of a kind (an array's: its element's), without
/// precision.
fn base_type(kind: &Kind) -> String {
    let t = match kind {
        Kind::List(element) => return base_type(element),
        other => other.bigquery_type(),
    };
    t.split('(').next().unwrap_or_default().to_owned()
}

/// A table field of the type mapping.
fn schema_field(name: &str, kind: &Kind) -> Value {
    let (kind, mode) = match kind {
        Kind::List(element) => (element.as_ref(), "REPEATED"),
        other => (other, "NULLABLE"),
    };
    let mut field = json!({ "name": name, "type": base_type(kind), "mode": mode });
    if let Kind::Decimal { precision, scale } = kind {
        field["precision"] = Value::String(precision.to_string());
        field["scale"] = Value::String(scale.to_string());
    }
    field
}

/// How each destination column is filled from the staging table's
/// columns (the source's), by name (BigQuery's names ignore case), with a
/// `CAST` where the types differ compatibly; every mismatch listed when
/// any.
pub fn fills(
    source: &[ExportColumn],
    dest: &[BqColumn],
) -> std::result::Result<Vec<Fill>, Vec<String>> {
    let mut fills = Vec::new();
    let mut mismatches = Vec::new();
    for s in source {
        let Some(d) = dest.iter().find(|d| d.name.eq_ignore_ascii_case(&s.name)) else {
            mismatches.push(format!(
                "column \"{}\" ({}) is not in the destination",
                s.name, s.source_type
            ));
            continue;
        };
        let repeated = matches!(s.kind, Kind::List(_));
        let from = base_type(&s.kind);
        let column = format!("S.`{}`", s.name);
        if repeated != d.repeated {
            mismatches.push(format!(
                "column \"{}\": source {} ({}), destination {}{}: an array and a value do not mix",
                s.name,
                s.source_type,
                s.kind.bigquery_type(),
                if d.repeated { "ARRAY<" } else { "" },
                d.type_name
            ));
            continue;
        }
        let expr = if from == d.type_name {
            column
        } else if compatible(&from, &d.type_name) && !repeated {
            format!("CAST({column} AS {})", d.type_name)
        } else {
            mismatches.push(format!(
                "column \"{}\": source {} ({}), destination {}: not compatible",
                s.name,
                s.source_type,
                s.kind.bigquery_type(),
                d.type_name
            ));
            continue;
        };
        fills.push(Fill {
            column: d.name.clone(),
            expr,
        });
    }
    for d in dest {
        if d.required && !source.iter().any(|s| s.name.eq_ignore_ascii_case(&d.name)) {
            mismatches.push(format!(
                "column \"{}\" ({}) of the destination is REQUIRED, and the source has no such column",
                d.name, d.type_name
            ));
        }
    }
    if mismatches.is_empty() {
        Ok(fills)
    } else {
        Err(mismatches)
    }
}

/// Whether a value of BigQuery type `from` casts into `to` without loss of
/// meaning.
fn compatible(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("INT64", "NUMERIC" | "BIGNUMERIC" | "FLOAT64")
            | ("NUMERIC", "BIGNUMERIC")
            | ("DATE", "DATETIME" | "TIMESTAMP")
            | ("DATETIME", "TIMESTAMP")
            | (_, "STRING")
    ) && from != "BYTES"
        && from != "JSON"
}

/// The `MERGE` of `stage` into `dest` on `key` (destination names).
pub fn merge_sql(dest: &str, stage: &str, key: &[String], fills: &[Fill]) -> String {
    let on: Vec<String> = key
        .iter()
        .map(|k| {
            let fill = fills.iter().find(|f| f.column.eq_ignore_ascii_case(k));
            let expr = fill.map_or_else(|| format!("S.`{k}`"), |f| f.expr.clone());
            format!("T.`{k}` = {expr}")
        })
        .collect();
    let set: Vec<String> = fills
        .iter()
        .filter(|f| !key.iter().any(|k| k.eq_ignore_ascii_case(&f.column)))
        .map(|f| format!("`{}` = {}", f.column, f.expr))
        .collect();
    let columns: Vec<String> = fills.iter().map(|f| format!("`{}`", f.column)).collect();
    let values: Vec<String> = fills.iter().map(|f| f.expr.clone()).collect();
    let mut sql = format!(
        "MERGE {dest} AS T USING {stage} AS S ON {}",
        on.join(" AND ")
    );
    if !set.is_empty() {
        sql.push_str(&format!(" WHEN MATCHED THEN UPDATE SET {}", set.join(", ")));
    }
    sql.push_str(&format!(
        " WHEN NOT MATCHED THEN INSERT ({}) VALUES ({})",
        columns.join(", "),
        values.join(", ")
    ));
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, kind: Kind) -> ExportColumn {
        ExportColumn {
            name: name.to_owned(),
            source_type: "t".to_owned(),
            kind,
            select: name.to_owned(),
        }
    }

    fn bq(name: &str, t: &str) -> BqColumn {
        BqColumn {
            name: name.to_owned(),
            type_name: t.to_owned(),
            repeated: false,
            required: false,
        }
    }

    #[test]
    fn columns_match_by_name_with_casts_or_are_refused() {
        let source = [
            col("id", Kind::Int32),
            col("qty", Kind::Int64),
            col("day", Kind::Date),
            col("note", Kind::Uuid),
        ];
        let dest = [
            bq("Note", "STRING"),
            bq("day", "TIMESTAMP"),
            bq("qty", "NUMERIC"),
            bq("id", "INT64"),
            bq("extra", "STRING"),
        ];
        let filled = fills(&source, &dest).expect("compatible");
        let sql = merge_sql("`p.d.t`", "`p.d.s`", &["id".to_owned()], &filled);
        assert_eq!(
            sql,
            "MERGE `p.d.t` AS T USING `p.d.s` AS S ON T.`id` = S.`id` \
             WHEN MATCHED THEN UPDATE SET `qty` = CAST(S.`qty` AS NUMERIC), `day` = CAST(S.`day` AS TIMESTAMP), `Note` = S.`note` \
             WHEN NOT MATCHED THEN INSERT (`id`, `qty`, `day`, `Note`) VALUES (S.`id`, CAST(S.`qty` AS NUMERIC), CAST(S.`day` AS TIMESTAMP), S.`note`)"
        );
        let mut required = bq("must", "STRING");
        required.required = true;
        let refused = fills(
            &[col("id", Kind::Text), col("gone", Kind::Bool)],
            &[bq("id", "INT64"), required],
        )
        .expect_err("refused");
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert!(refused[0].contains("destination INT64: not compatible"));
        assert!(refused[1].contains("\"gone\" (t) is not in the destination"));
        assert!(refused[2].contains("REQUIRED"));
    }

    #[test]
    fn fields_carry_mode_and_precision() {
        assert_eq!(
            schema_field(
                "a",
                &Kind::List(Box::new(Kind::Decimal {
                    precision: 12,
                    scale: 2
                }))
            ),
            json!({"name": "a", "type": "NUMERIC", "mode": "REPEATED", "precision": "12", "scale": "2"})
        );
        assert_eq!(
            bq_column(&json!({"name": "x", "type": "INTEGER", "mode": "REQUIRED"})),
            BqColumn {
                name: "x".to_owned(),
                type_name: "INT64".to_owned(),
                repeated: false,
                required: true
            }
        );
    }
}
