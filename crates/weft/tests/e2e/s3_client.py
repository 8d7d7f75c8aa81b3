"""Drives weft's S3 listener with boto3, the AWS SDK for Python, as an app
would, and prints what it saw as one JSON object for the test to check.

Usage: s3_client.py ENDPOINT ACCESS_KEY_ID SECRET_ACCESS_KEY
"""

import base64
import hashlib
import io
import json
import os
import socket
import sys
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

endpoint, key_id, secret = sys.argv[1:4]
BUCKET = "uploads"


def client(key=key_id, secret_key=secret):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
        ),
    )


s3 = client()
report = {}


def code(call):
    """The S3 error code a call fails with, or None if it succeeds."""
    try:
        call()
        return None
    except ClientError as e:
        return e.response["Error"]["Code"]


# One small object, with its type and metadata.
s3.put_object(
    Bucket=BUCKET, Key="docs/hello world.txt", Body=b"hello, world", ContentType="text/plain", Metadata={"owner": "ana"}
)
head = s3.head_object(Bucket=BUCKET, Key="docs/hello world.txt")
report["head"] = {
    "size": head["ContentLength"],
    "etag": head["ETag"],
    "type": head["ContentType"],
    "meta": head["Metadata"],
}
r = s3.get_object(Bucket=BUCKET, Key="docs/hello world.txt", Range="bytes=7-11")
report["range"] = {
    "status": r["ResponseMetadata"]["HTTPStatusCode"],
    "body": r["Body"].read().decode(),
    "content_range": r["ContentRange"],
}
report["suffix_range"] = s3.get_object(Bucket=BUCKET, Key="docs/hello world.txt", Range="bytes=-5")["Body"].read().decode()

# A multipart upload (three parts, sent four at a time), downloaded by ranges.
big = os.urandom(12 << 20)
transfer = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20, max_concurrency=4)
s3.upload_fileobj(io.BytesIO(big), BUCKET, "big/file.bin", Config=transfer)
got = io.BytesIO()
s3.download_fileobj(BUCKET, "big/file.bin", got, Config=transfer)
big_head = s3.head_object(Bucket=BUCKET, Key="big/file.bin")
digests = b"".join(hashlib.md5(big[i : i + (5 << 20)]).digest() for i in range(0, len(big), 5 << 20))
report["multipart"] = {
    "same": got.getvalue() == big,
    "size": big_head["ContentLength"],
    "etag_ok": big_head["ETag"] == '"%s-3"' % hashlib.md5(digests).hexdigest(),
    "part2": s3.head_object(Bucket=BUCKET, Key="big/file.bin", PartNumber=2)["ContentLength"],
}

# An upload that is aborted leaves nothing, and its id is then unknown.
upload = s3.create_multipart_upload(Bucket=BUCKET, Key="big/aborted.bin")["UploadId"]
s3.upload_part(Bucket=BUCKET, Key="big/aborted.bin", UploadId=upload, PartNumber=1, Body=b"x" * 1000)
report["parts_listed"] = [p["Size"] for p in s3.list_parts(Bucket=BUCKET, Key="big/aborted.bin", UploadId=upload)["Parts"]]
s3.abort_multipart_upload(Bucket=BUCKET, Key="big/aborted.bin", UploadId=upload)
report["aborted_upload"] = code(
    lambda: s3.list_parts(Bucket=BUCKET, Key="big/aborted.bin", UploadId=upload)
)
report["aborted_object"] = code(lambda: s3.head_object(Bucket=BUCKET, Key="big/aborted.bin"))
# Parts under 5 MiB but the last are refused on completion.
upload = s3.create_multipart_upload(Bucket=BUCKET, Key="big/small-parts.bin")["UploadId"]
etags = [
    s3.upload_part(Bucket=BUCKET, Key="big/small-parts.bin", UploadId=upload, PartNumber=n, Body=b"y" * 10)["ETag"]
    for n in (1, 2)
]
report["too_small"] = code(
    lambda: s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key="big/small-parts.bin",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2), etags)]},
    )
)
s3.abort_multipart_upload(Bucket=BUCKET, Key="big/small-parts.bin", UploadId=upload)

# Listing with a prefix, a delimiter and pages of two.
for k in ["a/1", "a/2", "b/1", "c", "d"]:
    s3.put_object(Bucket=BUCKET, Key="list/" + k, Body=b"x")
keys, prefixes, pages = [], [], 0
for page in s3.get_paginator("list_objects_v2").paginate(
    Bucket=BUCKET, Prefix="list/", Delimiter="/", PaginationConfig={"PageSize": 2}
):
    pages += 1
    keys += [o["Key"] for o in page.get("Contents", [])]
    prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
report["list"] = {"keys": keys, "prefixes": prefixes, "pages": pages}
report["list_all"] = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="list/")["Contents"]]

# Copies, conditions and errors.
s3.copy_object(Bucket=BUCKET, Key="docs/copy.txt", CopySource={"Bucket": BUCKET, "Key": "docs/hello world.txt"})
report["copy"] = s3.get_object(Bucket=BUCKET, Key="docs/copy.txt")["Body"].read().decode()
report["not_modified"] = code(lambda: s3.get_object(Bucket=BUCKET, Key="docs/hello world.txt", IfNoneMatch=head["ETag"]))
report["precondition"] = code(lambda: s3.get_object(Bucket=BUCKET, Key="docs/hello world.txt", IfMatch='"0000"'))
report["no_key"] = code(lambda: s3.get_object(Bucket=BUCKET, Key="docs/none"))
report["no_bucket"] = code(lambda: s3.list_objects_v2(Bucket="nothing-here"))
report["bad_range"] = code(lambda: s3.get_object(Bucket=BUCKET, Key="docs/hello world.txt", Range="bytes=100-200"))
report["create_bucket"] = code(lambda: s3.create_bucket(Bucket="another"))
report["buckets"] = [b["Name"] for b in s3.list_buckets()["Buckets"]]

# A wrong Content-MD5 keeps nothing.
wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
report["bad_md5"] = code(lambda: s3.put_object(Bucket=BUCKET, Key="docs/bad.txt", Body=b"data", ContentMD5=wrong))
report["bad_md5_kept"] = code(lambda: s3.head_object(Bucket=BUCKET, Key="docs/bad.txt"))

# Keys that look like paths are only keys.
s3.put_object(Bucket=BUCKET, Key="../../escape.txt", Body=b"inside")
s3.put_object(Bucket=BUCKET, Key="/abs/olute.txt", Body=b"inside too")
report["dotted"] = s3.get_object(Bucket=BUCKET, Key="../../escape.txt")["Body"].read().decode()
report["absolute"] = s3.get_object(Bucket=BUCKET, Key="/abs/olute.txt")["Body"].read().decode()

# Deletes: one, then several at once.
s3.delete_object(Bucket=BUCKET, Key="docs/copy.txt")
report["after_delete"] = code(lambda: s3.head_object(Bucket=BUCKET, Key="docs/copy.txt"))
deleted = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "list/a/1"}, {"Key": "list/a/2"}]})
report["deleted"] = sorted(d["Key"] for d in deleted.get("Deleted", []))

# Signatures: a wrong secret, an unknown key, a presigned URL.
report["bad_signature"] = code(lambda: client(secret_key=secret + "x").list_objects_v2(Bucket=BUCKET))
report["unknown_key"] = code(lambda: client(key="AKIANOTAKEY0000").list_objects_v2(Bucket=BUCKET))
url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "docs/hello world.txt"}, ExpiresIn=60)
report["presigned"] = urllib.request.urlopen(url).read().decode()
tampered = url.replace("docs/hello", "docs/hellO")
try:
    urllib.request.urlopen(tampered)
    report["presigned_tampered"] = None
except urllib.error.HTTPError as e:
    report["presigned_tampered"] = e.code


def short_put(key):
    """A signed PUT whose body stops 90 bytes short of its Content-Length."""
    url = f"{endpoint}/{BUCKET}/{key}"
    request = AWSRequest(method="PUT", url=url, data=b"z" * 100)
    request.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    request.headers["Content-Length"] = "100"
    SigV4Auth(Credentials(key_id, secret), "s3", "us-east-1").add_auth(request)
    parsed = urllib.parse.urlparse(url)
    head = f"PUT {parsed.path} HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
    for name, value in request.headers.items():
        if name.lower() != "host":
            head += f"{name}: {value}\r\n"
    with socket.create_connection((parsed.hostname, parsed.port)) as s:
        s.sendall(head.encode() + b"\r\n" + b"z" * 10)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        try:
            s.recv(4096)
        except OSError:
            pass


short_put("docs/short.txt")
report["short_kept"] = code(lambda: s3.head_object(Bucket=BUCKET, Key="docs/short.txt"))

def raced_upload(key, rival):
    """An upload of two parts completed while a rival (a second completion,
    or an abort) runs at the same time: what each call answered, and what
    is then stored at the key."""
    data = os.urandom((5 << 20) + 1000)
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    parts = [
        {"PartNumber": n, "ETag": s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=n, Body=chunk)["ETag"]}
        for n, chunk in ((1, data[: 5 << 20]), (2, data[5 << 20 :]))
    ]
    calls = {
        "complete": lambda: s3.complete_multipart_upload(
            Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
        ),
        "abort": lambda: s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload),
    }
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(code, [calls["complete"], calls[rival]]))
    try:
        stored = "whole" if s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data else "corrupt"
    except ClientError as e:
        stored = e.response["Error"]["Code"]
    return {"rival": rival, "outcomes": outcomes, "stored": stored}


report["raced"] = [raced_upload(f"race/{i}.bin", "complete" if i % 2 == 0 else "abort") for i in range(6)]

# A download under way when its object is overwritten reads the old data
# to its end; the next download reads the new.
old = os.urandom((5 << 20) + 4096)
s3.upload_fileobj(io.BytesIO(old), BUCKET, "race/read.bin", Config=transfer)
stream = s3.get_object(Bucket=BUCKET, Key="race/read.bin")["Body"]
first = stream.read(1 << 20)
s3.put_object(Bucket=BUCKET, Key="race/read.bin", Body=b"new")
report["read_while_overwritten"] = first + stream.read() == old
report["read_after_overwrite"] = s3.get_object(Bucket=BUCKET, Key="race/read.bin")["Body"].read().decode()


def tampered_delete():
    """A DeleteObjects signed over one body and sent with another: the S3
    error code it gets."""
    url = f"{endpoint}/{BUCKET}?delete"
    signed = b"<Delete><Object><Key>list/c</Key></Object></Delete>"
    sent = b"<Delete><Object><Key>list/d</Key></Object></Delete>"
    request = AWSRequest(method="POST", url=url, data=signed)
    request.headers["x-amz-content-sha256"] = hashlib.sha256(signed).hexdigest()
    SigV4Auth(Credentials(key_id, secret), "s3", "us-east-1").add_auth(request)
    try:
        urllib.request.urlopen(urllib.request.Request(url, data=sent, method="POST", headers=dict(request.headers.items())))
        return None
    except urllib.error.HTTPError as e:
        body = e.read().decode()
        return body.split("<Code>")[1].split("</Code>")[0] if "<Code>" in body else e.code


report["tampered_delete"] = tampered_delete()
report["tampered_delete_kept"] = code(lambda: s3.head_object(Bucket=BUCKET, Key="list/d"))

print(json.dumps(report))
