//! What a sync reads: a table's or a query's columns.

use tokio_postgres::Client;

use super::{SourceTypes, SyncOptions, SyncSource};
use crate::catalog::{self, ColumnFacts, TableFacts};
use crate::error::{Error, Result};
use crate::session::Session;

/// The source as a sync reads it.
pub(super) struct Described {
    /// How messages name it.
    pub(super) label: String,
    /// What `FROM` reads.
    pub(super) relation: String,
    /// Its columns (for a query: its key as primary key).
    pub(super) facts: TableFacts,
    /// Its columns of enum types.
    pub(super) types: SourceTypes,
    /// Whether its rows are unique by its primary key (a table's are).
    pub(super) unique: bool,
}

/// Reads the source's columns: the table's, or those a query returns
/// (prepared, not run).
pub(super) async fn describe(source: &Client, opts: &SyncOptions) -> Result<Described> {
    match &opts.source {
        SyncSource::Table(table) => {
            let session = Session::read(source).await?;
            let name = table.in_schema(&session.current_schema);
            let Some(oid) = catalog::table_oid(source, name.schema_or_public(), &name.name).await?
            else {
                // A view, a materialized view or a foreign table is read as
                // a query of its rows is, by the key given.
                let kind = catalog::relation_kind(source, name.schema_or_public(), &name.name)
                    .await?
                    .filter(|k| matches!(k.as_str(), "v" | "m" | "f"));
                let Some(kind) = kind else {
                    return Err(catalog::not_a_table(
                        source,
                        name.schema_or_public(),
                        &name.name,
                        "--to and --key",
                    )
                    .await?);
                };
                let key = opts.key.clone().ok_or_else(|| {
                    Error::config(format!(
                        "the source's {name} is {}, which has no primary key: --key COL,... names the columns that identify its rows",
                        catalog::kind_name(&kind)
                    ))
                })?;
                return rows_of(source, name.quoted(), name.to_string(), key).await;
            };
            let facts = catalog::facts::read(source, oid).await?;
            let mut types = SourceTypes::default();
            for row in source
                .query(
                    "SELECT a.attname::text, t.typtype = 'e', \
                     pg_catalog.format_type(t.typbasetype, t.typtypmod) \
                     FROM pg_catalog.pg_attribute a \
                     JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
                     WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
                       AND t.typtype IN ('e', 'd')",
                    &[&oid],
                )
                .await
                .map_err(|e| Error::server("reading the source's enum and domain columns", e))?
            {
                let name: String = row.get(0);
                if row.get::<_, bool>(1) {
                    types.enums.push(name);
                } else {
                    types.domains.push((name, row.get(2)));
                }
            }
            Ok(Described {
                label: name.to_string(),
                relation: name.quoted(),
                unique: facts.primary_key.is_some(),
                facts,
                types,
            })
        }
        SyncSource::Query(query) => {
            let key = opts
                .key
                .clone()
                .ok_or_else(|| Error::config("a sync of a query needs its key named (--key)"))?;
            let query = query.trim().trim_end_matches(';').trim_end();
            let relation = format!("({query}) AS pgbulk_query");
            rows_of(source, relation, "the query".to_owned(), key).await
        }
    }
}

/// Describes the rows of `relation` (a query's, or a view's), whose `key`
/// the user named, from the columns a `SELECT *` of it returns (prepared,
/// not run); `label` names it in messages.
async fn rows_of(
    source: &Client,
    relation: String,
    label: String,
    key: Vec<String>,
) -> Result<Described> {
    let statement = source
        .prepare(&format!("SELECT * FROM {relation}"))
        .await
        .map_err(|e| Error::server(&format!("reading the columns of {label}"), e))?;
    let mut columns: Vec<ColumnFacts> = Vec::new();
    let mut types = SourceTypes::default();
    for c in statement.columns() {
        if columns.iter().any(|o| o.name == c.name()) {
            return Err(Error::config(format!(
                "{label} returns two columns named \"{}\" (columns are matched by name: give each its own with AS)",
                c.name()
            )));
        }
        let row = source
            .query_one(
                "SELECT pg_catalog.format_type($1, $2), t.typtype = 'e', \
                 CASE WHEN t.typtype = 'd' THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) END \
                 FROM pg_catalog.pg_type t WHERE t.oid = $1",
                &[&c.type_().oid(), &c.type_modifier()],
            )
            .await
            .map_err(|e| Error::server(&format!("reading the column types of {label}"), e))?;
        if row.get::<_, bool>(1) {
            types.enums.push(c.name().to_owned());
        }
        if let Some(base) = row.get::<_, Option<String>>(2) {
            types.domains.push((c.name().to_owned(), base));
        }
        columns.push(ColumnFacts::plain(
            c.name(),
            row.get(0),
            c.type_().oid(),
            c.type_modifier(),
        ));
    }
    if let Some(k) = key.iter().find(|k| !columns.iter().any(|c| &c.name == *k)) {
        return Err(Error::config(format!(
            "--key: {label} returns no column \"{k}\""
        )));
    }
    Ok(Described {
        label,
        relation,
        facts: TableFacts {
            oid: 0,
            columns,
            primary_key: Some(("query_key".to_owned(), key)),
            constraints: Vec::new(),
            indexes: Vec::new(),
            comment: None,
            column_comments: Default::default(),
        },
        types,
        unique: false,
    })
}
