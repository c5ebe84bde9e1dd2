//! The CSV reader against the server as the oracle: every text the
//! server's `COPY ... (FORMAT csv)` accepts, the reader splits into the
//! same records, fields and NULLs.

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
