// node_redis.mjs: the application patterns again with node-redis v5 speaking
// RESP3 (HELLO 3 at connect, maps, sets, doubles, nulls, push-based pub/sub,
// client-side caching through CLIENT TRACKING), through hotproxy and against
// Redis, compared.  Environment: see resp2_patterns.py.
import { createHash } from 'node:crypto';
import { createClient, RESP_TYPES } from 'redis';
import {
  ok, is, exitCode, err, sleep, within, runPattern, envPort, compatPorts, between, contains, SAME, waitUntil, noPinnedLeft, show,
  blockedClients, blockedBeyond,
} from './tap.mjs';

const { UP, DIRECT, PROXY, PROXY_PASS, PROXY_USER, PROXY_CAP, TARGETS } = compatPorts();
const PROXY_REFUSE = envPort('COMPAT_PROXY_REFUSE');
const PROXY_TMO = envPort('COMPAT_PROXY_TMO');

const open = new Set();
async function client(port, opts = {}) {
  const c = createClient({
    RESP: 3,
    ...opts,
    socket: { host: '127.0.0.1', port, connectTimeout: 5000, reconnectStrategy: false, ...(opts.socket ?? {}) },
  });
  c.on('error', () => {}); // connection errors surface as rejected commands
  open.add(c);
  await within(20000, c.connect(), `connect to ${port}`);
  return c;
}
async function close(...cs) {
  for (const c of cs) {
    open.delete(c);
    try { c.destroy(); } catch { /* already closed */ }
  }
}

// --- patterns ---------------------------------------------------------------

async function cacheAside(port) {
  const r = await client(port);
  const o = {};
  const k = 'n:cache:user:42';
  await r.del(k);
  let loads = 0;
  const getUser = async () => {
    const v = await r.get(k);
    if (v === null) {
      const nv = JSON.stringify({ id: 42, name: 'Ada', v: loads++ });
      await r.setEx(k, 30, nv);
      return ['miss', nv];
    }
    return ['hit', v];
  };
  o.first = await getUser();
  o.second = await getUser();
  o.ttl = await r.ttl(k);
  o.invalidate = await r.del(k);
  o.after = await r.get(k);
  o.third = await getUser();
  o.mget = await r.mGet([k, 'n:cache:missing']);
  await close(r);
  return o;
}

async function session(port) {
  const r = await client(port);
  const o = {};
  const k = 'n:session:abc';
  await r.del([k, 'n:session:short']);
  o.hset = await r.hSet(k, { user: 'alice', cart: '0', csrf: 't0k3n' });
  o.expire = await r.expire(k, 60);
  o.ttl = await r.ttl(k);
  o.hgetall = await r.hGetAll(k);
  o.hgetall_is_map = await r.withTypeMapping({ [RESP_TYPES.MAP]: Map }).hGetAll(k) instanceof Map;
  o.hincrby = await r.hIncrBy(k, 'cart', 2);
  o.refresh = await r.expire(k, 1800);
  o.ttl_refreshed = await r.ttl(k);
  o.expire_gt = await r.expire(k, 100, 'GT');
  o.hmget = await r.hmGet(k, ['user', 'missing']);
  await r.hSet('n:session:short', 'user', 'bob');
  await r.pExpire('n:session:short', 200);
  await waitUntil(async () => (await r.exists('n:session:short')) === 0);
  o.expired = await r.exists('n:session:short');
  o.hgetall_missing = await r.hGetAll('n:session:short');
  await close(r);
  return o;
}

async function rateLimits(port) {
  const r = await client(port);
  const o = {};
  const k = 'n:rl:alice';
  await r.del([k, 'n:sw']);
  const allowed = [];
  for (let i = 0; i < 7; i++) {
    const n = await r.incr(k);
    if (n === 1) await r.expire(k, 60);
    allowed.push(n <= 5);
  }
  o.allowed = allowed;
  o.ttl = await r.ttl(k);
  // sliding window: a pipeline without MULTI, then the same as MULTI/EXEC
  const out = [];
  const times = [100, 101, 102, 103, 111.5, 112, 125];
  for (let i = 0; i < times.length; i++) {
    const now = times[i];
    const m = r.multi().zRemRangeByScore('n:sw', 0, now - 10).zAdd('n:sw', { score: now, value: `req-${i}` })
      .zCard('n:sw').expire('n:sw', 10);
    out.push(i % 2 ? await m.exec() : await m.execAsPipeline());
  }
  o.sliding = out;
  o.members = await r.zRangeWithScores('n:sw', 0, -1);
  await close(r);
  return o;
}

const BUCKET = `
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = capacity; ts = now end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000))
return {allowed, tostring(tokens)}
`;
const BUCKET_SHA = createHash('sha1').update(BUCKET).digest('hex');

async function tokenBucket(port) {
  const r = await client(port);
  const o = {};
  const k = 'n:tb';
  await r.del(k);
  const a = now => ({ keys: [k], arguments: ['3', '1', String(now)] });
  const calls = [];
  calls.push(await r.eval(BUCKET, a(0)));
  calls.push(await r.eval(BUCKET, a(0)));
  o.load = await r.scriptLoad(BUCKET);
  calls.push(await r.evalSha(BUCKET_SHA, a(0)));
  calls.push(await r.evalSha(BUCKET_SHA, a(0)));
  o.exists = await r.scriptExists([BUCKET_SHA, '0'.repeat(40)]);
  o.flush = await r.scriptFlush();
  o.noscript = await err(() => r.evalSha(BUCKET_SHA, a(1)));
  calls.push(await r.eval(BUCKET, a(1)));
  o.calls = calls;
  o.lua_resp3_map = await r.eval("redis.setresp(3); return redis.call('HGETALL', KEYS[1])", { keys: [k] });
  o.lua_double = await r.eval('return {double=3.5}');
  await close(r);
  return o;
}

const UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";
const EXTEND = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";

async function lock(port) {
  const a = await client(port), b = await client(port);
  const o = {};
  const k = 'n:lock';
  await a.del(k);
  const nxpx = ms => ({ condition: 'NX', expiration: { type: 'PX', value: ms } });
  o.a_acquire = await a.set(k, 'tok-a', nxpx(5000));
  o.b_acquire_held = await b.set(k, 'tok-b', nxpx(5000));
  o.b_release_wrong = await b.eval(UNLOCK, { keys: [k], arguments: ['tok-b'] });
  o.a_extend = await a.eval(EXTEND, { keys: [k], arguments: ['tok-a', '20000'] });
  o.pttl = await a.pTTL(k);
  o.a_release = await a.eval(UNLOCK, { keys: [k], arguments: ['tok-a'] });
  o.b_acquire_free = await b.set(k, 'tok-b', nxpx(5000));
  await close(a, b);
  return o;
}

async function transactions(port) {
  const r = await client(port), other = await client(port);
  const o = {};
  await r.del(['n:tx:a', 'n:tx:w', 'n:tx:d']);
  o.exec = await r.multi().set('n:tx:a', '1').incr('n:tx:a').get('n:tx:a').hGetAll('n:tx:none')
    .zScore('n:tx:none', 'x').exec();
  o.exec_error = await err(() => r.multi().set('n:tx:a', 'x').incr('n:tx:a').exec());
  // DISCARD by hand on the client's one connection
  o.discard = [await r.sendCommand(['MULTI']), await r.sendCommand(['SET', 'n:tx:d', 'never']),
    await r.sendCommand(['DISCARD']), await r.get('n:tx:d')];
  // WATCH aborted by another connection's write
  await other.set('n:tx:w', '10');
  o.watch = await r.watch('n:tx:w');
  const v = Number(await r.get('n:tx:w'));
  await other.set('n:tx:w', '99');
  o.watch_aborted = await err(() => r.multi().set('n:tx:w', String(v + 1)).exec());
  o.after_abort = await other.get('n:tx:w');
  await r.watch('n:tx:w');
  o.watch_clean = await r.multi().incr('n:tx:w').exec();
  await close(r, other);
  return o;
}

async function pubsub(port) {
  const sub = await client(port), pub = await client(port);
  const o = {};
  const got = [];
  await sub.subscribe('n:news', (message, channel) => got.push(['message', channel, message]));
  await sub.pSubscribe('n:alerts.*', (message, channel) => got.push(['pmessage', channel, message]));
  o.numsub = await pub.pubSubNumSub(['n:news']);
  o.publish = [await pub.publish('n:news', 'hello'), await pub.publish('n:alerts.disk', 'full')];
  await waitUntil(() => got.length >= 2, 20000);
  o.received = got.slice().sort();
  // RESP3: the subscribed connection still runs ordinary commands
  await pub.set('n:ps:k', 'v');
  o.get_while_subscribed = await err(() => sub.get('n:ps:k'));
  o.ping_while_subscribed = await err(() => sub.ping());
  await sub.unsubscribe('n:news');
  await sub.pUnsubscribe('n:alerts.*');
  o.publish_after = await pub.publish('n:news', 'late');
  o.ping_after = await sub.ping();
  o.get_after = await sub.get('n:ps:k');
  await sleep(100);
  o.nothing_late = got.length;
  await close(sub, pub);
  return o;
}

async function blocking(port, backend) {
  const r = await client(port), pusher = await client(port);
  const o = {};
  await pusher.del(['n:q', 'n:q:empty']);
  let base = await blockedClients(backend);
  const p = r.blPop('n:q', 5);
  o.blpop_blocked = await blockedBeyond(backend, base);
  o.rpush = await pusher.rPush('n:q', 'job-1');
  o.blpop = await p;
  const t1 = Date.now();
  o.blpop_timeout = await r.blPop('n:q:empty', 1);
  o.blpop_timeout_time = (Date.now() - t1) / 1000;
  base = await blockedClients(backend);
  const q = r.bzPopMin('n:z', 5);
  o.bzpopmin_blocked = await blockedBeyond(backend, base);
  await pusher.zAdd('n:z', [{ score: 1.5, value: 'low' }, { score: 9, value: 'high' }]);
  o.bzpopmin = await q;
  await pusher.del('n:z');
  await close(r, pusher);
  return o;
}

async function blockingTimeout(port) {
  const r = await client(port);
  const t0 = Date.now();
  const o = { blpop2: await err(() => r.blPop('n:q:tmo', 2)) };
  o.blpop2_time = (Date.now() - t0) / 1000;
  o.ping = await r.ping();
  await close(r);
  return o;
}

async function streams(port, backend) {
  const r = await client(port), c = await client(port);
  const o = {};
  const k = 'n:st', g = 'workers';
  await r.del(k);
  o.create = await r.xGroupCreate(k, g, '$', { MKSTREAM: true });
  const base = await blockedClients(backend);
  const p = c.xReadGroup(g, 'c1', { key: k, id: '>' }, { COUNT: 1, BLOCK: 5000 });
  o.read_blocked = await blockedBeyond(backend, base);
  o.xadd = await r.xAdd(k, '1-1', { item: 'book' });
  o.read = await p;
  await r.xAdd(k, '2-1', { item: 'pen' });
  o.read_more = await c.xReadGroup(g, 'c1', { key: k, id: '>' });
  o.pending = await r.xPending(k, g);
  o.claim = await r.xClaim(k, g, 'c2', 0, '1-1');
  o.autoclaim = await r.xAutoClaim(k, g, 'c3', 0, '0-0');
  o.ack = await r.xAck(k, g, ['1-1', '2-1']);
  o.pending_after = (await r.xPending(k, g)).pending;
  o.block_timeout = await c.xReadGroup(g, 'c1', { key: k, id: '>' }, { COUNT: 1, BLOCK: 300 });
  await close(r, c);
  return o;
}

async function select(port, backend) {
  const d1 = await client(port, { database: 1 });
  const d0 = await client(port);
  const direct1 = await client(backend, { database: 1 });
  const o = {};
  await direct1.del(['n:db:k', 'n:db:tx']);
  o.set = await d1.set('n:db:k', 'in-1');
  o.get_db1 = await d1.get('n:db:k');
  o.get_db0 = await d0.get('n:db:k');
  o.direct_db1 = await direct1.get('n:db:k');
  o.multi_db1 = await d1.multi().set('n:db:tx', 't').get('n:db:tx').exec();
  o.direct_db1_tx = await direct1.get('n:db:tx');
  o.get_db0_tx = await d0.get('n:db:tx');
  await close(d1, d0, direct1);
  return o;
}

async function resp3Types(port) {
  const r = await client(port);
  const o = {};
  await r.del(['n:t:h', 'n:t:z', 'n:t:s']);
  await r.hSet('n:t:h', { f1: 'v1', f2: 'v2' });
  await r.zAdd('n:t:z', { score: 1.5, value: 'a' });
  await r.sAdd('n:t:s', ['x', 'y']);
  // sendCommand applies no reply transform: what arrives is what RESP3 says
  o.map = await r.sendCommand(['HGETALL', 'n:t:h'], { typeMapping: { [RESP_TYPES.MAP]: Map } });
  o.set = await r.sendCommand(['SMEMBERS', 'n:t:s'], { typeMapping: { [RESP_TYPES.SET]: Set } });
  o.double = await r.sendCommand(['ZSCORE', 'n:t:z', 'a']);
  o.double_type = typeof o.double;
  o.null = await r.sendCommand(['GET', 'n:t:missing']);
  o.hello = await r.sendCommand(['HELLO', '3']);
  o.hello_proto = o.hello?.proto ?? (o.hello instanceof Map ? o.hello.get('proto') : undefined);
  delete o.hello;
  o.client_info_resp = /resp=(\d)/.exec(String(await r.sendCommand(['CLIENT', 'INFO'])))?.[1];
  await close(r);
  return o;
}

async function clientSideCache(port) {
  // node-redis' client-side cache: CLIENT TRACKING on its connection and
  // invalidation pushes, which hotproxy must deliver.
  const r = await client(port, { clientSideCache: { ttl: 0, maxEntries: 0 } });
  const w = await client(port);
  const o = {};
  await w.set('n:csc', 'v1');
  o.first = await r.get('n:csc');
  o.second = await r.get('n:csc');
  const stats = r.clientSideCache?.stats?.();
  o.hits = stats ? stats.hitCount : 'no stats';
  await w.set('n:csc', 'v2');
  // the invalidation push comes on its own time: read until it has (20 s)
  await waitUntil(async () => (await r.get('n:csc')) === 'v2');
  o.after_write = await r.get('n:csc');
  await close(r, w);
  return o;
}

async function auth(port, backend, user, password) {
  const o = {};
  o.good = await err(async () => { const c = await client(port, { username: user, password }); const v = await c.ping(); await close(c); return v; });
  o.bad = await err(async () => { const c = await client(port, { username: user, password: 'wrong-pw-7Qx' }); await close(c); return 'connected'; });
  o.none = await err(async () => { const c = await client(port); const v = await c.get('n:auth'); await close(c); return v; });
  return o;
}

async function clientCommands(port) {
  const c = await client(port, { name: 'node-app' });
  const o = {};
  o.getname = await c.clientGetName();
  const id = await c.clientId();
  o.id_positive = typeof id === 'number' && id > 0;
  const list = await c.clientList();
  const mine = list.filter(e => e.id === id);
  o.listed = mine.length;
  o.listed_name = mine[0]?.name;
  o.info_name = (await c.clientInfo()).name;
  await close(c);
  return o;
}

// --- hotproxy-only checks ----------------------------------------------------

async function adminChecks() {
  const r = await client(PROXY);
  is(await err(() => r.sendCommand(['SHUTDOWN'])), "SimpleError: ERR hotproxy: 'shutdown' is refused by this proxy",
    'RESP3: SHUTDOWN is refused by hotproxy');
  const d = await client(UP);
  is(await d.ping(), 'PONG', 'RESP3: Redis is up after SHUTDOWN through hotproxy');
  const f = await client(PROXY_REFUSE);
  is(await err(() => f.flushAll()), "SimpleError: ERR hotproxy: 'flushall' is refused by this proxy",
    'RESP3: refuse-command flushall refuses FLUSHALL');
  // node-redis sends CLIENT SETINFO LIB-NAME at connect; hotproxy keeps it
  // for its own CLIENT LIST (Redis 7.0 itself has no SETINFO).
  is(/lib-name=(\S*)/.exec(String(await r.sendCommand(['CLIENT', 'INFO'])))?.[1], 'node-redis',
    'RESP3: CLIENT INFO through hotproxy shows the lib-name node-redis set with CLIENT SETINFO');
  is(await r.configGet('maxmemory-policy'), await d.configGet('maxmemory-policy'),
    'RESP3: CONFIG GET through hotproxy answers as redis does');
  const old = (await d.configGet('maxmemory-policy'))['maxmemory-policy'];
  is(await r.configSet('maxmemory-policy', 'allkeys-lfu'), 'OK', 'RESP3: CONFIG SET passes through hotproxy');
  is(await d.configGet('maxmemory-policy'), { 'maxmemory-policy': 'allkeys-lfu' }, 'RESP3: CONFIG SET reached redis');
  await d.configSet('maxmemory-policy', old);
  await r.set('n:flush', '1');
  is(await r.flushAll(), 'OK', 'RESP3: FLUSHALL passes through hotproxy by default');
  is(await d.dbSize(), 0, 'RESP3: FLUSHALL through hotproxy emptied redis');
  is(await r.sendCommand(['COMMAND', 'COUNT']), await d.sendCommand(['COMMAND', 'COUNT']),
    'RESP3: COMMAND COUNT through hotproxy answers as redis does');
  is(await r.sendCommand(['COMMAND', 'INFO', 'get', 'blpop']), await d.sendCommand(['COMMAND', 'INFO', 'get', 'blpop']),
    'RESP3: COMMAND INFO through hotproxy answers as redis does');
  is(await err(() => r.sendCommand(['FOOBAR', 'x'])), await err(() => d.sendCommand(['FOOBAR', 'x'])),
    'RESP3: an unknown command gets the error redis gives');
  await close(r, d, f);
}

async function pinnedCap() {
  const cs = [];
  for (let i = 0; i < 3; i++) cs.push(await client(PROXY_CAP));
  is(await cs[0].sendCommand(['MULTI']), 'OK', 'RESP3 pinned cap: first MULTI');
  is(await cs[1].sendCommand(['MULTI']), 'OK', 'RESP3 pinned cap: second MULTI');
  const t0 = Date.now();
  const third = await err(() => within(3000, cs[2].sendCommand(['MULTI']), 'third MULTI'));
  ok(typeof third === 'string' && third.startsWith('SimpleError: ERR') && third.includes('upstream-max-pinned'),
    'RESP3 pinned cap: the third MULTI gets an -ERR naming upstream-max-pinned', `got ${show(third)}`);
  ok(Date.now() - t0 < 1000, 'RESP3 pinned cap: without waiting', `took ${Date.now() - t0} ms`);
  is(await cs[0].sendCommand(['EXEC']), [], 'RESP3 pinned cap: first EXEC');
  is(await cs[1].sendCommand(['DISCARD']), 'OK', 'RESP3 pinned cap: second DISCARD');
  await close(...cs);
}

async function main() {
  await runPattern('RESP3 cache-aside', cacheAside, {
    first: ['miss', '{"id":42,"name":"Ada","v":0}'], second: ['hit', '{"id":42,"name":"Ada","v":0}'],
    ttl: between(28, 30), invalidate: 1, after: null, third: ['miss', '{"id":42,"name":"Ada","v":1}'],
    mget: ['{"id":42,"name":"Ada","v":1}', null],
  }, TARGETS);
  await runPattern('RESP3 session hash', session, {
    hset: 3, expire: 1, ttl: between(58, 60), hgetall: { user: 'alice', cart: '0', csrf: 't0k3n' },
    hgetall_is_map: true, hincrby: 2, refresh: 1, ttl_refreshed: between(1798, 1800), expire_gt: 0,
    hmget: ['alice', null], expired: 0, hgetall_missing: {},
  }, TARGETS);
  await runPattern('RESP3 rate limits', rateLimits, {
    allowed: [true, true, true, true, true, false, false], ttl: between(58, 60),
    sliding: [[0, 1, 1, 1], [0, 1, 2, 1], [0, 1, 3, 1], [0, 1, 4, 1], [2, 1, 3, 1], [1, 1, 3, 1], [3, 1, 1, 1]],
    members: [{ value: 'req-6', score: 125 }],
  }, TARGETS);
  await noPinnedLeft('RESP3 MULTI/EXEC pipelines', PROXY);
  await runPattern('RESP3 Lua token bucket', tokenBucket, {
    calls: [[1, '2'], [1, '1'], [1, '0'], [0, '0'], [1, '0']], load: BUCKET_SHA, exists: [1, 0], flush: 'OK',
    noscript: 'SimpleError: NOSCRIPT No matching script. Please use EVAL.',
    lua_resp3_map: { tokens: '0', ts: '1' }, lua_double: 3.5,
  }, TARGETS);
  await runPattern('RESP3 SET NX PX lock', lock, {
    a_acquire: 'OK', b_acquire_held: null, b_release_wrong: 0, a_extend: 1, pttl: between(19500, 20000),
    a_release: 1, b_acquire_free: 'OK',
  }, TARGETS);
  await runPattern('RESP3 MULTI/EXEC, DISCARD, WATCH', transactions, {
    exec: ['OK', 2, '2', {}, null],
    exec_error: contains('MultiErrorReply: 1 commands failed'),
    discard: ['OK', 'QUEUED', 'OK', null], watch: 'OK', watch_aborted: contains('WatchError'),
    after_abort: '99', watch_clean: [100],
  }, TARGETS);
  await noPinnedLeft('RESP3 transactions', PROXY);
  await runPattern('RESP3 push pub/sub', pubsub, {
    numsub: { 'n:news': 1 }, publish: [1, 1],
    received: [['message', 'n:news', 'hello'], ['pmessage', 'n:alerts.disk', 'full']],
    get_while_subscribed: 'v', ping_while_subscribed: 'PONG', publish_after: 0, ping_after: 'PONG',
    get_after: 'v', nothing_late: 2,
  }, TARGETS);
  await noPinnedLeft('RESP3 pub/sub', PROXY);
  await runPattern('RESP3 blocking commands', blocking, {
    rpush: 1, blpop_blocked: true, blpop: { key: 'n:q', element: 'job-1' }, blpop_timeout: null,
    blpop_timeout_time: between(0.9, 2.5), bzpopmin_blocked: true, bzpopmin: { key: 'n:z', value: 'low', score: 1.5 },
  }, TARGETS);
  await runPattern('RESP3 BLPOP 2 with upstream-timeout 300', blockingTimeout, {
    blpop2: null, blpop2_time: between(1.9, 3.5), ping: 'PONG',
  }, [['hotproxy --upstream-timeout 300', PROXY_TMO, UP], ['redis', DIRECT, DIRECT]]);
  await noPinnedLeft('RESP3 blocking commands', PROXY);
  await runPattern('RESP3 streams', streams, {
    create: 'OK', xadd: '1-1',
    read_blocked: true, read: { 'n:st': [['1-1', ['item', 'book']]] },
    read_more: { 'n:st': [['2-1', ['item', 'pen']]] },
    pending: { pending: 2, firstId: '1-1', lastId: '2-1', consumers: [{ name: 'c1', deliveriesCounter: 2 }] },
    claim: SAME, autoclaim: SAME, ack: 2, pending_after: 0, block_timeout: null,
  }, TARGETS);
  await noPinnedLeft('RESP3 streams', PROXY);
  await runPattern('RESP3 SELECT isolation', select, {
    set: 'OK', get_db1: 'in-1', get_db0: null, direct_db1: 'in-1', multi_db1: ['OK', 't'], direct_db1_tx: 't',
    get_db0_tx: null,
  }, TARGETS);
  await runPattern('RESP3 reply types', resp3Types, {
    map: { '<map>': { f1: 'v1', f2: 'v2' } }, set: { '<set>': ['x', 'y'] }, double: 1.5, double_type: 'number',
    null: null, hello_proto: 3, client_info_resp: '3',
  }, TARGETS);
  await runPattern('RESP3 client-side cache (CLIENT TRACKING)', clientSideCache, {
    first: 'v1', second: 'v1', hits: 1, after_write: 'v2',
  }, TARGETS);
  await noPinnedLeft('RESP3 client-side cache', PROXY);
  await runPattern('RESP3 CLIENT SETNAME via HELLO, GETNAME, ID, LIST', clientCommands, {
    getname: 'node-app', id_positive: true, listed: 1, listed_name: 'node-app', info_name: 'node-app',
  }, TARGETS);

  // HELLO 3 AUTH: the direct Redis gets the proxies' users for a moment.
  const admin = await client(DIRECT);
  await admin.sendCommand(['ACL', 'SETUSER', 'alice', 'on', '>pw', '~*', '&*', '+@all']);
  await admin.configSet('requirepass', 'secret');
  try {
    const authExpect = { good: 'PONG', bad: contains('WRONGPASS'), none: contains('NOAUTH') };
    await runPattern('RESP3 HELLO 3 AUTH alice', (p, b) => auth(p, b, 'alice', 'pw'), authExpect,
      [['hotproxy --user', PROXY_USER, UP], ['redis', DIRECT, DIRECT]]);
    await runPattern('RESP3 HELLO 3 AUTH default (requirepass)', (p, b) => auth(p, b, undefined, 'secret'), authExpect,
      [['hotproxy --requirepass', PROXY_PASS, UP], ['redis', DIRECT, DIRECT]]);
  } finally {
    await admin.configSet('requirepass', '');
    await admin.sendCommand(['ACL', 'DELUSER', 'alice']);
    await close(admin);
  }

  await adminChecks();
  await pinnedCap();
}

try {
  await within(100000, main(), 'node_redis.mjs');
} catch (e) {
  ok(false, 'node_redis.mjs ran to the end', e?.stack ?? String(e));
}
for (const c of open) { try { c.destroy(); } catch { /* closed */ } }
process.exit(exitCode());
