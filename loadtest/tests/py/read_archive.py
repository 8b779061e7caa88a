"""Read the Parquet archive back with DuckDB, independently of the shipper,
and print one JSON line: every row's (org, app, message), plus the Hive
partition values seen in paths next to the columns."""

import argparse
import json

import duckdb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    args = ap.parse_args()
    glob = f"{args.dir}/**/*.parquet"
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT org, app, message, stream_seq FROM read_parquet('{glob}', hive_partitioning=false) ORDER BY stream_seq"
    ).fetchall()
    # The partition directories agree with the columns.
    mismatched = con.execute(
        f"""SELECT count(*) FROM read_parquet('{glob}', filename=true, hive_partitioning=false)
            WHERE filename NOT LIKE '%/org=' || org || '/app=' || app || '/date=' || strftime(ts, '%Y-%m-%d')
                                    || '/hour=' || strftime(ts, '%H') || '/%'"""
    ).fetchone()[0]
    print(json.dumps({
        "rows": [[o, a, m, s] for o, a, m, s in rows],
        "partition_mismatches": mismatched,
    }))


if __name__ == "__main__":
    main()
