"""A real S3 API on 127.0.0.1 for the remote tests: moto's S3 application,
with authentication on, served by cheroot, which keeps HTTP/1.1
connections open as S3 does (moto's own werkzeug server closes each one,
so a client's connection reuse could not be seen).

usage: s3_server.py [populate BUCKET PREFIX COUNT]

Starts moto on a free port, creates (while moto still takes unsigned
requests) an IAM user with an S3 policy, its access key and a bucket
"fedbatch", then enforces SigV4 on every request. Prints one JSON line:
{"endpoint", "access_key", "secret_key", "bucket"}, then serves until its
stdin closes. Each line then read from stdin is a command:
"populate PREFIX COUNT [FILE]" puts COUNT objects under PREFIX, each a
copy of FILE or 10 bytes of junk (answering "ok"), for the listing tests; "put KEYHEX SHA256" puts one small object
whose key is given in hex (so it may hold any byte) with that
x-amz-meta-fedbatch-sha256, as a hostile bucket writer could.
"""
import io
import json
import os
import sys

# moto reads this when it is imported: the first four requests (the setup
# below) need no signature, every later one does.
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "4"
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import threading  # noqa: E402

import boto3  # noqa: E402
from cheroot import wsgi  # noqa: E402
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app  # noqa: E402

moto_app = DomainDispatcherApplication(create_backend_app)


def app(environ, start_response):
    """moto's app, refusing a body shorter than its Content-Length (a client
    cut off mid-upload) as S3 does (IncompleteBody), where moto would store
    the part that arrived, and given the raw path its signature check uses."""
    # moto checks signatures against the raw request path, which werkzeug
    # names RAW_URI and cheroot REQUEST_URI (a key may hold %01).
    environ.setdefault("RAW_URI", environ.get("REQUEST_URI", ""))
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        body = environ["wsgi.input"].read(length)
        if len(body) < length:
            error = b"<Error><Code>IncompleteBody</Code><Message>short body</Message></Error>"
            start_response("400 Bad Request", [("Content-Type", "application/xml"), ("Content-Length", str(len(error)))])
            return [error]
        environ["wsgi.input"] = io.BytesIO(body)
    return moto_app(environ, start_response)


server = wsgi.Server(("127.0.0.1", 0), app, numthreads=16)
server.prepare()
port = server.bind_addr[1]
threading.Thread(target=server.serve, daemon=True).start()
endpoint = f"http://127.0.0.1:{port}"

iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup")
iam.create_user(UserName="fedbatch")
iam.put_user_policy(UserName="fedbatch", PolicyName="s3", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="fedbatch")["AccessKey"]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
s3.create_bucket(Bucket="fedbatch")
print(json.dumps({"endpoint": endpoint, "access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"], "bucket": "fedbatch"}), flush=True)

for line in sys.stdin:
    words = line.split()
    # A command that fails answers with the error, so that the test fails
    # at once instead of waiting for an "ok" that never comes.
    try:
        if words and words[0] == "populate":
            prefix, count = words[1], int(words[2])
            body = open(words[3], "rb").read() if len(words) > 3 else b"x" * 10
            for i in range(count):
                s3.put_object(Bucket="fedbatch", Key=f"{prefix}{i:05d}", Body=body)
            print("ok", flush=True)
        elif words and words[0] == "put":
            s3.put_object(Bucket="fedbatch", Key=bytes.fromhex(words[1]).decode("utf-8"), Body=b"x" * 10,
                          Metadata={"fedbatch-sha256": words[2]})
            print("ok", flush=True)
    except Exception as e:  # noqa: BLE001
        print(f"error: {e}".replace("\n", " "), flush=True)
server.stop()
# cheroot's worker threads are not daemons: leave without waiting for them.
os._exit(0)
