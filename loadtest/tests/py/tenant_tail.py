"""A tenant tailing `logs.>` through the proxy with nats.py (the official
Python client). Prints `ready` once subscribed, then collects messages until
it has --expect of them or --idle seconds pass without one, and prints one
JSON summary line."""

import argparse
import asyncio
import json
import ssl
import sys
import traceback

import nats


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--subject", default="logs.>")
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--ca", help="PEM CA of the server's TLS certificate (tls:// URLs)")
    args = ap.parse_args()

    tls = ssl.create_default_context(cafile=args.ca) if args.ca else None
    async def on_error(e):
        print(f"tenant_tail: nats error: {e!r}", file=sys.stderr, flush=True)

    async def on_disconnect():
        print(f"tenant_tail: connection ended after {len(got)} messages", file=sys.stderr, flush=True)

    got = []
    nc = await nats.connect(args.url, user=args.user, password=args.password, tls=tls,
                            allow_reconnect=False, max_reconnect_attempts=0,
                            error_cb=on_error, disconnected_cb=on_disconnect)
    done = asyncio.Event()

    async def on_msg(msg):
        got.append((msg.subject, msg.data.decode("utf-8", "replace")))
        if len(got) >= args.expect:
            done.set()

    await nc.subscribe(args.subject, cb=on_msg, pending_msgs_limit=1_000_000)
    await nc.flush()
    print("ready", flush=True)
    last = -1
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), timeout=args.idle)
        except asyncio.TimeoutError:
            if len(got) == last:
                break
            last = len(got)
    # Anything extra that arrives shortly after is counted too.
    await asyncio.sleep(0.5)
    await nc.drain()
    events = [json.loads(data) for _, data in got]
    print(json.dumps({
        "count": len(got),
        "subjects": sorted({s for s, _ in got}),
        "orgs": sorted({e.get("org") for e in events}),
        "messages": [e.get("message") for e in events],
    }), flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:  # a clear line for the Rust test's failure message
        traceback.print_exc()
        print(f"tenant_tail failed: {e!r}", file=sys.stderr)
        sys.exit(1)
