//! `pgbulk status`: what the target's ledger says of each job of a
//! pipeline, or of one table (see `pgbulk::status`); of an export job,
//! what its destination records (see `pgbulk::export::status`).

use pgbulk::conninfo::Environment;
use pgbulk::schema::TableName;

use crate::args::{Command, StatusArgs};
use crate::pipeline;

/// Runs `pgbulk status`: every job's block, then exit 1 when a job's
/// state could not be read.
pub(crate) async fn status(args: StatusArgs, env: &Environment) -> anyhow::Result<u8> {
    // (heading, target request, table)
    let mut wanted: Vec<(String, pgbulk::conninfo::Request, TableName)> = Vec::new();
    // Export jobs' blocks, each before the ledger job that follows it in
    // the file.
    #[cfg_attr(not(feature = "export"), allow(unused_mut))]
    let mut exports: Vec<(usize, String, Vec<String>)> = Vec::new();
    // Jobs whose state could not be read: reported, then exit 1.
    #[cfg_attr(not(feature = "export"), allow(unused_mut))]
    let mut unreadable: Vec<String> = Vec::new();
    if let Some(file) = &args.file {
        let lookup = |name: &str| std::env::var(name).ok();
        let pipeline = pipeline::read(file, &lookup)?;
        for job in &pipeline.jobs {
            let (connection, table) = match &job.command {
                Command::Load(a) => {
                    let table = crate::settings::load(a).map_err(refused)?.table;
                    (&a.connection, table)
                }
                Command::Sync(a) => (
                    &a.connection,
                    TableName::parse(
                        &a.to.clone().or_else(|| a.table.clone()).unwrap_or_default(),
                    )?,
                ),
                #[cfg(feature = "export")]
                Command::Export(a) => {
                    let opts = crate::settings::export(a).map_err(refused)?;
                    // A destination that cannot be read is said in its
                    // block: the other jobs are still reported.
                    match pgbulk::export::status(&opts).await {
                        Ok(tables) => {
                            for t in tables {
                                exports.push((
                                    wanted.len(),
                                    format!(
                                        "{} (export of {} to {}/{})",
                                        job.name, t.source, opts.to, t.table
                                    ),
                                    t.lines,
                                ));
                            }
                        }
                        Err(e) => {
                            unreadable.push(job.name.clone());
                            exports.push((
                                wanted.len(),
                                format!("{} (export to {})", job.name, opts.to),
                                vec![format!("cannot be read: {e}")],
                            ));
                        }
                    }
                    continue;
                }
                _ => continue,
            };
            wanted.push((
                format!("{} ({} into {table})", job.name, job.kind),
                connection.request(),
                table,
            ));
        }
    } else if let Some(table) = &args.table {
        let table = TableName::parse(table)?;
        wanted.push((table.to_string(), args.connection.request(), table));
    }
    // One connection per target, one ledger query per schema.
    let mut blocks: Vec<(String, Vec<String>)> = Vec::new();
    let mut targets: Vec<(String, pgbulk::conninfo::ConnParams, Vec<usize>)> = Vec::new();
    for (i, (_, request, _)) in wanted.iter().enumerate() {
        let params = pgbulk::endpoint::resolve(request, env)?.params;
        let id = params.to_string();
        match targets.iter_mut().find(|(t, _, _)| *t == id) {
            Some((_, _, jobs)) => jobs.push(i),
            None => targets.push((id, params, vec![i])),
        }
    }
    let mut described: Vec<Option<Vec<String>>> = vec![None; wanted.len()];
    for (_, params, jobs) in &targets {
        let client = pgbulk::connect::connect(params).await?.client;
        let tables: Vec<TableName> = jobs.iter().map(|i| wanted[*i].2.clone()).collect();
        let statuses = pgbulk::status::read(&client, &tables).await?;
        for (i, s) in jobs.iter().zip(&statuses) {
            described[*i] = Some(s.describe());
        }
    }
    let mut exports = exports.into_iter().peekable();
    for (i, ((heading, _, _), lines)) in wanted.iter().zip(described).enumerate() {
        while let Some((_, heading, lines)) = exports.next_if(|(before, ..)| *before == i) {
            blocks.push((heading, lines));
        }
        blocks.push((heading.clone(), lines.unwrap_or_default()));
    }
    blocks.extend(exports.map(|(_, heading, lines)| (heading, lines)));
    for (i, (heading, lines)) in blocks.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("{heading}");
        for line in lines {
            println!("  {line}");
        }
    }
    if unreadable.is_empty() {
        return Ok(0);
    }
    // A monitoring script must not read "fine" from an unreadable state.
    let jobs = if unreadable.len() == 1 { "job" } else { "jobs" };
    eprintln!(
        "pgbulk: error: the state of {jobs} {} cannot be read (said above)",
        unreadable.join(", ")
    );
    Ok(1)
}

/// A job's flags that make no settings (the pipeline was checked already).
fn refused(refusal: crate::settings::Refusal) -> anyhow::Error {
    match refusal {
        crate::settings::Refusal::Usage(m) => anyhow::anyhow!(m),
        crate::settings::Refusal::Invalid(e) => e.into(),
    }
}
