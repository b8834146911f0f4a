// tap.mjs: what the node compatibility programs share (see common.py for the
// Python side).  Lines are "ok - what" / "not ok - what" / "# diag";
// test_compat.sh numbers them.  runPattern() runs one pattern through
// hotproxy and against Redis, checks the expected values of each run, then
// that the two runs observed the same thing.
import net from 'node:net';
import { isDeepStrictEqual, inspect } from 'node:util';

let failed = 0;

export function diag(msg) {
  for (const line of String(msg).split('\n')) process.stdout.write(`# ${line}\n`);
}

export function ok(cond, desc, ...diags) {
  const pass = Boolean(cond);
  if (!pass) failed++;
  process.stdout.write(`${pass ? '' : 'not '}ok - ${desc.replace(/#/g, '\\#').replace(/\n/g, ' ')}\n`);
  if (!pass) for (const d of diags) diag(d);
  return pass;
}

export function is(got, want, desc) {
  const g = norm(got), w = norm(want);
  return ok(isDeepStrictEqual(g, w), desc, `  got:  ${show(g)}`, `  want: ${show(w)}`);
}

export function show(v) {
  return inspect(v, { depth: 8, breakLength: 160, maxStringLength: 300 });
}

export function exitCode() {
  return failed ? 1 : 0;
}

/** Plain, comparable data: Maps and null-prototype objects become sorted
 * plain objects, Buffers strings, errors "Class: message". */
export function norm(v) {
  if (v === undefined || v === null) return v ?? null;
  if (Buffer.isBuffer(v)) return v.toString();
  if (v instanceof Error) return `${v.constructor.name}: ${v.message}`;
  if (Array.isArray(v)) return v.map(norm);
  if (v instanceof Set) return { '<set>': [...v].map(norm).sort() };
  if (v instanceof Map) {
    const o = {};
    for (const [k, x] of [...v.entries()].sort()) o[String(k)] = norm(x);
    return { '<map>': o };
  }
  if (typeof v === 'object') {
    const o = {};
    for (const k of Object.keys(v).sort()) o[k] = norm(v[k]);
    return o;
  }
  return v;
}

/** An expected value given as a test; a fuzzy one (a TTL, a time) is compared
 * between the two runs by its outcome only. */
export function pred(fn, desc, fuzzy = false) {
  return { __pred: true, fn, desc, fuzzy };
}
export const between = (lo, hi) => pred(v => typeof v === 'number' && v >= lo && v <= hi, `a number in [${lo}, ${hi}]`, true);
export const contains = s => pred(v => typeof v === 'string' && v.includes(s), `text containing ${JSON.stringify(s)}`);
export const SAME = pred(() => true, 'the same through hotproxy and redis');

/** fn's value, or its error as "Class: message". */
export async function err(fn) {
  try {
    return await fn();
  } catch (e) {
    return `${e?.constructor?.name ?? 'Error'}: ${e?.message ?? e}`;
  }
}

export const sleep = ms => new Promise(r => setTimeout(r, ms));

/** Resolve with fn's value or reject after ms. */
export function within(ms, promise, what = 'operation') {
  let t;
  return Promise.race([
    promise.finally(() => clearTimeout(t)),
    new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`${what} did not finish within ${ms} ms`)), ms); }),
  ]);
}

export async function runPattern(name, fn, expect, targets) {
  const results = {};
  for (const [tname, port, backend] of targets) {
    let obs;
    try {
      obs = norm(await within(15000, fn(port, backend), `${name} through ${tname}`));
    } catch (e) {
      ok(false, `${name}: runs through ${tname} without an exception`, e?.stack ?? String(e));
      results[tname] = null;
      continue;
    }
    const bad = [];
    for (const [k, want] of Object.entries(expect)) {
      if (!(k in obs)) { bad.push(`${k}: not observed`); continue; }
      const got = obs[k];
      const good = want?.__pred ? want.fn(got) : isDeepStrictEqual(got, norm(want));
      if (!good) bad.push(`${k}: got ${show(got)}, want ${want?.__pred ? want.desc : show(norm(want))}`);
    }
    ok(bad.length === 0, `${name}: expected results through ${tname}`, ...bad);
    results[tname] = obs;
  }
  if (targets.length !== 2) return results;
  const [a, b] = targets.map(t => results[t[0]]);
  const [na, nb] = [targets[0][0], targets[1][0]];
  if (!a || !b) {
    ok(false, `${name}: ${na} answers as ${nb} does`, 'a run raised');
    return results;
  }
  const fz = (k, v) => (expect[k]?.__pred && expect[k].fuzzy ? expect[k].fn(v) : v);
  const diffs = [];
  for (const k of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
    if (!isDeepStrictEqual(fz(k, a[k]), fz(k, b[k]))) diffs.push(`${k}: ${na} ${show(a[k])} / ${nb} ${show(b[k])}`);
  }
  ok(diffs.length === 0, `${name}: ${na} answers as ${nb} does`, ...diffs);
  return results;
}

// The servers test_compat.sh started, by role, and the two targets every
// pattern runs against: [name, port to talk to, Redis port behind it].
export function compatPorts() {
  const p = {
    UP: envPort('COMPAT_REDIS'),
    DIRECT: envPort('COMPAT_DIRECT'),
    PROXY: envPort('COMPAT_PROXY'),
    PROXY_PASS: envPort('COMPAT_PROXY_PASS'),
    PROXY_USER: envPort('COMPAT_PROXY_USER'),
    PROXY_CAP: envPort('COMPAT_PROXY_CAP'),
  };
  p.TARGETS = [['hotproxy', p.PROXY, p.UP], ['redis', p.DIRECT, p.DIRECT]];
  return p;
}

export function envPort(name) {
  const v = process.env[name];
  if (!v) {
    ok(false, `environment variable ${name} is set (run me from test_compat.sh)`);
    process.exit(1);
  }
  return Number(v);
}

/** One command over a raw socket (no client library); resolves with a bulk
 * reply's text or a line reply as it came. */
export function rawCommand(port, args, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const t = setTimeout(() => { s.destroy(); reject(new Error('raw command timed out')); }, timeoutMs);
    s.on('connect', () => {
      s.write(`*${args.length}\r\n` + args.map(a => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join(''));
    });
    s.on('data', d => {
      buf = Buffer.concat([buf, d]);
      const text = buf.toString('latin1');
      const m = /^\$(\d+)\r\n/.exec(text);
      if ((m && buf.length >= m[0].length + Number(m[1]) + 2) || (!m && text.endsWith('\r\n'))) {
        clearTimeout(t);
        s.destroy();
        resolve(m ? buf.subarray(m[0].length, m[0].length + Number(m[1])).toString() : text);
      }
    });
    s.on('error', e => { clearTimeout(t); reject(e); });
  });
}

export async function pinned(port) {
  const text = await rawCommand(port, ['INFO', 'hotproxy_upstream']);
  const m = /hotproxy_pinned_connections:(\d+)/.exec(text);
  return m ? Number(m[1]) : -1;
}

/** Clients blocked in the Redis on port (INFO clients). */
export async function blockedClients(port) {
  const m = /blocked_clients:(\d+)/.exec(await rawCommand(port, ['INFO', 'clients']));
  return m ? Number(m[1]) : -1;
}

/** Wait until the Redis on port counts more blocked clients than base: a
 * blocking command sent just before is blocked there, not merely sent. */
export async function blockedBeyond(port, base) {
  return Boolean(await waitUntil(async () => (await blockedClients(port)) > base));
}

export async function waitUntil(fn, timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  let v = await fn();
  while (!v && Date.now() < end) {
    await sleep(20);
    v = await fn();
  }
  return v;
}

export async function noPinnedLeft(what, port) {
  const good = await waitUntil(async () => (await pinned(port)) === 0);
  ok(good, `${what}: hotproxy's pinned connections are back to 0`, `hotproxy_pinned_connections=${await pinned(port)}`);
}
