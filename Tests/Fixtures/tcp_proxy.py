"""A TCP proxy that can die mid-transfer, standing in for an S3 server
killed during an upload or a download (moto keeps its state in memory, so
the real server stays up behind the proxy and a rerun finds what it had).

usage: tcp_proxy.py LISTEN_PORT TARGET_PORT [up|down BYTES | count FILE]

Forwards 127.0.0.1:LISTEN_PORT to 127.0.0.1:TARGET_PORT. With "up N" the
whole process exits at once (os._exit, as a kill would) once N bytes have
gone from clients to the server; with "down N", once N bytes have come
back. With "count FILE" it writes the number of connections accepted so
far to FILE after each one (how a test sees connections being reused).
Prints "ready" when it listens.
"""
import os
import socket
import sys
import threading

listen, target = int(sys.argv[1]), int(sys.argv[2])
mode = sys.argv[3] if len(sys.argv) > 3 else None
limit = int(sys.argv[4]) if len(sys.argv) > 4 and mode != "count" else None
count_file = sys.argv[4] if mode == "count" else None
accepted = 0
counts = {"up": 0, "down": 0}
lock = threading.Lock()


def pump(src, dst, direction):
    try:
        while True:
            data = src.recv(4096)
            if not data:
                break
            with lock:
                counts[direction] += len(data)
                if mode == direction and counts[direction] >= limit:
                    os._exit(1)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", listen))
server.listen(16)
print("ready", flush=True)
while True:
    client, _ = server.accept()
    accepted += 1
    if count_file:
        with open(count_file + ".tmp", "w") as f:
            f.write(str(accepted))
        os.replace(count_file + ".tmp", count_file)
    upstream = socket.create_connection(("127.0.0.1", target))
    threading.Thread(target=pump, args=(client, upstream, "up"), daemon=True).start()
    threading.Thread(target=pump, args=(upstream, client, "down"), daemon=True).start()
