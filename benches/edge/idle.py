#!/usr/bin/env python3
"""Opens N keep-alive connections to a gateway, sends one request on each, keeps them all
open and idle, and prints the resident memory of the gateway process before and after.

usage: idle.py HOST:PORT PATH PID [N]
"""
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    address, path, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 10_000
    host, port = address.rsplit(":", 1)
    before = rss_kib(pid)
    request = f"GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n".encode()
    sockets = []
    for _ in range(count):
        s = socket.create_connection((host, int(port)))
        s.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("connection closed before the answer")
            answer += chunk
        if not answer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {answer[:40]!r}")
        sockets.append(s)
    time.sleep(1)
    after = rss_kib(pid)
    # Every connection is still open: the gateway has not closed any idle one yet.
    for s in sockets:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                raise RuntimeError("an idle connection was closed during the measurement")
        except BlockingIOError:
            pass
    print(f"{count} idle keep-alive connections: RSS {before / 1024:.1f} MiB before, "
          f"{after / 1024:.1f} MiB with them open, "
          f"{(after - before) / count:.2f} KiB per connection")
    for s in sockets:
        s.close()


if __name__ == "__main__":
    main()
