// node_ioredis.mjs: ioredis with its default settings (a ready check through
// INFO at connect, CLIENT SETINFO, offline queue), through hotproxy and against
// Redis, compared: pipelines, MULTI/WATCH, Lua through defineCommand (EVALSHA
// with its EVAL fallback), pub/sub events, blocking commands, streams,
// MONITOR, auto-pipelining, scanStream, SELECT and AUTH options.
// Environment: see resp2_patterns.py.
import { once } from 'node:events';
import Redis from 'ioredis';
import {
  ok, is, exitCode, err, sleep, within, runPattern, compatPorts, between, contains, SAME, waitUntil, noPinnedLeft, show,
  blockedClients, blockedBeyond,
} from './tap.mjs';

const { UP, DIRECT, PROXY, PROXY_PASS, PROXY_USER, PROXY_CAP, TARGETS } = compatPorts();

const open = new Set();
// Only host and port are set unless a test says otherwise: ioredis' defaults
// (ready check, offline queue, retries) are what applications run with.
async function client(port, opts = {}) {
  const c = new Redis({ host: '127.0.0.1', port, ...opts });
  c.on('error', () => {});
  open.add(c);
  await within(20000, once(c, 'ready'), `ioredis ready on ${port}`);
  return c;
}
function close(...cs) {
  for (const c of cs) {
    open.delete(c);
    c.disconnect();
  }
}

async function readyCheck(port) {
  const c = new Redis({ host: '127.0.0.1', port, lazyConnect: true });
  c.on('error', () => {});
  open.add(c);
  const o = {};
  await within(20000, c.connect(), 'connect');
  o.status = c.status;
  o.info_has_version = /redis_version:\d/.test(await c.info('server'));
  o.ping = await c.ping();
  close(c);
  return o;
}

async function basics(port) {
  const r = await client(port);
  const o = {};
  await r.del('io:k', 'io:c', 'io:h');
  o.pipeline = await r.pipeline().set('io:k', 'v').incr('io:c').get('io:k').hset('io:h', 'a', '1', 'b', '2')
    .hgetall('io:h').exec();
  o.pipeline_error = (await r.pipeline().set('io:k', 'x').incr('io:k').exec()).map(([e, v]) => (e ? e.message : v));
  o.ttl = await r.set('io:k', 'v', 'EX', 30).then(() => r.ttl('io:k'));
  o.unknown = await err(() => r.call('FOOBAR', 'x'));
  o.wrong_type = await err(() => r.lpush('io:k', 'x'));
  await close(r);
  return o;
}

async function transactions(port) {
  const r = await client(port), other = await client(port);
  const o = {};
  await r.del('io:tx', 'io:w');
  o.multi = await r.multi().set('io:tx', '1').incr('io:tx').get('io:tx').exec();
  o.multi_error = await err(() => r.multi().set('io:tx', 'a').call('NOSUCHCMD').exec());
  await other.set('io:w', '10');
  o.watch = await r.watch('io:w');
  await r.get('io:w');
  await other.set('io:w', '99');
  o.aborted = await r.multi().set('io:w', '11').exec();
  o.after_abort = await other.get('io:w');
  await r.watch('io:w');
  o.clean = await r.multi().incr('io:w').exec();
  close(r, other);
  return o;
}

const BUCKET = `
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local capacity, rate, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens, ts = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens = capacity; ts = now end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000))
return {allowed, tostring(tokens)}
`;

async function lua(port) {
  const r = await client(port);
  r.defineCommand('bucket', { numberOfKeys: 1, lua: BUCKET });
  const o = {};
  await r.del('io:tb');
  const calls = [];
  calls.push(await r.bucket('io:tb', 3, 1, 0));
  calls.push(await r.bucket('io:tb', 3, 1, 0));
  await r.script('FLUSH'); // the next call gets NOSCRIPT and falls back to EVAL
  calls.push(await r.bucket('io:tb', 3, 1, 0));
  calls.push(await r.bucket('io:tb', 3, 1, 0));
  calls.push(await r.bucket('io:tb', 3, 1, 5));
  o.calls = calls;
  o.pipelined = await r.pipeline().bucket('io:tb', 3, 1, 5).bucket('io:tb', 3, 1, 5).exec();
  close(r);
  return o;
}

async function pubsub(port) {
  const sub = await client(port), pub = await client(port);
  const o = {};
  const got = [];
  sub.on('message', (ch, m) => got.push(['message', ch, m]));
  sub.on('pmessage', (pat, ch, m) => got.push(['pmessage', pat, ch, m]));
  o.subscribe = await sub.subscribe('io:news', 'io:sport');
  o.psubscribe = await sub.psubscribe('io:alerts.*');
  o.publish = [await pub.publish('io:news', 'hello'), await pub.publish('io:alerts.disk', 'full')];
  await waitUntil(() => got.length >= 2, 20000);
  o.received = got.slice().sort();
  o.ping_subscribed = await err(() => sub.ping());
  o.get_subscribed = await err(() => sub.get('io:k'));
  o.unsubscribe = await sub.unsubscribe('io:news', 'io:sport'); // with no arguments ioredis' promise never settles, with Redis too
  o.punsubscribe = await sub.punsubscribe('io:alerts.*');
  o.publish_after = await pub.publish('io:news', 'late');
  o.ping_after = await sub.ping();
  o.get_after = await sub.get('io:never-set');
  close(sub, pub);
  return o;
}

async function blocking(port, backend) {
  const r = await client(port), pusher = await client(port);
  const o = {};
  await pusher.del('io:q', 'io:q:empty');
  let base = await blockedClients(backend);
  const p = r.blpop('io:q', 5);
  o.blpop_blocked = await blockedBeyond(backend, base);
  o.rpush = await pusher.rpush('io:q', 'job-1');
  o.blpop = await p;
  const t1 = Date.now();
  o.timeout = await r.blpop('io:q:empty', 1);
  o.timeout_time = (Date.now() - t1) / 1000;
  // streams: a consumer group woken by XADD
  await r.del('io:st');
  o.group = await r.xgroup('CREATE', 'io:st', 'g', '$', 'MKSTREAM');
  base = await blockedClients(backend);
  const q = r.xreadgroup('GROUP', 'g', 'c1', 'COUNT', 1, 'BLOCK', 5000, 'STREAMS', 'io:st', '>');
  o.xreadgroup_blocked = await blockedBeyond(backend, base);
  await pusher.xadd('io:st', '1-1', 'item', 'book');
  o.xreadgroup = await q;
  o.xack = await pusher.xack('io:st', 'g', '1-1');
  close(r, pusher);
  return o;
}

async function monitor(port) {
  const r = await client(port);
  const m = await r.monitor();
  const seen = [];
  m.on('monitor', (time, args) => seen.push(args));
  const w = await client(port);
  await w.set('io:mon', 'watched');
  const found = await waitUntil(() => seen.some(a => a[0] === 'set' && a[1] === 'io:mon'), 20000);
  const o = { saw_set: Boolean(found) };
  o.args = seen.find(a => a[0] === 'set' && a[1] === 'io:mon') ?? null;
  m.disconnect();
  close(r, w);
  return o;
}

async function options(port, backend) {
  const o = {};
  const d1 = await client(port, { db: 1, connectionName: 'io-app', enableAutoPipelining: true });
  const direct1 = await client(backend, { db: 1 });
  await direct1.del('io:db');
  o.set_db1 = await d1.set('io:db', 'in-1');
  o.direct_db1 = await direct1.get('io:db');
  const d0 = await client(port);
  o.db0 = await d0.get('io:db');
  o.name = await d1.client('GETNAME');
  const values = await Promise.all(Array.from({ length: 200 }, (_, i) => d1.set(`io:ap:${i}`, `v${i}`).then(() => d1.get(`io:ap:${i}`))));
  o.autopipeline = values.every((v, i) => v === `v${i}`);
  for (let i = 0; i < 50; i++) await d0.set(`io:scan:${i}`, 'x');
  const keys = [];
  await new Promise((resolve, reject) => {
    const s = d0.scanStream({ match: 'io:scan:*', count: 10 });
    s.on('data', ks => keys.push(...ks));
    s.on('end', resolve);
    s.on('error', reject);
  });
  o.scan = new Set(keys).size;
  close(d1, direct1, d0);
  return o;
}

async function auth(port, username, password) {
  const o = {};
  o.good = await err(async () => { const c = await client(port, { username, password }); const v = await c.ping(); close(c); return v; });
  o.bad = await err(async () => {
    const c = new Redis({ host: '127.0.0.1', port, username, password: 'wrong-pw-7Qx', lazyConnect: true, retryStrategy: () => null });
    const errors = [];
    c.on('error', e => errors.push(e.message));
    open.add(c);
    try {
      await within(20000, c.connect(), 'connect');
      return 'connected';
    } catch (e) {
      // ioredis rejects connect() with "Connection is closed."; the reason
      // came through the error event
      return `${e.message} ${errors.join(' ')}`;
    } finally {
      close(c);
    }
  });
  return o;
}

async function main() {
  await runPattern('ioredis ready check (INFO at connect)', readyCheck, {
    status: 'ready', info_has_version: true, ping: 'PONG',
  }, TARGETS);
  await runPattern('ioredis pipelines and errors', basics, {
    pipeline: [[null, 'OK'], [null, 1], [null, 'v'], [null, 2], [null, { a: '1', b: '2' }]],
    pipeline_error: ['OK', 'ERR value is not an integer or out of range'], ttl: between(28, 30),
    unknown: contains("ERR unknown command 'FOOBAR'"), wrong_type: contains('WRONGTYPE'),
  }, TARGETS);
  await runPattern('ioredis MULTI and WATCH', transactions, {
    multi: [[null, 'OK'], [null, 2], [null, '2']], multi_error: contains('EXECABORT'), watch: 'OK', aborted: null,
    after_abort: '99', clean: [[null, 100]],
  }, TARGETS);
  await noPinnedLeft('ioredis transactions', PROXY);
  await runPattern('ioredis Lua via defineCommand', lua, {
    calls: [[1, '2'], [1, '1'], [1, '0'], [0, '0'], [1, '2']],
    pipelined: [[null, [1, '1']], [null, [1, '0']]],
  }, TARGETS);
  await runPattern('ioredis pub/sub', pubsub, {
    subscribe: 2, psubscribe: 3, publish: [1, 1],
    received: [['message', 'io:news', 'hello'], ['pmessage', 'io:alerts.*', 'io:alerts.disk', 'full']],
    ping_subscribed: SAME, get_subscribed: contains('Connection in subscriber mode'), unsubscribe: 1,
    punsubscribe: 0, publish_after: 0, ping_after: 'PONG', get_after: null,
  }, TARGETS);
  await noPinnedLeft('ioredis pub/sub', PROXY);
  await runPattern('ioredis blocking commands and streams', blocking, {
    rpush: 1, blpop_blocked: true, blpop: ['io:q', 'job-1'], timeout: null, timeout_time: between(0.9, 2.5),
    group: 'OK', xreadgroup_blocked: true, xreadgroup: [['io:st', [['1-1', ['item', 'book']]]]], xack: 1,
  }, TARGETS);
  await noPinnedLeft('ioredis blocking commands', PROXY);
  await runPattern('ioredis MONITOR', monitor, { saw_set: true, args: ['set', 'io:mon', 'watched'] }, TARGETS);
  await noPinnedLeft('ioredis MONITOR', PROXY);
  await runPattern('ioredis db, connectionName, auto-pipelining, scanStream', options, {
    set_db1: 'OK', direct_db1: 'in-1', db0: null, name: 'io-app', autopipeline: true, scan: 50,
  }, TARGETS);

  const admin = await client(DIRECT);
  await admin.call('ACL', 'SETUSER', 'alice', 'on', '>pw', '~*', '&*', '+@all');
  await admin.config('SET', 'requirepass', 'secret');
  try {
    const authExpect = { good: 'PONG', bad: contains('WRONGPASS') };
    await runPattern('ioredis AUTH alice', p => auth(p, 'alice', 'pw'), authExpect,
      [['hotproxy --user', PROXY_USER, UP], ['redis', DIRECT, DIRECT]]);
    await runPattern('ioredis AUTH password only', p => auth(p, undefined, 'secret'), authExpect,
      [['hotproxy --requirepass', PROXY_PASS, UP], ['redis', DIRECT, DIRECT]]);
  } finally {
    await admin.config('SET', 'requirepass', '');
    await admin.call('ACL', 'DELUSER', 'alice');
    close(admin);
  }

  // upstream-max-pinned 2: the third MULTI is refused at once
  const cs = [await client(PROXY_CAP), await client(PROXY_CAP), await client(PROXY_CAP)];
  is(await cs[0].multi({ pipeline: false }), 'OK', 'ioredis pinned cap: first MULTI');
  is(await cs[1].multi({ pipeline: false }), 'OK', 'ioredis pinned cap: second MULTI');
  const third = await err(() => within(3000, cs[2].multi({ pipeline: false }), 'third MULTI'));
  ok(typeof third === 'string' && third.includes('upstream-max-pinned'),
    'ioredis pinned cap: the third MULTI gets an error naming upstream-max-pinned', `got ${show(third)}`);
  is(await cs[0].exec(), [], 'ioredis pinned cap: first EXEC');
  is(await cs[1].discard(), 'OK', 'ioredis pinned cap: second DISCARD');
  close(...cs);
}

try {
  await within(100000, main(), 'node_ioredis.mjs');
} catch (e) {
  ok(false, 'node_ioredis.mjs ran to the end', e?.stack ?? String(e));
}
for (const c of open) c.disconnect();
process.exit(exitCode());
