//! The reader against the server as the oracle: every text the server's
//! `COPY ... (FORMAT csv)` accepts, the reader splits into the same
//! records, fields and NULLs; and a text in `FORMAT text` it reads as
//! COPY does, or both refuse it.

use pgbulk::copy::copy_in;
use pgbulk::csv::{Dialect, Reader};

use crate::harness::{Rng, TestDb};

/// Three-field records built from pieces that stress quoting: quotes
/// inside and after fields, doubled quotes, escapes, delimiters and line
/// ends inside quotes, the NULL string, and now and then a record with a
/// field too many or too few.
fn case(rng: &mut Rng, d: &Dialect) -> String {
    let (q, e, c) = (d.quote as char, d.escape as char, d.delimiter as char);
    let null = String::from_utf8_lossy(&d.null).into_owned();
    let pieces = [
        "a".to_owned(),
        "bc".to_owned(),
        " ".to_owned(),
        q.to_string(),
        format!("{q}{q}"),
        format!("{e}{q}"),
        e.to_string(),
        c.to_string(),
        "\n".to_owned(),
        null,
    ];
    let mut text = String::new();
    for _ in 0..=rng.below(3) {
        let fields = match rng.below(8) {
            0 => 2,
            1 => 4,
            _ => 3,
        };
        for f in 0..fields {
            if f > 0 {
                text.push(c);
            }
            let mut field = String::new();
            for _ in 0..rng.below(4) {
                field.push_str(&pieces[rng.index(pieces.len())]);
            }
            match rng.below(4) {
                // As it is: quotes, line ends and delimiters where they fall.
                0 => text.push_str(&field),
                // Quoted whole, its quotes and escapes escaped.
                1 => {
                    let field = field.replace(e, &format!("{e}{e}"));
                    let field = if q == e {
                        field
                    } else {
                        field.replace(q, &format!("{e}{q}"))
                    };
                    text.push_str(&format!("{q}{field}{q}"));
                }
                // Plain letters, spaces and NULL strings only.
                _ => text.push_str(&field.replace([q, e, c, '\n'], "x")),
            }
        }
        text.push('\n');
    }
    text
}

/// The reader's records of `text`, or `None` when it fails.
fn read(text: &str, dialect: &Dialect) -> Option<Vec<Vec<Option<String>>>> {
    let mut reader = Reader::new(text.as_bytes(), dialect.clone());
    let mut records = Vec::new();
    while let Some(record) = reader.read_record().ok()? {
        records.push(
            (0..record.len())
                .map(|i| {
                    record
                        .get(i)
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                })
                .collect(),
        );
    }
    Some(records)
}

#[tokio::test]
async fn the_reader_splits_records_as_copy_csv_does() {
    let db = TestDb::new("csv_oracle").await;
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE t (n serial, a text, b text, c text)")
        .await
        .expect("table");
    let dialects = [
        ("", Dialect::default()),
        (
            ", DELIMITER ';', QUOTE '''', ESCAPE '\\', NULL 'N'",
            Dialect {
                delimiter: b';',
                quote: b'\'',
                escape: b'\\',
                null: b"N".to_vec(),
                text: false,
            },
        ),
    ];
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    let mut accepted = 0;
    for (options, dialect) in &dialects {
        for _ in 0..1000 {
            let text = case(&mut rng, dialect);
            // `\.` alone on a line ends COPY's data; the reader has no such
            // marker.
            if text.contains("\\.") {
                continue;
            }
            client.batch_execute("TRUNCATE t").await.expect("truncate");
            let statement = format!("COPY t (a, b, c) FROM STDIN (FORMAT csv{options})");
            if copy_in(&client, &statement, [text.clone().into_bytes()])
                .await
                .is_err()
            {
                continue;
            }
            accepted += 1;
            let server: Vec<Vec<Option<String>>> = client
                .query("SELECT a, b, c FROM t ORDER BY n", &[])
                .await
                .expect("rows")
                .iter()
                .map(|row| (0..3).map(|i| row.get(i)).collect())
                .collect();
            assert_eq!(
                read(&text, dialect),
                Some(server),
                "{text:?} in {dialect:?}: the reader's records (left) and COPY's (right)"
            );
        }
    }
    // The comparison must not be vacuous.
    assert!(accepted > 500, "only {accepted} texts accepted by COPY");
}

/// Three-field records in PostgreSQL's text format, from pieces that
/// stress it: escapes of every kind (octal, hex, letters, a backslash
/// before a line end, a delimiter or any other byte), `\N` inside and
/// around fields, the end marker `\.` alone on a line and elsewhere, and
/// now and then a record with a field too many or too few. A raw carriage
/// return is left out: COPY refuses one line end mixed with another,
/// which the reader accepts (it says so).
fn text_case(rng: &mut Rng, null: &str) -> String {
    let pieces = [
        "a", "N", ".", "\\", "\\\\", "\\N", "\\.", "\\t", "\\n", "\\r", "\\b", "\\v", "\\q", "\\x",
        "\\x4", "\\x4f", "\\x4fa", "\\101", "\\7", "\\18", "\\\t", "\\\n", "\\\r", "\t", "\n",
        null,
    ];
    let mut text = String::new();
    for _ in 0..=rng.below(3) {
        if rng.below(12) == 0 {
            text.push_str("\\.\n");
            continue;
        }
        let fields = match rng.below(8) {
            0 => 2,
            1 => 4,
            _ => 3,
        };
        for f in 0..fields {
            if f > 0 {
                text.push('\t');
            }
            for _ in 0..rng.below(4) {
                text.push_str(pieces[rng.index(pieces.len())]);
            }
        }
        text.push('\n');
    }
    text
}

/// The reader's three-field records of `text` as the server would store
/// them, or `Err` with why COPY could not: the reader's error, a record
/// of another width, a NUL or bytes that are not UTF-8.
fn read_text(text: &str, dialect: &Dialect) -> Result<Vec<Vec<Option<String>>>, String> {
    let mut reader = Reader::new(text.as_bytes(), dialect.clone());
    let mut records = Vec::new();
    while let Some(record) = reader.read_record().map_err(|e| e.to_string())? {
        if record.len() != 3 {
            return Err(format!("{} fields", record.len()));
        }
        let mut fields = Vec::new();
        for i in 0..3 {
            fields.push(match record.get(i) {
                None => None,
                Some(b) if b.contains(&0) => return Err("a NUL".to_owned()),
                Some(b) => Some(String::from_utf8(b.to_vec()).map_err(|_| "not UTF-8")?),
            });
        }
        records.push(fields);
    }
    Ok(records)
}

#[tokio::test]
async fn the_reader_reads_the_text_format_as_copy_does() {
    let db = TestDb::new("text_oracle").await;
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE t (n serial, a text, b text, c text)")
        .await
        .expect("table");
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .expect("version")
        .get(0);
    let dialects = [
        ("", Dialect::postgres_text()),
        (
            ", NULL 'nil'",
            Dialect {
                null: b"nil".to_vec(),
                ..Dialect::postgres_text()
            },
        ),
        (
            ", NULL ''",
            Dialect {
                null: Vec::new(),
                ..Dialect::postgres_text()
            },
        ),
        // Compared with each field's bytes before escapes are undone.
        (
            ", NULL '\\X'",
            Dialect {
                null: b"\\X".to_vec(),
                ..Dialect::postgres_text()
            },
        ),
        (
            ", NULL '\\N\\'",
            Dialect {
                null: b"\\N\\".to_vec(),
                ..Dialect::postgres_text()
            },
        ),
    ];
    let mut rng = Rng(0x2F6B_3A1D_9C4E_8B75);
    let (mut accepted, mut refused) = (0, 0);
    for (options, dialect) in &dialects {
        let null = String::from_utf8_lossy(&dialect.null).into_owned();
        for _ in 0..1000 {
            let text = text_case(&mut rng, &null);
            client.batch_execute("TRUNCATE t").await.expect("truncate");
            let statement = format!("COPY t (a, b, c) FROM STDIN (FORMAT text{options})");
            let server: Result<Vec<Vec<Option<String>>>, String> =
                match copy_in(&client, &statement, [text.clone().into_bytes()]).await {
                    Ok(_) => Ok(client
                        .query("SELECT a, b, c FROM t ORDER BY n", &[])
                        .await
                        .expect("rows")
                        .iter()
                        .map(|row| (0..3).map(|i| row.get(i)).collect())
                        .collect()),
                    Err(e) => Err(e.to_string()),
                };
            let ours = read_text(&text, dialect);
            // Before PostgreSQL 18, `\.` ending a line ended the data
            // there, after the fields before it; the reader refuses it.
            if version < 180_000 && ours.as_ref().is_err_and(|e| e.contains("end-of-data")) {
                continue;
            }
            // A backslash escaping a backslash before a carriage return
            // leaves that one raw: the reader takes it for a line end
            // (as it says it does), COPY for one mixed with `\n`.
            if server
                .as_ref()
                .is_err_and(|e| e.contains("literal carriage return"))
            {
                continue;
            }
            match (&ours, &server) {
                (Ok(ours), Ok(server)) => {
                    assert_eq!(
                        ours, server,
                        "{text:?} in {dialect:?}: the reader (left), COPY (right)"
                    );
                    accepted += 1;
                }
                (Err(_), Err(_)) => refused += 1,
                _ => panic!("{text:?} in {dialect:?}: the reader {ours:?}, COPY {server:?}"),
            }
        }
    }
    // The comparison must not be vacuous either way.
    assert!(
        accepted > 300 && refused > 300,
        "{accepted} accepted, {refused} refused by both"
    );
}
