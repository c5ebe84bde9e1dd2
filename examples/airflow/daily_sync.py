"""A daily Postgres-to-Postgres sync, done right: each run copies the day's
orders from the application database into the warehouse and deletes the
warehouse's rows of that day the source no longer has, in the transaction
of its last batch. A re-run of a day replaces that day (idempotent), and
backfills run days in parallel (each touches only its own window).

Connections: `app_db` (the source) and `warehouse` (the target), e.g.
    AIRFLOW_CONN_APP_DB='postgresql://reader:...@app-db/app?sslmode=require'
    AIRFLOW_CONN_WAREHOUSE='postgresql://loader:...@warehouse/dw'
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from pgbulk.airflow import PgbulkSyncOperator

with DAG(
    dag_id="pgbulk_daily_orders",
    schedule="@daily",
    start_date=dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=4,
    tags=["pgbulk"],
) as dag:
    PgbulkSyncOperator(
        task_id="sync_orders",
        source_conn_id="app_db",
        conn_id="warehouse",
        table="public.orders",
        to="public.orders",
        where="created_at >= '{{ ds }}'::date AND created_at < '{{ ds }}'::date + 1",
        delete_missing=True,
    )

if __name__ == "__main__":
    dag.test()
