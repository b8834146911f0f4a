// node_redis_cluster.mjs: node-redis v5's client-side cache (RESP3, CLIENT
// TRACKING ON on its one connection, invalidation pushes) through hotproxy in
// front of a Redis Cluster: the application's plain client caches keys of
// every master, and every write made by another client reaches its cache.
// Environment: CLUSTER_PROXY (hotproxy's port), CLUSTER_MASTERS (the masters'
// ports, space-separated).  Prints "ok - ..." lines (test_cluster_tracking_node.sh).
import { createClient } from 'redis';
import { ok, is, exitCode, err, within, waitUntil } from './tap.mjs';

const PROXY = Number(process.env.CLUSTER_PROXY);
const MASTERS = String(process.env.CLUSTER_MASTERS ?? '').split(/\s+/).filter(Boolean).map(Number);
const open = new Set();

async function client(port, opts = {}) {
  const c = createClient({
    ...opts,
    socket: { host: '127.0.0.1', port, connectTimeout: 5000, reconnectStrategy: false },
  });
  c.on('error', () => {});
  open.add(c);
  await within(20000, c.connect(), `connect to ${port}`);
  return c;
}

async function main() {
  const r = await client(PROXY, { RESP: 3, clientSideCache: { ttl: 0, maxEntries: 0 } });
  const w = await client(PROXY);
  const direct = await Promise.all(MASTERS.map(p => client(p)));
  const keys = Array.from({ length: 30 }, (_, i) => `ncl:${i}`);
  for (const k of keys) await w.set(k, `${k}=1`);
  // which master holds each key (a node answers MOVED for the others)
  const owners = new Set();
  for (const k of keys)
    for (let m = 0; m < direct.length; m++) if ((await err(() => direct[m].exists(k))) === 1) owners.add(m);
  is(owners.size, MASTERS.length, `the ${keys.length} keys are spread over all ${MASTERS.length} masters`);

  const first = [];
  for (const k of keys) first.push(await err(() => r.get(k)));
  is(first, keys.map(k => `${k}=1`), 'the caching client reads every key through hotproxy (no CROSSSLOT)');
  const hits0 = r.clientSideCache.stats().hitCount;
  for (const k of keys) await r.get(k);
  is(r.clientSideCache.stats().hitCount - hits0, keys.length, 'a second read of each is a hit of its own cache');

  for (const k of keys) await w.set(k, `${k}=2`);
  const fresh = await waitUntil(async () => {
    for (const k of keys) if ((await r.get(k)) !== `${k}=2`) return false;
    return true;
  });
  ok(fresh, 'another client writes every key: each invalidation reaches its cache, it reads the new values');
  const hits1 = r.clientSideCache.stats().hitCount;
  for (const k of keys) await r.get(k);
  is(r.clientSideCache.stats().hitCount - hits1, keys.length, '... and caches them again');

  // a write straight to a master (not through hotproxy) too
  const k = keys[0];
  let m = 0;
  while (m < direct.length && (await err(() => direct[m].exists(k))) !== 1) m++;
  await direct[m].set(k, 'direct');
  ok(await waitUntil(async () => (await r.get(k)) === 'direct'), 'a write straight to its master reaches its cache too');
}

try {
  await within(90000, main(), 'node_redis_cluster.mjs');
} catch (e) {
  ok(false, 'node_redis_cluster.mjs ran to the end', e?.stack ?? String(e));
}
for (const c of open) { try { c.destroy(); } catch { /* closed */ } }
process.exit(exitCode());
