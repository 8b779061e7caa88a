// nats.js (the `nats` npm package, v2) against flotilla-proxy, driven by
// proxy/tests/compat_matrix.rs. The same sub-commands as
// proxy/tests/py/compat_client.py (see there); each prints progress lines
// (`ready`, `primed`) and ends with one JSON line on stdout.
//
//   node compat_client.mjs <command> --url nats://host:port [--user U --password P] [--ca PEM] [...]

import { connect, StringCodec, headers } from "nats";

const sc = StringCodec();

function parseArgs(argv) {
  const a = { command: argv[0], subject: "logs.>", data: "ping", expect: 0, count: 1, idle: 5 };
  for (let i = 1; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    const v = argv[i + 1];
    a[key] = ["expect", "count", "idle"].includes(key) ? Number(v) : v;
  }
  return a;
}

function out(v) {
  process.stdout.write((typeof v === "string" ? v : JSON.stringify(v)) + "\n");
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function tail(a, nc) {
  const got = { all: [], web: [], q1: [], q2: [] };
  const primed = new Set();
  let said = false;
  let lastAt = Date.now();
  const cb = (name) => (err, m) => {
    if (err) {
      got.error = String(err);
      return;
    }
    const data = sc.decode(m.data);
    lastAt = Date.now();
    if (data === "prime") {
      primed.add(name === "q1" || name === "q2" ? "q" : name);
      if (!said && primed.has("all") && primed.has("web") && primed.has("q")) {
        said = true;
        out("primed");
      }
      return;
    }
    got[name].push([m.subject, data]);
  };
  nc.subscribe("logs.>", { callback: cb("all") });
  nc.subscribe("logs.web.*.*", { callback: cb("web") });
  nc.subscribe("logs.>", { queue: "workers", callback: cb("q1") });
  nc.subscribe("logs.>", { queue: "workers", callback: cb("q2") });
  await nc.flush();
  out("ready");
  for (;;) {
    await sleep(100);
    const quietFor = Date.now() - lastAt;
    if (said && got.all.length >= a.expect && quietFor > a.idle * 1000) break;
    if (said && quietFor > 3 * a.idle * 1000) break; // short: the Rust side reports it

  }
  return got;
}

async function respond(a, nc) {
  let seen = 0;
  let done;
  const finished = new Promise((r) => (done = r));
  nc.subscribe(a.subject, {
    callback: (err, m) => {
      if (err) return;
      out({ subject: m.subject, reply: m.reply, data: sc.decode(m.data) });
      m.respond(sc.encode("pong:" + sc.decode(m.data)));
      seen += 1;
      if (seen >= a.count) done();
    },
  });
  await nc.flush();
  out("ready");
  await Promise.race([finished, sleep(a.idle * 1000)]);
  await nc.flush();
  return { answered: seen };
}

async function request(a, nc) {
  let last;
  for (let attempt = 1; attempt <= 40; attempt++) {
    try {
      const m = await nc.request(a.subject, sc.encode(a.data), { timeout: 500 });
      return { ok: true, data: sc.decode(m.data), subject: m.subject, attempts: attempt };
    } catch (e) {
      last = e;
      await sleep(200);
    }
  }
  return { ok: false, error: String(last && (last.code || last.message)) };
}

async function jspub(a, nc) {
  const js = nc.jetstream();
  const acks = [];
  for (let i = 0; i < a.count; i++) {
    const pa = await js.publish(a.subject, sc.encode(`js-${i}`), { msgID: `js-${i}`, timeout: 5000 });
    acks.push({ stream: pa.stream, seq: pa.seq, duplicate: !!pa.duplicate });
  }
  const h = headers();
  h.set("X-Compat", "nats.js");
  const pa = await js.publish(a.subject, sc.encode("js-0"), { msgID: "js-0", headers: h, timeout: 5000 });
  acks.push({ stream: pa.stream, seq: pa.seq, duplicate: !!pa.duplicate });
  return { acks };
}

function watchStatus(nc, into) {
  (async () => {
    for await (const s of nc.status()) {
      into.push({ type: s.type, data: String(s.data), permissionContext: s.permissionContext || null });
    }
  })().catch(() => {});
}

async function denied(a, nc, statuses) {
  nc.publish(a.subject, sc.encode("nope"));
  await nc.flush();
  for (let i = 0; i < 50 && statuses.length === 0; i++) await sleep(50);
  await nc.flush(); // still answers PING: the connection stayed open
  return { statuses, connected: !nc.isClosed() };
}

async function errprobe(a, nc, statuses) {
  const msgs = [];
  let subError = null;
  const sub = nc.subscribe("probe", {
    callback: (err, m) => {
      if (err) subError = String(err.message || err);
      else msgs.push(sc.decode(m.data));
    },
  });
  await nc.flush();
  out("ready");
  await sleep(2500);
  let flushed = true;
  try {
    await Promise.race([nc.flush(), sleep(3000).then(() => Promise.reject(new Error("flush timeout")))]);
  } catch (_e) {
    flushed = false;
  }
  return {
    statuses,
    msgs,
    subError,
    subClosed: sub.isClosed(),
    connected: !nc.isClosed() && flushed,
  };
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const opts = { servers: a.url.replace(/^(nats|tls):\/\//, ""), reconnect: false, timeout: 5000 };
  if (a.user !== undefined) {
    opts.user = a.user;
    opts.pass = a.password;
  }
  if (a.ca !== undefined) {
    opts.tls = { caFile: a.ca };
  }
  const nc = await connect(opts);
  const statuses = [];
  watchStatus(nc, statuses);
  let result;
  switch (a.command) {
    case "tail":
      result = await tail(a, nc);
      break;
    case "respond":
      result = await respond(a, nc);
      break;
    case "request":
      result = await request(a, nc);
      break;
    case "jspub":
      result = await jspub(a, nc);
      break;
    case "denied":
      result = await denied(a, nc, statuses);
      break;
    case "errprobe":
      result = await errprobe(a, nc, statuses);
      break;
    default:
      throw new Error(`unknown command ${a.command}`);
  }
  out(result);
  if (!nc.isClosed()) await nc.close();
}

main().catch((e) => {
  process.stderr.write(`compat_client.mjs failed: ${e && (e.stack || e)}\n`);
  process.exit(1);
});
