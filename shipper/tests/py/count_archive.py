"""Count the archive's rows with DuckDB: total, distinct stream sequences,
and the smallest and largest sequence. One JSON line."""

import json
import sys

import duckdb

glob = f"{sys.argv[1]}/**/*.parquet"
total, distinct, lo, hi = duckdb.connect().execute(
    f"SELECT count(*), count(DISTINCT stream_seq), min(stream_seq), max(stream_seq) FROM read_parquet('{glob}')"
).fetchone()
print(json.dumps({"rows": total, "distinct": distinct, "min": lo, "max": hi}))
