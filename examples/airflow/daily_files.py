"""Daily files into the warehouse: each day an export lands as
`zips_YYYY-MM-DD.csv` in the landing folder (a comment line, then a
`|`-separated header). Each run loads its day's file as `pgbulk load`
would: upserted by the key, each batch committed with the file's position
(a re-run of a finished day skips the file; an interrupted one goes on
where it stopped). `load_options` are `pgbulk.load_csv`'s other arguments:
here the comment line is skipped and `zip` stays text, which inference
from a day of `10001`s would have made an integer (dropping the next
day's leading zero of `02134`).

Connection `warehouse` (the target), e.g.
    AIRFLOW_CONN_WAREHOUSE='postgresql://loader:...@warehouse/dw'
The landing folder: `$LANDING_DIR` (default /data/landing).
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG

from pgbulk.airflow import PgbulkLoadOperator

LANDING = os.environ.get("LANDING_DIR", "/data/landing")

with DAG(
    dag_id="pgbulk_daily_files",
    schedule="@daily",
    start_date=dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["pgbulk"],
) as dag:
    PgbulkLoadOperator(
        task_id="load_zips",
        paths=LANDING + "/zips_{{ ds }}.csv",
        table="zips",
        conn_id="warehouse",
        key=["zip"],
        load_options={"skip_lines": 1, "types": {"zip": "text"}},
    )

if __name__ == "__main__":
    dag.test()
