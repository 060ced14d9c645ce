"""A hostile S3 endpoint on 127.0.0.1, for the tests of fedbatch's limits.

usage: hostile_s3.py MODE
MODE "repeat-token": every listing says it is truncated and hands back the
same continuation token, so a client that follows it lists for ever.
MODE "drip": every answer promises a large body and sends two bytes a
second. Prints its port, then serves until killed.
"""
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = sys.argv[1]
PAGE = """<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Name>fedbatch</Name><IsTruncated>true</IsTruncated><NextContinuationToken>same-token</NextContinuationToken>
<Contents><Key>federation/fmnist/inbox/site-1/junk.fbu</Key><Size>10</Size></Contents>
</ListBucketResult>"""


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if MODE == "repeat-token":
            body = PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(100000 // 2):
                self.wfile.write(b"<a")
                self.wfile.flush()
                time.sleep(1)
        except (BrokenPipeError, ConnectionResetError):
            pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
