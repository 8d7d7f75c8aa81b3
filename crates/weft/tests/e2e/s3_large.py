"""Streams one large object through weft's S3 listener with presigned URLs
(signed by boto3): PUT from a generator, GET read in chunks, neither side
holding it whole. Prints what it saw as JSON.

Usage: s3_large.py ENDPOINT ACCESS_KEY_ID SECRET_ACCESS_KEY SIZE
"""

import hashlib
import http.client
import json
import sys
import time
import urllib.parse

import boto3
from botocore.config import Config

endpoint, key_id, secret, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id=key_id,
    aws_secret_access_key=secret,
    region_name="us-east-1",
    config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
)
CHUNK = 1 << 20
digest = hashlib.md5()


def chunks():
    sent = 0
    n = 0
    while sent < size:
        piece = (n.to_bytes(8, "big") * (CHUNK // 8))[: min(CHUNK, size - sent)]
        digest.update(piece)
        sent += len(piece)
        n += 1
        yield piece


def connection(url):
    parsed = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=300), parsed.path + "?" + parsed.query


started = time.time()
url = s3.generate_presigned_url("put_object", Params={"Bucket": "uploads", "Key": "large.bin"}, ExpiresIn=600)
conn, target = connection(url)
conn.request("PUT", target, body=chunks(), headers={"Content-Length": str(size)})
put = conn.getresponse()
put_body = put.read()
etag = put.getheader("ETag", "")
put_seconds = time.time() - started

started = time.time()
url = s3.generate_presigned_url("get_object", Params={"Bucket": "uploads", "Key": "large.bin"}, ExpiresIn=600)
conn, target = connection(url)
conn.request("GET", target)
got = conn.getresponse()
read = hashlib.md5()
length = 0
while True:
    piece = got.read(CHUNK)
    if not piece:
        break
    read.update(piece)
    length += len(piece)
get_seconds = time.time() - started

print(
    json.dumps(
        {
            "put_status": put.status,
            "put_error": put_body.decode(errors="replace")[:500],
            "etag_ok": etag == '"%s"' % digest.hexdigest(),
            "get_status": got.status,
            "length": length,
            "same": read.hexdigest() == digest.hexdigest(),
            "put_seconds": round(put_seconds, 1),
            "get_seconds": round(get_seconds, 1),
        }
    )
)
