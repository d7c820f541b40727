#!/usr/bin/env python3
"""The hiring flow driven by a plain NATS client: no Rust, no jetsource library,
not even a NATS library. Python's standard library speaks the NATS text protocol
(CONNECT, SUB, PUB, MSG/HMSG) over a socket, sends JSON commands and queries as
request/reply, and prints every request and reply body.

Run against a running stack (`jetsource up` in another terminal):

    python3 examples/walkthrough.py                  # nats://127.0.0.1:4222
    NATS_URL=nats://127.0.0.1:4333 python3 examples/walkthrough.py

The same requests with natscli (in `nix develop`) are in the README. Exits non-zero
if any reply is not what the flow says it should be.
"""

import json
import os
import socket
import sys
import time
import uuid


class Nats:
    """Just enough of the NATS client protocol for request/reply."""

    def __init__(self, url):
        host, port = url.replace("nats://", "").split(",")[0].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buf = b""
        self._line()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"headers":true,"no_responders":true,"name":"walkthrough.py"}\r\n')
        self.inbox = "_INBOX." + uuid.uuid4().hex
        self.sock.sendall(f"SUB {self.inbox}.* 1\r\nPING\r\n".encode())
        while self._line() != b"PONG":
            pass

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n):
        while len(self.buf) < n + 2:
            self.buf += self.sock.recv(65536)
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def request(self, subject, body, headers=None):
        reply_to = f"{self.inbox}.{uuid.uuid4().hex}"
        payload = json.dumps(body).encode()
        head = "NATS/1.0\r\nContent-Type: application/json\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        head = (head + "\r\n").encode()
        self.sock.sendall(
            f"HPUB {subject} {reply_to} {len(head)} {len(head) + len(payload)}\r\n".encode()
            + head + payload + b"\r\n")
        while True:
            line = self._line()
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
                continue
            parts = line.split()
            if parts[0] == b"MSG":
                data = self._take(int(parts[-1]))
                status = ""
            elif parts[0] == b"HMSG":
                total = int(parts[-1])
                raw = self._take(total)
                hdr_len = int(parts[-2])
                status = raw[:hdr_len].decode().split("\r\n")[0]
                data = raw[hdr_len:]
            else:
                continue
            if parts[1].decode() != reply_to:
                continue
            if "503" in status and not data:
                raise RuntimeError(f"no responders on {subject}: is `jetsource up` running?")
            return json.loads(data)


def main():
    nats = Nats(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    run = uuid.uuid4().hex[:6]  # fresh ids, so the walkthrough can run again on the same store
    org, ada, bob, offer_a, offer_b = (f"acme-{run}", f"ada-{run}", f"bob-{run}",
                                       f"offer-ada-{run}", f"offer-bob-{run}")
    failures = []

    def send(subject, body, expect="accepted"):
        print(f"> {subject} {json.dumps(body)}")
        reply = nats.request(subject, body, {"Jetsource-Command-Id": uuid.uuid4().hex} if subject.startswith("cmd.") else None)
        print(f"< {json.dumps(reply)}\n")
        if expect and reply.get("status") != expect:
            failures.append(f"{subject}: expected {expect}, got {reply}")
        return reply

    def until(subject, body, check, what):
        deadline = time.time() + 30
        while time.time() < deadline:
            reply = nats.request(subject, body)
            if check(reply):
                print(f"> {subject} {json.dumps(body)}\n< {json.dumps(reply)}\n")
                return reply
            time.sleep(0.2)
        failures.append(f"{what} did not happen in 30 s")

    print("# An organization with a position, two people")
    send("cmd.organization.Register", {"id": org, "name": "Acme"})
    send("cmd.organization.OpenPosition", {"id": org, "position_id": "eng-1", "title": "Engineer"})
    send("cmd.organization.OpenPosition", {"id": org, "position_id": "ops-1", "title": "Operator"})
    send("cmd.person.Register", {"id": ada, "name": "Ada Lovelace", "email": f"{ada}@example.org"})
    send("cmd.person.Register", {"id": bob, "name": "Bob Kahn", "email": f"{bob}@example.org"})
    print("# Bad input gets a typed rejection, and nothing is stored")
    send("cmd.person.Register", {"id": "no.dots", "name": "X", "email": "x@example.org"}, expect="rejected")
    print("# Offers; the hiring saga records each on the person")
    send("cmd.organization.ExtendOffer", {"id": org, "position_id": "eng-1", "person_id": ada,
                                          "offer_id": offer_a, "expires_at": "2099-01-01T00:00:00Z"})
    send("cmd.organization.ExtendOffer", {"id": org, "position_id": "ops-1", "person_id": bob,
                                          "offer_id": offer_b, "expires_at": "2099-01-01T00:00:00Z"})
    for person, offer in [(ada, offer_a), (bob, offer_b)]:
        until("qry.offers.by_person", {"id": person},
              lambda r, o=offer: r.get("offers", {}).get(o, {}).get("status") == "pending",
              f"offer {offer} recorded on {person}")
    print("# Ada accepts: the saga hires her (position filled + member joined) and starts the employment")
    send("cmd.person.AcceptOffer", {"id": ada, "offer_id": offer_a})
    until("qry.person.get", {"id": ada}, lambda r: r.get("employer") == org, "ada's employment")
    print("# Bob declines: the saga withdraws the offer on the organization's side")
    send("cmd.person.DeclineOffer", {"id": bob, "offer_id": offer_b})
    until("qry.offers.by_person", {"id": bob},
          lambda r: r.get("offers", {}).get(offer_b, {}).get("status") == "withdrawn", "bob's withdrawal")
    print("# The organization's view")
    until("qry.organization.get", {"id": org}, lambda r: ada in r.get("members", {}), "ada as a member")

    if failures:
        print("FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        sys.exit(1)
    print("walkthrough ok")


if __name__ == "__main__":
    main()
