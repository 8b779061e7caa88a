"""Read the archive back from an S3-compatible server with pyarrow (not the
shipper's reader): total rows, distinct stream sequences, orgs, objects and
the largest object's size. One JSON line."""

import json
import sys

import pyarrow.compute as pc
import pyarrow.dataset as ds
from pyarrow import fs

endpoint, bucket_prefix = sys.argv[1], sys.argv[2]
s3 = fs.S3FileSystem(endpoint_override=endpoint, scheme="http", access_key="testing",
                     secret_key="testing", region="us-east-1")
dataset = ds.dataset(bucket_prefix, filesystem=s3, format="parquet")
table = dataset.to_table(columns=["org", "stream_seq"])
files = [f for f in s3.get_file_info(fs.FileSelector(bucket_prefix, recursive=True)) if f.path.endswith(".parquet")]
print(json.dumps({
    "objects": len(files),
    "max_object_bytes": max((f.size for f in files), default=0),
    "rows": table.num_rows,
    "distinct": len(pc.unique(table["stream_seq"])),
    "types": {f.name: str(f.type) for f in dataset.schema},
    "orgs": sorted(str(o) for o in pc.unique(table["org"]).to_pylist()),
}))
