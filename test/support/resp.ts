import type { Redis } from 'ioredis';

/** Every pair stored on the node behind this connection (query "@"), through LOCALSCAN pages. */
export async function localPairs(r: Redis): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let cursor = '0';
  do {
    const [next, flat] = (await r.call('LOCALSCAN', cursor, 'COUNT', '1000')) as [string, string[]];
    for (let i = 0; i < flat.length; i += 2) out.set(flat[i]!, flat[i + 1]!);
    cursor = next;
  } while (cursor !== '0');
  return out;
}
