#!/usr/bin/env python3
"""The hiring flow from a plain NATS client in another language: nats-py, no Rust,
no jetsource library. It sends JSON commands and queries as request/reply, prints
every request and reply, and shows how a client waits for what the hiring saga
does after a command (the saga runs after the command's reply, so a reply alone
does not cover it).

Run against a running stack (`jetsource up` in another terminal):

    pip install nats-py
    python3 hiring/examples/walkthrough.py                  # nats://127.0.0.1:4222
    NATS_URL=nats://127.0.0.1:4333 python3 hiring/examples/walkthrough.py

Ids get a random suffix so it can run again on the same store; WALKTHROUGH_IDS=plain
uses the README's ids (on a fresh store). Exits non-zero if any reply is not what
the flow says it should be.
"""

import asyncio
import json
import os
import sys
import uuid

import nats
from nats.errors import NoRespondersError


class Flow:
    def __init__(self, nc):
        self.nc = nc
        self.failures = []

    async def ask(self, subject, body, headers=None, quiet=False):
        """One request; the reply's JSON body (and its error code, if rejected)."""
        headers = {"Content-Type": "application/json", **(headers or {})}
        shown = " ".join(f"-H {k}:{v}" for k, v in headers.items() if k.startswith("Jetsource-Min"))
        try:
            msg = await self.nc.request(subject, json.dumps(body).encode(), timeout=10, headers=headers)
        except NoRespondersError:
            raise SystemExit(f"no responders on {subject}: is `jetsource up` running?")
        reply = json.loads(msg.data)
        if not quiet:
            print(f"$ nats req {subject} '{json.dumps(body)}' {shown}".rstrip())
            print(json.dumps(reply))
        code = (msg.headers or {}).get("Nats-Service-Error-Code")
        return reply, int(code) if code else None

    async def send(self, subject, body, expect="accepted"):
        """A command with its own idempotency key (a retry would reuse it)."""
        reply, _ = await self.ask(subject, body, {"Jetsource-Command-Id": uuid.uuid4().hex})
        if reply.get("status") != expect:
            self.failures.append(f"{subject}: expected {expect}, got {reply}")
        return reply

    async def follow(self, saga, instance, seq):
        """Waits for what a saga does after stream sequence `seq`: asks for the
        instance once the saga has handled `seq` (Jetsource-Min-Seq), then again
        after the last command the saga sent in reaction, until it sends nothing
        new. Returns the instance and the last sequence it caused."""
        while True:
            for _ in range(50):  # 503 saga_behind: not there yet, ask again
                reply, code = await self.ask("qry.sagas.get", {"saga": saga, "id": instance},
                                             {"Jetsource-Min-Seq": str(seq)}, quiet=True)
                if code != 503:
                    break
            if code is not None:
                self.failures.append(f"{saga} {instance}: {reply}")
                return reply, seq
            sent = [s["seq"] for entry in reply["log"] for s in entry["sent"] if s.get("seq")]
            last = max(sent, default=seq)
            print(f"$ nats req qry.sagas.get '{json.dumps({'saga': saga, 'id': instance})}' "
                  f"-H Jetsource-Min-Seq:{seq}")
            print("(summarized) " + json.dumps({k: reply[k] for k in ("id", "stage", "outcome")} |
                             {"commands": [f"{s['command']}: {s['reply']}"
                                           for e in reply["log"] for s in e["sent"]]}))
            if reply["outcome"] is not None or last <= seq:
                return reply, last
            seq = last

    def expect(self, what, ok):
        if not ok:
            self.failures.append(what)


async def main():
    nc = await nats.connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"), name="walkthrough.py")
    flow = Flow(nc)
    run = "" if os.environ.get("WALKTHROUGH_IDS") == "plain" else "-" + uuid.uuid4().hex[:6]
    org, ada, bob = f"acme{run}", f"ada{run}", f"bob{run}"
    offer_a, offer_b = f"offer-ada{run}", f"offer-bob{run}"

    print("# An organization with two positions, two people")
    await flow.send("cmd.organization.Register", {"id": org, "name": "Acme"})
    await flow.send("cmd.organization.OpenPosition", {"id": org, "position_id": "eng-1", "title": "Engineer"})
    await flow.send("cmd.organization.OpenPosition", {"id": org, "position_id": "ops-1", "title": "Operator"})
    await flow.send("cmd.person.Register", {"id": ada, "name": "Ada Lovelace", "email": f"{ada}@example.org"})
    await flow.send("cmd.person.Register", {"id": bob, "name": "Bob Kahn", "email": f"{bob}@example.org"})
    print("\n# Bad input gets a typed rejection, and nothing is stored")
    await flow.send("cmd.person.Register", {"id": "no.dots", "name": "X", "email": "x@example.org"},
                    expect="rejected")

    print("\n# The organization offers; the hiring saga then records the offer on the person.")
    print("# Follow the saga from the offer's seq, then read the view at the seq it caused.")
    extended = await flow.send("cmd.organization.ExtendOffer", {
        "id": org, "position_id": "eng-1", "person_id": ada, "offer_id": offer_a,
        "expires_at": "2099-01-01T00:00:00Z"})
    _, recorded = await flow.follow("hiring", offer_a, extended["seq"])
    offers, _ = await flow.ask("qry.offers.by_person", {"id": ada}, {"Jetsource-Min-Seq": str(recorded)})
    flow.expect("ada's offer is pending", offers["offers"].get(offer_a, {}).get("status") == "pending")

    print("\n# Ada accepts: the saga hires her (position filled + member joined), then starts")
    print("# the employment. Each step is a command of the saga's, after Ada's reply.")
    person, _ = await flow.ask("qry.person.get", {"id": ada}, {"Jetsource-Min-Seq": str(recorded)})
    accepted, _ = await flow.ask("cmd.person.AcceptOffer", {"id": ada, "offer_id": offer_a},
                                 {"Jetsource-Command-Id": uuid.uuid4().hex,
                                  # the row says which version it reflects: expect it
                                  "Jetsource-Expected-Version": str(person["version"])})
    flow.expect(f"the accept at the row's version is accepted: {accepted}", accepted.get("status") == "accepted")
    hired, last = await flow.follow("hiring", offer_a, accepted["seq"])
    flow.expect(f"the saga hired ada: {hired.get('outcome')}", hired.get("outcome") == "hired")
    person, _ = await flow.ask("qry.person.get", {"id": ada}, {"Jetsource-Min-Seq": str(last)})
    flow.expect("ada works at the organization", person.get("employer") == org)
    organization, _ = await flow.ask("qry.organization.get", {"id": org}, {"Jetsource-Min-Seq": str(last)})
    flow.expect("ada is a member", ada in organization.get("members", {}))

    print("\n# Bob declines: the saga withdraws the offer on the organization's side")
    extended = await flow.send("cmd.organization.ExtendOffer", {
        "id": org, "position_id": "ops-1", "person_id": bob, "offer_id": offer_b,
        "expires_at": "2099-01-01T00:00:00Z"})
    await flow.follow("hiring", offer_b, extended["seq"])
    declined = await flow.send("cmd.person.DeclineOffer", {"id": bob, "offer_id": offer_b})
    closed, last = await flow.follow("hiring", offer_b, declined["seq"])
    flow.expect(f"the saga closed bob's offer: {closed.get('outcome')}", closed.get("outcome") is not None)
    offers, _ = await flow.ask("qry.offers.by_person", {"id": bob}, {"Jetsource-Min-Seq": str(last)})
    flow.expect("bob's offer is withdrawn", offers["offers"].get(offer_b, {}).get("status") == "withdrawn")

    await nc.close()
    if flow.failures:
        print("FAILED:\n  " + "\n  ".join(flow.failures), file=sys.stderr)
        sys.exit(1)
    print("\nwalkthrough ok")


if __name__ == "__main__":
    asyncio.run(main())
