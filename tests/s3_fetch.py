#!/usr/bin/env python3
"""Downloads a log's segment objects with boto3, an S3 client independent of
this project, and writes them in chain order to one JSONL file.

Usage: s3_fetch.py BUCKET PREFIX/LOG_ID OUT_FILE
Reads AUDIT_S3_ENDPOINT, AUDIT_S3_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.
"""
import os
import sys

import boto3


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    bucket, log_dir, out = argv[1], argv[2].strip("/"), argv[3]
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["AUDIT_S3_ENDPOINT"],
        region_name=os.environ.get("AUDIT_S3_REGION", "garage"),
    )
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{log_dir}/segments/"):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    keys.sort()
    if not keys:
        print(f"no segments under s3://{bucket}/{log_dir}/segments/", file=sys.stderr)
        return 1
    with open(out, "wb") as f:
        for k in keys:
            f.write(s3.get_object(Bucket=bucket, Key=k)["Body"].read())
    print(f"fetched {len(keys)} segment objects from s3://{bucket}/{log_dir}/ with boto3")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
