import { createServer } from 'node:net';
import type { Server } from 'node:net';
import { join } from 'node:path';
import { defaultConfig } from '../../src/runtime/config.ts';
import type { ClusterConfig, NodeAddress } from '../../src/runtime/config.ts';

/** Distinct free ports on 127.0.0.1: all are held open until every one is picked, so none is handed out twice. */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<Server>((resolve, reject) => {
          const s = createServer();
          s.once('error', reject);
          s.listen(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => {
    const addr = s.address();
    return typeof addr === 'object' && addr !== null ? addr.port : 0;
  });
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** Node addresses on 127.0.0.1, each with three free ports (HTTP, RESP, peer). */
export async function localNodes(names: readonly string[]): Promise<NodeAddress[]> {
  const ports = await freePorts(names.length * 3);
  return names.map((name, i) => ({
    name,
    host: '127.0.0.1',
    httpPort: ports[3 * i]!,
    respPort: ports[3 * i + 1]!,
    peerPort: ports[3 * i + 2]!,
  }));
}

/**
 * The product's default configuration for a cluster of `names` on free local ports, with its
 * data under `dir`/data and a cluster id of its own (`<idPrefix>-xxxxxx`), plus `settings`.
 */
export async function localClusterConfig(dir: string, idPrefix: string, names: readonly string[], settings: Partial<ClusterConfig> = {}): Promise<ClusterConfig> {
  return {
    ...defaultConfig(),
    cluster: `${idPrefix}-${Math.random().toString(36).slice(2, 8)}`,
    nodes: await localNodes(names),
    dataDir: join(dir, 'data'),
    ...settings,
  };
}
