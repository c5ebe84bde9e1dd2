//! Pipeline files for `pgbulk run`: `[defaults]`, then `[[load]]`,
//! `[[sync]]` and `[[export]]` jobs. A job's keys are the long flags of its
//! command, read by the very clap definitions of `pgbulk load`, `sync` and
//! `export` (`batch_rows`
//! or `batch-rows` is `--batch-rows`; `files` is `load`'s file arguments), so
//! there is no second list of options to drift. `${VAR}` and
//! `${VAR:-default}` in strings expand from the environment. Every error
//! names the file, the line and the key, and comes before anything runs.

use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};

use clap::{ArgAction, CommandFactory, Parser};
use pgbulk::{Error, ErrorKind};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::args::{Cli, Command};

/// The job sections, each named after its command.
#[cfg(feature = "export")]
const KINDS: [&str; 3] = ["load", "sync", "export"];
#[cfg(not(feature = "export"))]
const KINDS: [&str; 2] = ["load", "sync"];

/// Flags a job cannot set: they belong to the whole run.
const RUN_FLAGS: [&str; 5] = ["dry-run", "quiet", "verbose", "help", "log-format"];

/// A pipeline file, read and checked.
#[derive(Debug)]
pub(crate) struct Pipeline {
    pub(crate) path: PathBuf,
    /// In the order of the file.
    pub(crate) jobs: Vec<Job>,
}

/// One job: the command its keys parse to.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) name: String,
    /// `load` or `sync`.
    pub(crate) kind: &'static str,
    /// Where its table starts in the file.
    pub(crate) line: usize,
    pub(crate) command: Command,
}

/// A value as the command line would take it.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Flag(bool),
    One(String),
    Many(Vec<String>),
}

/// A key of a job or of `[defaults]`, its flag name and where it is.
#[derive(Debug, Clone)]
struct Entry {
    key: String,
    flag: String,
    span: Range<usize>,
    value: Value,
}

/// The file's text, to say where things are.
struct Text<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Text<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn error(&self, span: &Range<usize>, message: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::Config,
            format!(
                "{}:{}: {message}",
                self.path.display(),
                self.line(span.start)
            ),
        )
    }
}

/// Reads and checks the pipeline at `path`; `env` looks up variables.
pub(crate) fn read(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> pgbulk::Result<Pipeline> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    parse(path, &text, env)
}

/// [`read`] of `text`, the content of `path`.
pub(crate) fn parse(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> pgbulk::Result<Pipeline> {
    let at = Text { path, text };
    let doc = DeTable::parse(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        at.error(&span, e.message().trim())
    })?;
    let mut defaults: Vec<Entry> = Vec::new();
    // (the kind, None for a [[job]] that says it by its keys)
    let mut sections: Vec<(Option<&'static str>, Range<usize>, &DeTable<'_>)> = Vec::new();
    for (key, value) in doc.get_ref().iter() {
        let name = key.get_ref().as_ref();
        match (name, value.get_ref()) {
            ("defaults", DeValue::Table(table)) => {
                defaults = entries(&at, table, env)?;
                let base = path.parent().unwrap_or(Path::new(""));
                for entry in &mut defaults {
                    relative_to(base, entry);
                }
            }
            (kind, DeValue::Array(items)) if KINDS.contains(&kind) || kind == "job" => {
                let kind = KINDS.iter().find(|k| **k == kind).copied();
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::Table(table) => sections.push((kind, item.span(), table)),
                        _ => {
                            return Err(at.error(
                                &item.span(),
                                format!(
                                    "each job is a table: write [[{}]] before its keys",
                                    kind.unwrap_or("job")
                                ),
                            ));
                        }
                    }
                }
            }
            ("defaults", _) => return Err(at.error(&key.span(), "[defaults] is a table")),
            (kind, _) if KINDS.contains(&kind) || kind == "job" => {
                return Err(at.error(
                    &key.span(),
                    format!("jobs are written [[{kind}]] (an array of tables)"),
                ));
            }
            (other, _) => {
                return Err(at.error(
                    &key.span(),
                    format!(
                        "unknown section `{other}`: a pipeline has [defaults], [[load]], [[sync]], [[export]] and [[job]]"
                    ),
                ));
            }
        }
    }
    sections.sort_by_key(|(_, span, _)| span.start);
    // A default must be a flag of some command.
    for d in &defaults {
        if !KINDS.iter().any(|k| flag_of(k, &d.flag).is_some()) || RUN_FLAGS.contains(&&*d.flag) {
            return Err(at.error(
                &d.span,
                format!(
                    "unknown key `{}` in [defaults]: not an option of pgbulk load, sync or export{}",
                    d.key,
                    KINDS
                        .iter()
                        .find_map(|k| nearest_key(k, &d.key))
                        .map(|k| format!("; did you mean `{k}`?"))
                        .unwrap_or_default()
                ),
            ));
        }
    }
    let base = path.parent().unwrap_or(Path::new(""));
    let mut jobs: Vec<Job> = Vec::new();
    for (kind, span, table) in sections {
        let mut own = entries(&at, table, env)?;
        let kind = match kind {
            Some(kind) => kind,
            None => job_kind(&at, &span, &mut own)?,
        };
        for entry in &mut own {
            relative_to(base, entry);
        }
        let job = job(&at, kind, &span, own, &defaults)?;
        if let Some(earlier) = jobs.iter().find(|j| j.name == job.name) {
            return Err(at.error(
                &span,
                format!(
                    "a second job named `{}` (the first is at line {}); give each a unique name",
                    job.name, earlier.line
                ),
            ));
        }
        jobs.push(job);
    }
    if jobs.is_empty() {
        return Err(at.error(&(0..0), "no job: add a [[load]] or [[sync]] table"));
    }
    Ok(Pipeline {
        path: path.to_owned(),
        jobs,
    })
}

/// The keys of `table`, with their values expanded.
fn entries(
    at: &Text<'_>,
    table: &DeTable<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> pgbulk::Result<Vec<Entry>> {
    let mut out: Vec<Entry> = Vec::new();
    for (key, value) in table.iter() {
        let name = key.get_ref().to_string();
        let flag = name.replace('_', "-");
        if let Some(other) = out.iter().find(|e| e.flag == flag) {
            return Err(at.error(&key.span(), format!("`{name}` repeats `{}`", other.key)));
        }
        let value = match value.get_ref() {
            DeValue::Boolean(b) => Value::Flag(*b),
            DeValue::Array(items) => Value::Many(
                items
                    .iter()
                    .map(|item| scalar(at, &name, item, env))
                    .collect::<pgbulk::Result<_>>()?,
            ),
            // `type = { zip = "text" }`: the flag once per pair, `zip=text`.
            DeValue::Table(pairs) => Value::Many(
                pairs
                    .iter()
                    .map(|(k, v)| scalar(at, &name, v, env).map(|v| format!("{}={v}", k.get_ref())))
                    .collect::<pgbulk::Result<_>>()?,
            ),
            _ => Value::One(scalar(at, &name, value, env)?),
        };
        out.push(Entry {
            key: name,
            flag,
            span: key.span(),
            value,
        });
    }
    Ok(out)
}

/// A string or a number, as text (strings expanded).
fn scalar(
    at: &Text<'_>,
    key: &str,
    value: &Spanned<DeValue<'_>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> pgbulk::Result<String> {
    let span = value.span();
    match value.get_ref() {
        DeValue::String(s) => {
            expand(s, env).map_err(|why| at.error(&span, format!("key `{key}`: {why}")))
        }
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .map(|n| n.to_string())
            .map_err(|e| at.error(&span, format!("key `{key}`: {e}"))),
        DeValue::Float(f) => Ok(f.to_string()),
        _ => Err(at.error(
            &span,
            format!("key `{key}` takes a string or a number here"),
        )),
    }
}

/// Expands `${VAR}` and `${VAR:-default}` (a name of letters, digits and
/// `_`); anything else, `$1` or `$$` of SQL included, stays as written.
pub(crate) fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[at..]);
            rest = "";
            break;
        };
        let inner = &after[..close];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            out.push_str("${");
            rest = after;
            continue;
        }
        match (env(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "${{{name}}} is not set (write ${{{name}:-default}} for a default)"
                ));
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The command of a `[[job]]`: its `type` (`"load"`, `"sync"` or
/// `"export"`), else a
/// `load` key (the files: the key is taken as `files`), else `files` (a
/// load) or `from` / `from_profile` (a sync).
fn job_kind(
    at: &Text<'_>,
    span: &Range<usize>,
    own: &mut Vec<Entry>,
) -> pgbulk::Result<&'static str> {
    if let Some(i) = own.iter().position(|e| e.key == "type") {
        let entry = own.remove(i);
        return match &entry.value {
            Value::One(t) if t == "load" => Ok("load"),
            Value::One(t) if t == "sync" => Ok("sync"),
            #[cfg(feature = "export")]
            Value::One(t) if t == "export" => Ok("export"),
            _ => Err(at.error(
                &entry.span,
                "key `type` is \"load\", \"sync\" or \"export\"",
            )),
        };
    }
    if let Some(entry) = own.iter_mut().find(|e| e.key == "load") {
        entry.flag = "files".to_owned();
        return Ok("load");
    }
    if own.iter().any(|e| e.flag == "files") {
        return Ok("load");
    }
    if own
        .iter()
        .any(|e| e.flag == "from" || e.flag == "from-profile")
    {
        return Ok("sync");
    }
    Err(at.error(
        span,
        "a [[job]] says what it is: type = \"load\" (with files) or type = \"sync\" (with from)",
    ))
}

/// Paths in a pipeline (`files`, `schema`, `reject_file`, an export's
/// `to = "parquet://DIR"`) are relative to its directory, so cron and
/// Kubernetes can run it from anywhere.
fn relative_to(base: &Path, entry: &mut Entry) {
    if entry.flag == "to" {
        if let Value::One(url) = &mut entry.value {
            if let Some(dir) = url.strip_prefix("parquet://") {
                if Path::new(dir).is_relative() {
                    *url = format!("parquet://{}", base.join(dir).display());
                }
            }
        }
        return;
    }
    if !matches!(entry.flag.as_str(), "files" | "schema" | "reject-file") {
        return;
    }
    let join = |p: &mut String| {
        if p != "-" && Path::new(p.as_str()).is_relative() {
            *p = base.join(p.as_str()).display().to_string();
        }
    };
    match &mut entry.value {
        Value::One(p) => join(p),
        Value::Many(ps) => ps.iter_mut().for_each(join),
        Value::Flag(_) => {}
    }
}

/// The argument `--flag` of the command `kind`, if it has one (`files`:
/// load's file arguments).
fn flag_of(kind: &str, flag: &str) -> Option<clap::Arg> {
    let cli = Cli::command();
    let command = cli.find_subcommand(kind)?;
    command
        .get_arguments()
        .find(|a| match (a.get_long(), flag) {
            (Some(long), _) => long == flag,
            (None, "files") => a.get_id() == "files",
            _ => false,
        })
        .cloned()
}

/// The flag of `kind` saying the opposite of `flag` (`no-header` for
/// `header` and back), when it has one.
fn negation(kind: &str, flag: &str) -> Option<String> {
    let opposite = flag
        .strip_prefix("no-")
        .map_or_else(|| format!("no-{flag}"), str::to_owned);
    flag_of(kind, &opposite).map(|_| opposite)
}

/// The key of a `kind` job nearest to an unknown `key` (`file` for
/// `files`, `tabel` for `table`), written as `key` writes words (`-` or
/// `_`); none when nothing is near.
fn nearest_key(kind: &str, key: &str) -> Option<String> {
    let cli = Cli::command();
    let command = cli.find_subcommand(kind)?;
    let wanted = key.replace('_', "-");
    command
        .get_arguments()
        .filter_map(|a| match a.get_long() {
            Some(long) => Some(long.to_owned()),
            None if a.get_id() == "files" => Some("files".to_owned()),
            None => None,
        })
        .filter(|long| !RUN_FLAGS.contains(&long.as_str()))
        .map(|long| (strsim::jaro_winkler(&wanted, &long), long))
        .filter(|(near, _)| *near > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, long)| {
            if key.contains('_') {
                long.replace('-', "_")
            } else {
                long
            }
        })
}

/// The job at `span`: its keys over the defaults, parsed as its command.
fn job(
    at: &Text<'_>,
    kind: &'static str,
    span: &Range<usize>,
    own: Vec<Entry>,
    defaults: &[Entry],
) -> pgbulk::Result<Job> {
    let mut name = None;
    let mut argv: Vec<OsString> = vec!["pgbulk".into(), kind.into()];
    let mut files: Vec<String> = Vec::new();
    let mut used: Vec<Entry> = Vec::new();
    for entry in own {
        if entry.key == "name" {
            match &entry.value {
                Value::One(n) if !n.trim().is_empty() => name = Some(n.trim().to_owned()),
                _ => return Err(at.error(&entry.span, "`name` is the job's name: a string")),
            }
            continue;
        }
        used.push(entry);
    }
    for d in defaults {
        if !used.iter().any(|e| e.flag == d.flag) && flag_of(kind, &d.flag).is_some() {
            used.push(d.clone());
        }
    }
    for entry in &used {
        let Some(arg) = flag_of(kind, &entry.flag).filter(|_| !RUN_FLAGS.contains(&&*entry.flag))
        else {
            let why = if RUN_FLAGS.contains(&&*entry.flag) {
                format!(
                    "`{}` is an option of the whole run (pgbulk run --{})",
                    entry.key, entry.flag
                )
            } else {
                format!(
                    "unknown key `{}`: not an option of pgbulk {kind}{}",
                    entry.key,
                    nearest_key(kind, &entry.key)
                        .map(|k| format!("; did you mean `{k}`?"))
                        .unwrap_or_default()
                )
            };
            return Err(at.error(&entry.span, why));
        };
        let many = matches!(arg.get_action(), ArgAction::Append)
            || arg.get_value_delimiter().is_some()
            || arg.get_num_args().is_some_and(|n| n.max_values() > 1);
        let wrong =
            |wants: &str| at.error(&entry.span, format!("key `{}` takes {wants}", entry.key));
        match (&entry.value, arg.get_action()) {
            (Value::Flag(on), ArgAction::SetTrue) => {
                if *on {
                    argv.push(format!("--{}", entry.flag).into());
                } else if let Some(negation) = negation(kind, &entry.flag) {
                    // `header = false` is `--no-header`, `no_header = false`
                    // `--header`; false is else the flag left out.
                    argv.push(format!("--{negation}").into());
                }
            }
            (_, ArgAction::SetTrue) => return Err(wrong("true or false")),
            (Value::Flag(_), _) => return Err(wrong(if many { "a list" } else { "a value" })),
            (Value::Many(_), _) if !many => return Err(wrong("one value, not a list")),
            (Value::One(v), _) if entry.flag == "files" => files.push(v.clone()),
            (Value::Many(items), _) if entry.flag == "files" => files.extend(items.iter().cloned()),
            (Value::One(v), _) => argv.push(format!("--{}={v}", entry.flag).into()),
            (Value::Many(items), _) => {
                for item in items {
                    argv.push(format!("--{}={item}", entry.flag).into());
                }
            }
        }
    }
    if !files.is_empty() {
        argv.push("--".into());
        argv.extend(files.into_iter().map(OsString::from));
    }
    let parsed = Cli::try_parse_from(&argv).map_err(|e| clap_error(at, kind, span, &used, &e))?;
    // A load job names its table: its files are patterns more often than
    // not, and a name its one file implies would move with the file.
    if kind == "load" && !used.iter().any(|e| e.flag == "table") {
        return Err(at.error(span, "the load job lacks the required key `table`"));
    }
    let name = name
        .or_else(|| {
            let table = used
                .iter()
                .find(|e| e.flag == if kind == "sync" { "to" } else { "table" });
            let table = table.or_else(|| used.iter().find(|e| e.flag == "table"));
            table.map(|e| v_of(&e.value))
        })
        .ok_or_else(|| {
            at.error(
                span,
                format!("the {kind} job has no name (and no table to name it by)"),
            )
        })?;
    Ok(Job {
        name,
        kind,
        line: at.line(span.start),
        command: parsed.command,
    })
}

/// The text of a one-value entry.
fn v_of(value: &Value) -> String {
    match value {
        Value::One(v) => v.clone(),
        Value::Many(items) => items.join(","),
        Value::Flag(b) => b.to_string(),
    }
}

/// clap's refusal of a job's keys, said with the key's line (or the job's,
/// for a missing key).
fn clap_error(
    at: &Text<'_>,
    kind: &str,
    span: &Range<usize>,
    used: &[Entry],
    e: &clap::Error,
) -> Error {
    use clap::error::{ContextKind, ContextValue};
    let first = e
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => v.first().cloned(),
        _ => None,
    };
    let flag = arg.as_deref().map(|a| {
        a.trim_start_matches('-')
            .split([' ', '=', '<'])
            .next()
            .unwrap_or_default()
            .to_owned()
    });
    let entry = flag
        .as_deref()
        .and_then(|f| used.iter().find(|e| e.flag == f));
    if e.kind() == clap::error::ErrorKind::MissingRequiredArgument {
        let missing = flag.unwrap_or_default();
        return at.error(
            span,
            format!(
                "the {kind} job lacks the required key `{}`",
                missing.replace('-', "_")
            ),
        );
    }
    let message = first.replace("'--", "'").replace("--", "");
    match entry {
        Some(entry) => at.error(&entry.span, format!("key `{}`: {message}", entry.key)),
        None => at.error(span, format!("{kind} job: {message}")),
    }
}

/// Whether a job is selected by `--only` (all when none is given).
pub(crate) fn selected(job: &Job, only: &[String]) -> bool {
    only.is_empty() || only.contains(&job.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "WAREHOUSE" => Some("postgresql://w@db/wh".to_owned()),
            "DAY" => Some("2024-05-01".to_owned()),
            _ => None,
        }
    }

    fn parse_text(text: &str) -> pgbulk::Result<Pipeline> {
        parse(Path::new("p.toml"), text, &env)
    }

    fn refusal(text: &str) -> String {
        parse_text(text).expect_err("refused").message().to_owned()
    }

    #[test]
    fn variables_expand_and_sql_dollars_stay() {
        assert_eq!(expand("${DAY}", &env).as_deref(), Ok("2024-05-01"));
        assert_eq!(expand("a ${NOPE:-x} b", &env).as_deref(), Ok("a x b"));
        assert_eq!(expand("${NOPE:-}", &env).as_deref(), Ok(""));
        assert_eq!(
            expand("$1 $$x$$ ${ 1}", &env).as_deref(),
            Ok("$1 $$x$$ ${ 1}")
        );
        assert!(
            expand("${NOPE}", &env)
                .unwrap_err()
                .contains("${NOPE} is not set")
        );
    }

    #[test]
    fn jobs_parse_as_their_commands_with_defaults() {
        let p = parse_text(
            r#"
[defaults]
db = "${WAREHOUSE}"
batch_rows = 500
delimiter = ";"

[[load]]
name = "sales"
files = ["landing/*.csv"]
table = "sales"
key = ["a", "b"]
ignore-extra = true

[[sync]]
from = "service=app"
table = "users"
incremental = "updated_at"
where = "day = '${DAY}'"
"#,
        )
        .expect("parses");
        assert_eq!(p.jobs.len(), 2);
        let (load, sync) = (&p.jobs[0], &p.jobs[1]);
        assert_eq!(
            (load.name.as_str(), load.kind, load.line),
            ("sales", "load", 7)
        );
        let Command::Load(args) = &load.command else {
            panic!("a load")
        };
        assert_eq!(
            args.files,
            ["landing/*.csv"],
            "relative to the file's directory"
        );
        assert_eq!(args.table.as_deref(), Some("sales"));
        assert_eq!(args.batch_rows, Some(500));
        assert_eq!(args.dialect.delimiter, Some(b';'));
        assert_eq!(
            args.key.as_deref(),
            Some(&["a".to_owned(), "b".to_owned()][..])
        );
        assert!(args.ignore_extra);
        assert_eq!(args.connection.db.as_deref(), Some("postgresql://w@db/wh"));
        assert_eq!(sync.name, "users", "named by its table");
        let Command::Sync(args) = &sync.command else {
            panic!("a sync")
        };
        assert_eq!(
            args.batch_rows,
            Some(500),
            "defaults apply where the command has the flag"
        );
        assert_eq!(args.filter.as_deref(), Some("day = '2024-05-01'"));
        assert_eq!(args.incremental.as_deref(), Some("updated_at"));
    }

    /// A flag set false is its opposite where the command has one.
    #[test]
    fn a_flag_set_false_says_its_opposite() {
        let p = parse_text(
            "[[load]]\ntable = \"a\"\nheader = false\n\
             [[load]]\ntable = \"b\"\nno_header = false\n\
             [[load]]\ntable = \"c\"\nignore_extra = false\n",
        )
        .expect("parses");
        let dialects: Vec<(bool, bool, bool)> = p
            .jobs
            .iter()
            .map(|job| match &job.command {
                Command::Load(args) => (
                    args.dialect.header,
                    args.dialect.no_header,
                    args.ignore_extra,
                ),
                _ => panic!("a load"),
            })
            .collect();
        assert_eq!(
            dialects,
            [
                (false, true, false),
                (true, false, false),
                (false, false, false)
            ]
        );
    }

    /// `type` as a table, a list or one string: the same overrides.
    #[test]
    fn types_may_be_a_table() {
        let p = parse_text(
            "[[load]]\ntable = \"a\"\ntype = { zip = \"text\", amount = \"numeric(12,2)\" }\n\
             [[load]]\ntable = \"b\"\ntype = [\"zip=text\", \"amount=numeric(12,2)\"]\n\
             [[load]]\ntable = \"c\"\ntype = \"zip=text,amount=numeric(12,2)\"\n",
        )
        .expect("parses");
        for job in &p.jobs {
            let Command::Load(args) = &job.command else {
                panic!("a load")
            };
            let mut types = args.inference.types.concat();
            types.sort();
            assert_eq!(
                types,
                [
                    ("amount".to_owned(), "numeric(12,2)".to_owned()),
                    ("zip".to_owned(), "text".to_owned())
                ],
                "{}",
                job.name
            );
        }
    }

    #[test]
    fn mistakes_name_the_line_and_key() {
        let cases: [(&str, &str); 11] = [
            (
                "[[load]]\ntable = \"t\"\nbogus = 1\n",
                "p.toml:3: unknown key `bogus`",
            ),
            (
                "[[load]]\ntable = \"t\"\nbatch_rows = \"many\"\n",
                "p.toml:3: key `batch_rows`: invalid value 'many'",
            ),
            (
                "[[load]]\ntable = \"t\"\nignore_extra = \"yes\"\n",
                "p.toml:3: key `ignore_extra` takes true or false",
            ),
            (
                "[[load]]\nfiles = [\"a.csv\"]\n",
                "p.toml:1: the load job lacks the required key `table`",
            ),
            (
                "[[load]]\ntable = \"t\"\nmode = [\"append\"]\n",
                "p.toml:3: key `mode` takes one value, not a list",
            ),
            (
                "[[load]]\ntable = \"t\"\ndb = \"${NOPE}\"\n",
                "p.toml:3: key `db`: ${NOPE} is not set",
            ),
            (
                "[[load]]\ntable = \"t\"\ndry_run = true\n",
                "p.toml:3: `dry_run` is an option of the whole run",
            ),
            (
                "[defaults]\nbogus = 1\n[[load]]\ntable = \"t\"\n",
                "p.toml:2: unknown key `bogus` in [defaults]",
            ),
            (
                "[[lod]]\ntable = \"t\"\n",
                "p.toml:1: unknown section `lod`",
            ),
            (
                "[[load]]\ntable = \"t\"\n[[load]]\ntable = \"t\"\n",
                "p.toml:3: a second job named `t`",
            ),
            ("[[load]]\ntable = \"t\n", "p.toml:2:"),
        ];
        for (text, expected) in cases {
            let got = refusal(text);
            assert!(got.starts_with(expected), "{text:?}: {got}");
        }
        assert!(refusal("").contains("no job"));
        // The nearest key, written as the file writes keys.
        for (text, expected) in [
            (
                "[[load]]\ntable = \"t\"\nfile = \"a.csv\"\n",
                "p.toml:3: unknown key `file`: not an option of pgbulk load; did you mean `files`?",
            ),
            (
                "[[load]]\ntable = \"t\"\nbatch_row = 5\n",
                "did you mean `batch_rows`?",
            ),
            (
                "[[sync]]\nto = \"t\"\nform = \"db\"\n",
                "did you mean `from`?",
            ),
            (
                "[defaults]\nbatch-row = 5\n[[load]]\ntable = \"t\"\n",
                "did you mean `batch-rows`?",
            ),
        ] {
            let got = refusal(text);
            assert!(got.contains(expected), "{text:?}: {got}");
        }
        assert!(!refusal("[[load]]\ntable = \"t\"\nbogus = 1\n").contains("did you mean"));
        // A sync key a load lacks is unknown there.
        assert!(
            refusal("[[load]]\ntable = \"t\"\nincremental = \"x\"\n")
                .contains("not an option of pgbulk load")
        );
    }

    #[test]
    fn the_example_pipeline_parses() {
        let text = include_str!("../../../examples/pipeline.toml");
        let env = |name: &str| (name == "APP_DB_URL").then(|| "service=app".to_owned());
        let p = parse(Path::new("examples/pipeline.toml"), text, &env).expect("parses");
        let names: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["daily-sales", "users", "orders"]);
        let Command::Load(load) = &p.jobs[0].command else {
            panic!("a load")
        };
        assert_eq!(load.files, ["examples/landing/sales-*.csv"]);
        assert_eq!(
            load.schema.as_deref(),
            Some(Path::new("examples/sales.sql"))
        );
        assert_eq!(load.connection.db.as_deref(), Some("service=warehouse"));
    }

    #[test]
    fn a_job_table_says_its_command_by_type_or_keys() {
        let p = parse_text(
            "[[job]]\ntype = \"load\"\nfiles = \"a.csv\"\ntable = \"a\"\n\
             [[job]]\nload = [\"b/*.csv\"]\ntable = \"b\"\n\
             [[job]]\nfrom = \"service=app\"\ntable = \"c\"\n\
             [[load]]\nfiles = \"d.csv\"\ntable = \"d\"\n",
        )
        .expect("parses");
        let kinds: Vec<(&str, &str)> = p.jobs.iter().map(|j| (j.name.as_str(), j.kind)).collect();
        assert_eq!(
            kinds,
            [("a", "load"), ("b", "load"), ("c", "sync"), ("d", "load")]
        );
        let Command::Load(b) = &p.jobs[1].command else {
            panic!("a load")
        };
        assert_eq!(b.files, ["b/*.csv"]);
        assert!(
            refusal("[[job]]\ntable = \"t\"\n").starts_with("p.toml:1: a [[job]] says what it is")
        );
        assert!(
            refusal("[[job]]\ntype = \"copy\"\ntable = \"t\"\n")
                .starts_with("p.toml:2: key `type`")
        );
    }

    #[test]
    fn only_selects_by_name() {
        let p = parse_text("[[load]]\ntable = \"a\"\n[[load]]\ntable = \"b\"\n").expect("parses");
        let only = ["b".to_owned()];
        let names: Vec<&str> = p
            .jobs
            .iter()
            .filter(|j| selected(j, &only))
            .map(|j| j.name.as_str())
            .collect();
        assert_eq!(names, ["b"]);
    }
}
