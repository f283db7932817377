#!/usr/bin/env python3
"""Peer pipelines for the ingest benchmark: read a PostgreSQL table into
Arrow, then write the same Parquet as the ingest (zstd, 128K-row groups).

    pip install connectorx adbc-driver-postgresql pyarrow
    python3 peers.py postgres://postgres:postgres@127.0.0.1:5432/postgres lakehouse_bench_1m

Prints one JSON object per peer: {"peer", "seconds", "read_seconds", "rows"}.
A missing peer prints {"peer", "error"} instead, so the caller can go on.
"""

import json
import os
import sys
import tempfile
import time


def write_parquet(table, path):
    import pyarrow.parquet as pq

    pq.write_table(table, path, compression="zstd", row_group_size=131072)


def run(name, read, url, query):
    try:
        started = time.perf_counter()
        table = read(url, query)
        read_done = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            write_parquet(table, os.path.join(folder, "out.parquet"))
        finished = time.perf_counter()
        print(json.dumps({
            "peer": name,
            "seconds": finished - started,
            "read_seconds": read_done - started,
            "rows": table.num_rows,
        }), flush=True)
    except Exception as error:  # a missing package or driver: report, go on
        print(json.dumps({"peer": name, "error": f"{type(error).__name__}: {error}"}), flush=True)


def connectorx(url, query):
    import connectorx as cx

    return cx.read_sql(url, query, return_type="arrow")


def adbc(url, query):
    import adbc_driver_postgresql.dbapi as dbapi

    with dbapi.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(query)
        return cursor.fetch_arrow_table()


def main():
    url, table = sys.argv[1], sys.argv[2]
    query = f"SELECT * FROM {table}"
    run("connectorx+pyarrow", connectorx, url, query)
    run("adbc+pyarrow", adbc, url, query)


if __name__ == "__main__":
    main()
