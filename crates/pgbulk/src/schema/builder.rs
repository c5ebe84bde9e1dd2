//! A Rust builder for declared tables: renders the same DDL a user would
//! write, so both paths go through the server's parser alike.
//!
//! ```
//! use pgbulk::schema::builder::Table;
//! let ddl = Table::new(Some("sales"), "stock")
//!     .column("pos", "integer", |c| c.not_null())
//!     .column("day", "date", |c| c.not_null())
//!     .column("stock", "integer", |c| c.default("0"))
//!     .primary_key(&["pos", "day"])
//!     .index("stock_day", &["day"], |i| i)
//!     .comment("stock per point of sale and day")
//!     .to_sql();
//! assert!(ddl.starts_with("CREATE TABLE \"sales\".\"stock\" ("));
//! let declaration = pgbulk::schema::Declaration::parse(&ddl).unwrap();
//! assert_eq!(declaration.tables().len(), 1);
//! ```

use super::{TableName, quote_ident, quote_literal};

/// A column being declared.
#[derive(Debug, Clone)]
pub struct Column {
    name: String,
    sql_type: String,
    not_null: bool,
    default: Option<String>,
    unique: bool,
    comment: Option<String>,
}

impl Column {
    /// `NOT NULL`.
    pub fn not_null(mut self) -> Self {
        self.not_null = true;
        self
    }

    /// `DEFAULT expr` (an SQL expression, inserted as written).
    pub fn default(mut self, expr: &str) -> Self {
        self.default = Some(expr.to_owned());
        self
    }

    /// `UNIQUE`.
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }

    /// A column comment.
    pub fn comment(mut self, text: &str) -> Self {
        self.comment = Some(text.to_owned());
        self
    }
}

/// An index being declared.
#[derive(Debug, Clone)]
pub struct Index {
    name: String,
    keys: Vec<String>,
    unique: bool,
    method: Option<String>,
    include: Vec<String>,
    predicate: Option<String>,
}

impl Index {
    /// `UNIQUE`.
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }

    /// `USING method` (`gin`, `gist`, `brin`, ...).
    pub fn using(mut self, method: &str) -> Self {
        self.method = Some(method.to_owned());
        self
    }

    /// `INCLUDE (columns)`.
    pub fn include(mut self, columns: &[&str]) -> Self {
        self.include = columns.iter().map(|c| (*c).to_owned()).collect();
        self
    }

    /// `WHERE predicate` (SQL, inserted as written).
    pub fn r#where(mut self, predicate: &str) -> Self {
        self.predicate = Some(predicate.to_owned());
        self
    }
}

/// A table being declared.
#[derive(Debug, Clone)]
pub struct Table {
    name: TableName,
    columns: Vec<Column>,
    primary_key: Vec<String>,
    checks: Vec<String>,
    indexes: Vec<Index>,
    comment: Option<String>,
}

impl Table {
    /// A table called `name` in `schema` (or the session's current schema).
    pub fn new(schema: Option<&str>, name: &str) -> Self {
        Self {
            name: TableName {
                schema: schema.map(str::to_owned),
                name: name.to_owned(),
            },
            columns: Vec::new(),
            primary_key: Vec::new(),
            checks: Vec::new(),
            indexes: Vec::new(),
            comment: None,
        }
    }

    /// Adds a column of `sql_type` (any type name PostgreSQL accepts).
    pub fn column(
        mut self,
        name: &str,
        sql_type: &str,
        build: impl FnOnce(Column) -> Column,
    ) -> Self {
        self.columns.push(build(Column {
            name: name.to_owned(),
            sql_type: sql_type.to_owned(),
            not_null: false,
            default: None,
            unique: false,
            comment: None,
        }));
        self
    }

    /// `PRIMARY KEY (columns)`.
    pub fn primary_key(mut self, columns: &[&str]) -> Self {
        self.primary_key = columns.iter().map(|c| (*c).to_owned()).collect();
        self
    }

    /// `CHECK (expr)`.
    pub fn check(mut self, expr: &str) -> Self {
        self.checks.push(expr.to_owned());
        self
    }

    /// `CREATE INDEX name ON table (keys)`; keys are column names.
    pub fn index(mut self, name: &str, keys: &[&str], build: impl FnOnce(Index) -> Index) -> Self {
        self.indexes.push(build(Index {
            name: name.to_owned(),
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            unique: false,
            method: None,
            include: Vec::new(),
            predicate: None,
        }));
        self
    }

    /// The table comment.
    pub fn comment(mut self, text: &str) -> Self {
        self.comment = Some(text.to_owned());
        self
    }

    /// The DDL: `CREATE TABLE`, then its indexes and comments.
    pub fn to_sql(&self) -> String {
        let t = self.name.quoted();
        let quote_all = |cols: &[String]| {
            cols.iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let mut s = format!("{} {}", quote_ident(&c.name), c.sql_type);
                if let Some(d) = &c.default {
                    s.push_str(&format!(" DEFAULT {d}"));
                }
                if c.not_null {
                    s.push_str(" NOT NULL");
                }
                if c.unique {
                    s.push_str(" UNIQUE");
                }
                s
            })
            .collect();
        if !self.primary_key.is_empty() {
            parts.push(format!("PRIMARY KEY ({})", quote_all(&self.primary_key)));
        }
        parts.extend(self.checks.iter().map(|c| format!("CHECK ({c})")));
        let mut sql = format!("CREATE TABLE {t} ({});\n", parts.join(", "));
        for i in &self.indexes {
            sql.push_str(&format!(
                "CREATE {}INDEX {} ON {t}{} ({})",
                if i.unique { "UNIQUE " } else { "" },
                quote_ident(&i.name),
                i.method
                    .as_ref()
                    .map(|m| format!(" USING {m}"))
                    .unwrap_or_default(),
                quote_all(&i.keys)
            ));
            if !i.include.is_empty() {
                sql.push_str(&format!(" INCLUDE ({})", quote_all(&i.include)));
            }
            if let Some(p) = &i.predicate {
                sql.push_str(&format!(" WHERE {p}"));
            }
            sql.push_str(";\n");
        }
        if let Some(c) = &self.comment {
            sql.push_str(&format!("COMMENT ON TABLE {t} IS {};\n", quote_literal(c)));
        }
        for c in &self.columns {
            if let Some(text) = &c.comment {
                sql.push_str(&format!(
                    "COMMENT ON COLUMN {t}.{} IS {};\n",
                    quote_ident(&c.name),
                    quote_literal(text)
                ));
            }
        }
        sql
    }
}
