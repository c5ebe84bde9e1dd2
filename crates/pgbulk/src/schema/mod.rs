//! Declared tables: plain SQL DDL (`CREATE TABLE`, `CREATE [UNIQUE] INDEX`,
//! `COMMENT ON`), parsed by the server itself.
//!
//! [`Declaration::resolve`] runs the DDL against temporary tables (in the
//! session's `pg_temp` schema, inside a transaction that is rolled back, so
//! no privilege beyond TEMP is needed) and reads them back as catalog
//! [`facts`](crate::catalog::facts): the same representation a live table is read into, so the two
//! compare without any type-name normalisation of ours.

pub mod builder;
pub(crate) mod sql;

use std::fmt;

use tokio_postgres::{Client, GenericClient};

pub use crate::catalog::TableFacts;
use sql::{Token, TokenKind};
pub use sql::{dollar_quote, quote_ident, quote_literal};

use crate::catalog;
use crate::error::{Error, ErrorKind, Result};

/// A schema-qualified table name. `schema` is `None` until resolved against
/// the session's `current_schema()`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    /// The schema, if the declaration named one.
    pub schema: Option<String>,
    /// The table.
    pub name: String,
}

impl TableName {
    /// Parses `table` or `schema.table` with SQL's rules: unquoted parts
    /// fold to lower case, `"Quoted"` parts keep case, dots and spaces.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            let plain = |c: char| c.is_alphanumeric() || c == '_' || c == '$' || c == '.';
            let hint = if text.trim().is_empty() {
                "a table name is needed".to_owned()
            } else if !text.contains('"') && !text.chars().all(plain) {
                format!(
                    "an unquoted name holds only letters, digits and _; quote it as SQL does, e.g. -t '\"{}\"' (or -t 'schema.\"{}\"')",
                    text.replace('"', "\"\""),
                    text.replace('"', "\"\"")
                )
            } else {
                "write it as table or schema.table, quoting parts with other characters in double quotes".to_owned()
            };
            Error::config(format!("cannot read table name \"{text}\": {hint}"))
        };
        let tokens = sql::tokenize(text).map_err(|_| bad())?;
        let (parts, _, next) = qualified_name(&tokens, 0).ok_or_else(bad)?;
        if next != tokens.len() {
            return Err(bad());
        }
        table_name(&parts).map_err(|_| bad())
    }

    /// A qualified name.
    pub fn new(schema: &str, name: &str) -> Self {
        Self {
            schema: Some(schema.to_owned()),
            name: name.to_owned(),
        }
    }

    /// `"schema"."name"`, quoted.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", quote_ident(s), quote_ident(&self.name)),
            None => quote_ident(&self.name),
        }
    }

    /// The name qualified with `schema` when it names none (unqualified
    /// names resolve in the session's current schema).
    pub fn in_schema(&self, schema: &str) -> Self {
        Self::new(self.schema.as_deref().unwrap_or(schema), &self.name)
    }

    /// The schema, or `public` when unresolved.
    pub fn schema_or_public(&self) -> &str {
        self.schema.as_deref().unwrap_or("public")
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What a declared statement does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// `CREATE TABLE`
    Table,
    /// `CREATE [UNIQUE] INDEX`
    Index,
    /// `COMMENT ON TABLE|COLUMN|INDEX`
    Comment,
    /// `CREATE TYPE` or `CREATE DOMAIN`: created when missing, used as it
    /// is when it exists (never migrated); `table` is its name.
    Type,
}

/// One declared statement, its target table, and the byte spans of every
/// table-name reference in it (for pointing it elsewhere).
#[derive(Debug, Clone)]
pub struct Statement {
    /// What it does.
    pub kind: StatementKind,
    /// The table it creates or belongs to.
    pub table: TableName,
    text: String,
    /// `(start, end, name)` of each table reference (including `table`).
    refs: Vec<(usize, usize, TableName)>,
    /// Spans to drop when the statement runs inside a transaction
    /// (`CONCURRENTLY`).
    concurrently: Option<(usize, usize)>,
    /// `CREATE INDEX`: the index's name, if given.
    index_name: Option<String>,
    /// `COMMENT ON INDEX`: the index commented.
    commented_index: Option<String>,
}

impl Statement {
    /// The statement with table references rewritten by `map` and, when
    /// `in_transaction`, without `CONCURRENTLY`.
    pub(crate) fn render(
        &self,
        map: impl Fn(&TableName) -> String,
        in_transaction: bool,
    ) -> String {
        let mut edits: Vec<(usize, usize, String)> = self
            .refs
            .iter()
            .map(|(s, e, name)| (*s, *e, map(name)))
            .collect();
        if let (true, Some((s, e))) = (in_transaction, self.concurrently) {
            edits.push((s, e, String::new()));
        }
        edits.sort_by_key(|(s, _, _)| *s);
        let mut out = String::with_capacity(self.text.len() + 32);
        let mut at = 0;
        for (s, e, replacement) in edits {
            out.push_str(&self.text[at..s]);
            out.push_str(&replacement);
            at = e;
        }
        out.push_str(&self.text[at..]);
        out
    }
}

/// A set of declared tables with their indexes and comments.
#[derive(Debug, Clone, Default)]
pub struct Declaration {
    statements: Vec<Statement>,
    /// Tables taken as they are (no DDL): their live shape is the
    /// declaration.
    existing: Vec<TableName>,
}

/// The text of a file of DDL; a file that cannot be read is a
/// configuration error naming it.
pub fn read_ddl(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::config(format!("cannot read {}: {e}", path.display())))
}

impl Declaration {
    /// Reads and parses a file of DDL (see [`Declaration::parse`]).
    pub fn read(path: &std::path::Path) -> Result<Self> {
        Self::parse(&read_ddl(path)?)
    }

    /// Parses DDL text. Each statement must be a `CREATE TABLE`,
    /// `CREATE [UNIQUE] INDEX`, `COMMENT ON TABLE|COLUMN|INDEX`, or a
    /// `CREATE TYPE` or `CREATE DOMAIN` of a type the tables use.
    pub fn parse(ddl: &str) -> Result<Self> {
        let tokens = sql::tokenize(ddl).map_err(|e| Error::config(format!("declared DDL: {e}")))?;
        let mut statements = Vec::new();
        for stmt in sql::statements(&tokens) {
            let text_start = stmt[0].start;
            let text_end = stmt[stmt.len() - 1].end;
            let parsed = parse_statement(stmt).map_err(|why| {
                let line = ddl[..text_start].matches('\n').count() + 1;
                Error::config(format!("declared DDL, statement on line {line}: {why}"))
            })?;
            let shift = |(s, e): (usize, usize)| (s - text_start, e - text_start);
            statements.push(Statement {
                kind: parsed.kind,
                table: parsed.table,
                text: ddl[text_start..text_end].to_owned(),
                refs: parsed
                    .refs
                    .into_iter()
                    .map(|(s, e, n)| (s - text_start, e - text_start, n))
                    .collect(),
                concurrently: parsed.concurrently.map(shift),
                index_name: parsed.index_name,
                commented_index: parsed.commented_index,
            });
        }
        // A comment on an index belongs to the table the index is on.
        let owners: Vec<(String, TableName)> = statements
            .iter()
            .filter_map(|s| Some((s.index_name.clone()?, s.table.clone())))
            .collect();
        for s in &mut statements {
            if let Some(index) = &s.commented_index {
                let owner = owners
                    .iter()
                    .find(|(name, table)| name == index && (s.table.schema.is_none() || s.table.schema == table.schema))
                    .map(|(_, table)| table.clone())
                    .ok_or_else(|| {
                        Error::config(format!(
                            "declared DDL: COMMENT ON INDEX {index}: the index is not declared (name it in its CREATE INDEX)"
                        ))
                    })?;
                // The index lives in its table's schema.
                for r in &mut s.refs {
                    r.2.schema = owner.schema.clone();
                }
                s.table = owner;
            }
        }
        let declaration = Self {
            statements,
            existing: Vec::new(),
        };
        if declaration.tables().is_empty() {
            return Err(Error::config("declared DDL holds no CREATE TABLE"));
        }
        for s in &declaration.statements {
            if !matches!(s.kind, StatementKind::Table | StatementKind::Type)
                && !declaration.tables().contains(&s.table)
            {
                return Err(Error::config(format!(
                    "declared DDL: {} refers to table {}, which is not declared",
                    if s.kind == StatementKind::Index {
                        "CREATE INDEX"
                    } else {
                        "COMMENT ON"
                    },
                    s.table
                )));
            }
        }
        Ok(declaration)
    }

    /// The declared tables, in declaration order.
    pub fn tables(&self) -> Vec<TableName> {
        self.statements
            .iter()
            .filter(|s| s.kind == StatementKind::Table)
            .map(|s| s.table.clone())
            .chain(self.existing.iter().cloned())
            .collect()
    }

    /// Existing tables taken as they are: nothing is created or migrated,
    /// and resolving fails when one does not exist.
    pub fn existing(tables: Vec<TableName>) -> Self {
        Self {
            statements: Vec::new(),
            existing: tables,
        }
    }

    /// The statements, in order.
    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    /// The declared types (`CREATE TYPE`, `CREATE DOMAIN`) the server
    /// `client` is connected to lacks, in declaration order (names
    /// qualified as the statements are).
    pub async fn missing_types(&self, client: &impl GenericClient) -> Result<Vec<&Statement>> {
        let mut missing = Vec::new();
        for s in self
            .statements
            .iter()
            .filter(|s| s.kind == StatementKind::Type)
        {
            let exists: bool = client
                .query_one(
                    "SELECT pg_catalog.to_regtype($1) IS NOT NULL",
                    &[&s.table.quoted()],
                )
                .await
                .map_err(|e| Error::server("looking up a declared type", e))?
                .get(0);
            if !exists {
                missing.push(s);
            }
        }
        Ok(missing)
    }

    /// The same declaration with unqualified names put in `schema`.
    pub fn qualified(&self, schema: &str) -> Self {
        let fix = |n: &TableName| TableName {
            schema: Some(n.schema.clone().unwrap_or_else(|| schema.to_owned())),
            name: n.name.clone(),
        };
        Self {
            statements: self
                .statements
                .iter()
                .map(|s| Statement {
                    table: fix(&s.table),
                    refs: s.refs.iter().map(|(a, b, n)| (*a, *b, fix(n))).collect(),
                    ..s.clone()
                })
                .collect(),
            existing: self.existing.iter().map(fix).collect(),
        }
    }

    /// Lets the server parse the declaration: runs it against temporary
    /// tables in a transaction that is rolled back, and returns the facts of
    /// each declared table (names qualified with `current_schema`, the
    /// session's, where the DDL left them unqualified).
    pub async fn resolve(
        &self,
        client: &mut Client,
        current_schema: &str,
    ) -> Result<Vec<(TableName, TableFacts)>> {
        let declaration = self.qualified(current_schema);
        let tables = declaration.tables();
        let mut seen = std::collections::HashSet::new();
        for t in &tables {
            if !seen.insert(t.name.clone()) {
                return Err(Error::config(format!(
                    "declared tables must have distinct names: {} is declared twice",
                    t.name
                )));
            }
        }
        let tx = client
            .transaction()
            .await
            .map_err(|e| Error::server("BEGIN", e))?;
        let to_temp = |n: &TableName| format!("pg_temp.{}", quote_ident(&n.name));
        // Declared types the tables use, under their own names (rolled
        // back with the rest), where they do not exist yet.
        let missing: Vec<Statement> = declaration
            .missing_types(&tx)
            .await?
            .into_iter()
            .cloned()
            .collect();
        for stmt in &declaration.statements {
            let sql = match stmt.kind {
                StatementKind::Type if missing.iter().any(|m| m.table == stmt.table) => format!(
                    "CREATE SCHEMA IF NOT EXISTS {}; {}",
                    quote_ident(stmt.table.schema_or_public()),
                    stmt.render(TableName::quoted, true)
                ),
                StatementKind::Type => continue,
                _ => stmt.render(to_temp, true),
            };
            tx.batch_execute(&sql).await.map_err(|e| {
                let what = if stmt.kind == StatementKind::Type {
                    "the type definition of"
                } else {
                    "the table definition of"
                };
                let mut err = Error::server(&format!("{what} {}", stmt.table), e);
                if err.kind() == ErrorKind::Server {
                    err = Error::new(ErrorKind::Config, err.message().to_owned()).with_source(err);
                }
                err
            })?;
        }
        let mut out = Vec::with_capacity(tables.len());
        for t in tables {
            if declaration.existing.contains(&t) {
                let oid = catalog::table_oid(&tx, t.schema_or_public(), &t.name)
                    .await?
                    .ok_or_else(|| Error::config(format!("table {t} does not exist")))?;
                let facts = catalog::facts::read(&tx, oid).await?;
                out.push((t, facts));
                continue;
            }
            let oid: u32 = tx
                .query_one(
                    "SELECT c.oid FROM pg_catalog.pg_class c \
                     WHERE c.relnamespace = pg_catalog.pg_my_temp_schema() AND c.relname = $1",
                    &[&t.name],
                )
                .await
                .map_err(|e| Error::server("reading the declared table", e))?
                .get(0);
            let facts = catalog::facts::read(&tx, oid).await?;
            out.push((t, facts));
        }
        tx.rollback()
            .await
            .map_err(|e| Error::server("ROLLBACK", e))?;
        Ok(out)
    }
}

type Span = (usize, usize);

/// What [`parse_statement`] found.
struct Parsed {
    kind: StatementKind,
    table: TableName,
    refs: Vec<(usize, usize, TableName)>,
    concurrently: Option<Span>,
    /// `CREATE INDEX`: the index's name, if given.
    index_name: Option<String>,
    /// `COMMENT ON INDEX`: the index commented (its table is found from the
    /// declaration's `CREATE INDEX`).
    commented_index: Option<String>,
}

impl Parsed {
    fn new(kind: StatementKind, table: TableName, refs: Vec<(usize, usize, TableName)>) -> Self {
        Self {
            kind,
            table,
            refs,
            concurrently: None,
            index_name: None,
            commented_index: None,
        }
    }
}

/// A possibly qualified name at `tokens[at..]`: its parts, byte span and the
/// index after it.
fn qualified_name(tokens: &[Token], at: usize) -> Option<(Vec<String>, Span, usize)> {
    let mut parts = vec![tokens.get(at)?.ident()?.to_owned()];
    let start = tokens[at].start;
    let mut end = tokens[at].end;
    let mut i = at + 1;
    while tokens.get(i).is_some_and(|t| t.is_punct('.')) {
        let next = tokens.get(i + 1)?;
        parts.push(next.ident()?.to_owned());
        end = next.end;
        i += 2;
    }
    Some((parts, (start, end), i))
}

fn table_name(parts: &[String]) -> Result<TableName, String> {
    match parts {
        [name] => Ok(TableName {
            schema: None,
            name: name.clone(),
        }),
        [schema, name] => Ok(TableName::new(schema, name)),
        _ => Err(format!("cannot read table name {}", parts.join("."))),
    }
}

fn parse_statement(tokens: &[Token]) -> Result<Parsed, String> {
    let word = |i: usize| tokens.get(i).and_then(Token::keyword).unwrap_or("");
    let mut i = 0;
    if word(0) == "create" {
        i += 1;
        if matches!(word(i), "type" | "domain") {
            let (parts, span, _) = qualified_name(tokens, i + 1).ok_or("expected a type name")?;
            let name = table_name(&parts)?;
            return Ok(Parsed::new(
                StatementKind::Type,
                name.clone(),
                vec![(span.0, span.1, name)],
            ));
        }
        while matches!(
            word(i),
            "global" | "local" | "unlogged" | "temp" | "temporary"
        ) {
            if matches!(word(i), "temp" | "temporary") {
                return Err("temporary tables cannot be declared".to_owned());
            }
            i += 1;
        }
        if word(i) == "table" {
            i += 1;
            if word(i) == "if" {
                i += 3;
            }
            let (parts, span, next) = qualified_name(tokens, i).ok_or("expected a table name")?;
            let table = table_name(&parts)?;
            let mut refs = vec![(span.0, span.1, table.clone())];
            // REFERENCES to tables point at the same names, rewritten alike.
            let mut j = next;
            while j < tokens.len() {
                if tokens[j].is_keyword("references") {
                    if let Some((parts, span, after)) = qualified_name(tokens, j + 1) {
                        refs.push((span.0, span.1, table_name(&parts)?));
                        j = after;
                        continue;
                    }
                }
                j += 1;
            }
            return Ok(Parsed::new(StatementKind::Table, table, refs));
        }
        if word(i) == "unique" {
            i += 1;
        }
        if word(i) == "index" {
            i += 1;
            let mut concurrently = None;
            if word(i) == "concurrently" {
                concurrently = Some((tokens[i].start, tokens[i].end));
                i += 1;
            }
            let mut index_name = None;
            while i < tokens.len() && word(i) != "on" {
                if !matches!(word(i), "if" | "not" | "exists") {
                    index_name = tokens[i].ident().map(str::to_owned);
                }
                i += 1;
            }
            i += 1;
            if word(i) == "only" {
                i += 1;
            }
            let (parts, span, _) = qualified_name(tokens, i).ok_or("expected ON table")?;
            let table = table_name(&parts)?;
            let mut parsed = Parsed::new(
                StatementKind::Index,
                table.clone(),
                vec![(span.0, span.1, table)],
            );
            parsed.concurrently = concurrently;
            parsed.index_name = index_name;
            return Ok(parsed);
        }
    }
    if word(0) == "comment" && word(1) == "on" {
        let what = word(2);
        let (parts, span, _) =
            qualified_name(tokens, 3).ok_or("expected a name after COMMENT ON")?;
        let (table_parts, span) = match what {
            "table" => (parts.as_slice(), span),
            "column" if parts.len() >= 2 => {
                // The table part ends before the last `.column`.
                let last_dot = tokens
                    .iter()
                    .take_while(|t| t.start < span.1)
                    .filter(|t| t.is_punct('.'))
                    .last()
                    .map_or(span.1, |t| t.start);
                (&parts[..parts.len() - 1], (span.0, last_dot))
            }
            "index" => {
                let index = table_name(&parts)?;
                let mut parsed = Parsed::new(
                    StatementKind::Comment,
                    index.clone(),
                    vec![(span.0, span.1, index.clone())],
                );
                parsed.commented_index = Some(index.name);
                return Ok(parsed);
            }
            _ => {
                return Err(format!(
                    "COMMENT ON {} is not supported",
                    what.to_uppercase()
                ));
            }
        };
        let table = table_name(table_parts)?;
        return Ok(Parsed::new(
            StatementKind::Comment,
            table.clone(),
            vec![(span.0, span.1, table)],
        ));
    }
    let first: Vec<String> = tokens
        .iter()
        .take(3)
        .filter_map(|t| match &t.kind {
            TokenKind::Ident { name, .. } => Some(name.to_uppercase()),
            _ => None,
        })
        .collect();
    Err(format!(
        "only CREATE TABLE, CREATE INDEX, COMMENT ON and the CREATE TYPE or CREATE DOMAIN of a type the tables use may be declared, not {}",
        first.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_domains_are_declared_apart_from_tables() {
        let d = Declaration::parse(
            "CREATE TYPE mood AS ENUM ('a', 'b');\n\
             CREATE DOMAIN s.pos AS int CHECK (VALUE > 0);\n\
             CREATE TABLE t (id s.pos, m mood);",
        )
        .expect("parses");
        let kinds: Vec<(StatementKind, String)> = d
            .statements()
            .iter()
            .map(|s| (s.kind, s.table.to_string()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (StatementKind::Type, "mood".to_owned()),
                (StatementKind::Type, "s.pos".to_owned()),
                (StatementKind::Table, "t".to_owned()),
            ]
        );
        assert_eq!(d.tables(), vec![TableName::parse("t").expect("name")]);
        // Qualified like the tables, and rendered with the name.
        let q = d.qualified("app");
        assert_eq!(q.statements()[0].table.to_string(), "app.mood");
        assert_eq!(
            q.statements()[0].render(TableName::quoted, true),
            "CREATE TYPE \"app\".\"mood\" AS ENUM ('a', 'b')"
        );
        // Types alone declare no table.
        assert!(Declaration::parse("CREATE TYPE mood AS ENUM ('a');").is_err());
    }

    #[test]
    fn finds_tables_indexes_and_comments() {
        let d = Declaration::parse(
            "CREATE TABLE \"Sales\".\"Order Items 🐘\" (id int PRIMARY KEY, parent int REFERENCES orders(id));\n\
             CREATE TABLE orders (id int PRIMARY KEY);\n\
             CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS oi_parent ON ONLY \"Sales\".\"Order Items 🐘\" (parent);\n\
             COMMENT ON COLUMN \"Sales\".\"Order Items 🐘\".id IS 'the id; really';",
        )
        .expect("parses");
        assert_eq!(
            d.tables(),
            vec![
                TableName::new("Sales", "Order Items 🐘"),
                TableName {
                    schema: None,
                    name: "orders".into()
                }
            ]
        );
        let q = d.qualified("app");
        let rendered: Vec<String> = q
            .statements()
            .iter()
            .map(|s| s.render(|n| format!("X.{}", quote_ident(&n.name)), true))
            .collect();
        assert_eq!(
            rendered[0],
            "CREATE TABLE X.\"Order Items 🐘\" (id int PRIMARY KEY, parent int REFERENCES X.\"orders\"(id))"
        );
        assert_eq!(
            rendered[2],
            "CREATE UNIQUE INDEX  IF NOT EXISTS oi_parent ON ONLY X.\"Order Items 🐘\" (parent)"
        );
        assert_eq!(
            rendered[3],
            "COMMENT ON COLUMN X.\"Order Items 🐘\".id IS 'the id; really'"
        );
        assert_eq!(q.statements()[1].table, TableName::new("app", "orders"));
    }

    #[test]
    fn table_names_follow_sql() {
        assert_eq!(
            TableName::parse("Sales.Stock").expect("ok"),
            TableName::new("sales", "stock")
        );
        assert_eq!(
            TableName::parse("\"My.Schema\".\"Odd 🐘\"").expect("ok"),
            TableName::new("My.Schema", "Odd 🐘")
        );
        assert_eq!(TableName::parse("t").expect("ok").schema, None);
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse("a b").is_err());
    }

    #[test]
    fn rejects_other_statements() {
        for bad in [
            "DROP TABLE x",
            "CREATE TEMP TABLE t (a int)",
            "CREATE TABLE t (a int); CREATE INDEX ON other (a)",
            "CREATE INDEX ON t (a)",
            "CREATE TABLE a.b.c (x int)",
        ] {
            assert!(Declaration::parse(bad).is_err(), "{bad}");
        }
    }
}
