"""nats.py (the official Python client) against flotilla-proxy, driven by
proxy/tests/compat_matrix.rs. One sub-command per scenario; each prints
progress lines (`ready`, `primed`) and ends with one JSON line on stdout.

  tail     subscribe `logs.>`, `logs.web.*.*` and twice `logs.>` in queue
           group `workers`; print `ready`, then `primed` once every
           subscription has seen a message whose payload is `prime`
           (those are never recorded), then collect until --expect messages
           arrived on `logs.>` and nothing came for --idle seconds.
  respond  answer --count requests on --subject with `pong:<request>`,
           printing one JSON line per request as it arrives.
  request  request --subject until answered (retrying no-responders and
           time-outs: the responder's subscription may still be in flight).
  jspub    JetStream publishes with acks (Nats-Msg-Id set; the first one
           is sent twice, so the last ack must say duplicate).
  denied   publish where the credentials may not, and report what the
           client surfaced (error callback) and whether it stayed connected.
  errprobe connect to a (fake) server without credentials, subscribe
           `probe`, and report every error the client surfaced, every
           message, and whether the connection survived.
"""

import argparse
import asyncio
import json
import ssl
import sys

import nats
from nats.errors import NoRespondersError, TimeoutError as NatsTimeout


def out(obj) -> None:
    print(obj if isinstance(obj, str) else json.dumps(obj), flush=True)


async def tail(a, nc) -> dict:
    got = {"all": [], "web": [], "q1": [], "q2": []}
    primed = set()
    more = asyncio.Event()

    def cb_for(name):
        async def cb(msg):
            data = msg.data.decode("utf-8", "replace")
            if data == "prime":
                primed.add("q" if name in ("q1", "q2") else name)
                if primed == {"all", "web", "q"} and "said" not in primed:
                    primed.add("said")
                    out("primed")
                return
            got[name].append([msg.subject, data])
            more.set()
        return cb

    await nc.subscribe("logs.>", cb=cb_for("all"))
    await nc.subscribe("logs.web.*.*", cb=cb_for("web"))
    await nc.subscribe("logs.>", queue="workers", cb=cb_for("q1"))
    await nc.subscribe("logs.>", queue="workers", cb=cb_for("q2"))
    await nc.flush()
    out("ready")
    quiet = 0
    while True:
        more.clear()
        try:
            await asyncio.wait_for(more.wait(), timeout=a.idle)
            quiet = 0
        except asyncio.TimeoutError:
            if "said" not in primed:
                continue
            quiet += 1
            if len(got["all"]) >= a.expect or quiet >= 3:
                break  # a short count is reported by the Rust side
    return got


async def respond(a, nc) -> dict:
    seen = 0
    done = asyncio.Event()

    async def cb(msg):
        nonlocal seen
        out({"subject": msg.subject, "reply": msg.reply, "data": msg.data.decode()})
        await msg.respond(b"pong:" + msg.data)
        seen += 1
        if seen >= a.count:
            done.set()

    await nc.subscribe(a.subject, cb=cb)
    await nc.flush()
    out("ready")
    await asyncio.wait_for(done.wait(), timeout=a.idle)
    await nc.flush()
    return {"answered": seen}


async def request(a, nc) -> dict:
    last = None
    for attempt in range(1, 41):
        try:
            m = await nc.request(a.subject, a.data.encode(), timeout=0.5)
            return {"ok": True, "data": m.data.decode(), "subject": m.subject, "attempts": attempt}
        except (NoRespondersError, NatsTimeout) as e:
            last = e
            await asyncio.sleep(0.2)
    return {"ok": False, "error": repr(last)}


async def jspub(a, nc) -> dict:
    js = nc.jetstream()
    acks = []
    for i in range(a.count):
        ack = await js.publish(a.subject, f"py-{i}".encode(), headers={"Nats-Msg-Id": f"py-{i}"}, timeout=5)
        acks.append({"stream": ack.stream, "seq": ack.seq, "duplicate": bool(ack.duplicate)})
    ack = await js.publish(a.subject, b"py-0", headers={"Nats-Msg-Id": "py-0"}, timeout=5)
    acks.append({"stream": ack.stream, "seq": ack.seq, "duplicate": bool(ack.duplicate)})
    return {"acks": acks}


async def denied(a, nc, errors) -> dict:
    await nc.publish(a.subject, b"nope")
    await nc.flush()
    for _ in range(50):
        if errors:
            break
        await asyncio.sleep(0.05)
    await nc.flush()  # still answers PING: the connection stayed open
    return {"errors": errors, "connected": nc.is_connected}


async def errprobe(a, nc, errors) -> dict:
    msgs = []

    async def cb(msg):
        msgs.append(msg.data.decode())

    await nc.subscribe("probe", cb=cb)
    await nc.flush()
    out("ready")
    await asyncio.sleep(2.5)
    flushed = True
    try:
        await nc.flush(timeout=3)
    except Exception:
        flushed = False
    return {"errors": errors, "msgs": msgs, "connected": nc.is_connected and flushed, "closed": nc.is_closed}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["tail", "respond", "request", "jspub", "denied", "errprobe"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--subject", default="logs.>")
    ap.add_argument("--data", default="ping")
    ap.add_argument("--expect", type=int, default=0)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--idle", type=float, default=5.0)
    ap.add_argument("--ca", help="PEM CA of the proxy's TLS certificate (tls:// URLs)")
    a = ap.parse_args()

    errors = []

    async def error_cb(e):
        errors.append(str(e))

    opts = dict(allow_reconnect=False, max_reconnect_attempts=0, error_cb=error_cb, connect_timeout=5)
    if a.user is not None:
        opts.update(user=a.user, password=a.password)
    if a.ca is not None:
        opts.update(tls=ssl.create_default_context(cafile=a.ca))
    nc = await nats.connect(a.url, **opts)
    if a.command == "tail":
        result = await tail(a, nc)
    elif a.command == "respond":
        result = await respond(a, nc)
    elif a.command == "request":
        result = await request(a, nc)
    elif a.command == "jspub":
        result = await jspub(a, nc)
    elif a.command == "denied":
        result = await denied(a, nc, errors)
    else:
        result = await errprobe(a, nc, errors)
    out(result)
    if not nc.is_closed:
        await nc.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:  # one clear line for the Rust test's failure message
        print(f"compat_client.py failed: {e!r}", file=sys.stderr)
        sys.exit(1)
