"""Creates the S3 bucket, DynamoDB catalog table and KMS key scripts/bench's S3 case uses, on
the emulator at argv[1]; prints them as shell assignments. The table mirrors
pgkeep::catalog::dynamodb::create_table (docs/DYNAMODB.md)."""
import sys

import boto3

kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1")
boto3.client("s3", **kw).create_bucket(Bucket="pgkeep-bench")


def index(name, hash_key):
    return dict(IndexName=name, Projection=dict(ProjectionType="ALL"),
                KeySchema=[dict(AttributeName=hash_key, KeyType="HASH"),
                           dict(AttributeName="start_key", KeyType="RANGE")])


boto3.client("dynamodb", **kw).create_table(
    TableName="pgkeep-bench", BillingMode="PAY_PER_REQUEST",
    AttributeDefinitions=[dict(AttributeName=n, AttributeType="S")
                          for n in ("pk", "start_key", "item_type", "database_key", "status_key")],
    KeySchema=[dict(AttributeName="pk", KeyType="HASH")],
    GlobalSecondaryIndexes=[index("by_time", "item_type"), index("by_database", "database_key"),
                            index("by_status", "status_key")])
key = boto3.client("kms", **kw).create_key()["KeyMetadata"]["Arn"]
print("BENCH_S3_REPO=s3://pgkeep-bench/bench")
print("BENCH_S3_CATALOG=dynamodb://pgkeep-bench")
print(f"BENCH_S3_KEY=kms://{key}")
