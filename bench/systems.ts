import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ring } from '../src/core/ring.ts';
import { NODE_PROCESS_FLAGS } from '../src/frontends/node-flags.ts';
import { DEFAULT_NAMES } from '../src/runtime/config.ts';
import type { ClusterConfig, NodeAddress } from '../src/runtime/config.ts';
import type { Durability } from '../src/runtime/storage.ts';
import { EtcdHttp } from './etcd.ts';
import { freePorts, localClusterConfig, makeTmpDir, ServerProcess, sleep } from './procs.ts';
import { RespConnection } from './resp.ts';

/**
 * The three systems under test, each started fresh on 127.0.0.1 with its data under the OS
 * temporary directory: a five-node chainkv cluster (one `chainkv node` process per node), a
 * three-member etcd cluster, and one Redis server.
 */
const BIN = fileURLToPath(new URL('../bin/chainkv.mjs', import.meta.url));

export interface ServerHandle {
  /** Label of each running server process (for RSS/CPU sampling) and its pid. */
  processes(): { label: string; pid: number }[];
  /** Server processes that exited without being asked to (crashes), with their last log lines. */
  crashes(): string[];
  stop(): Promise<void>;
}

/** The most telling of a log's last lines: a JSON record's message, error and first frame in src/. */
export function lastWords(tail: string): string {
  const lines = tail.split('\n').filter((l) => l.trim() !== '');
  for (let i = lines.length - 1; i >= 0; i--) {
    const l = lines[i]!;
    if (!l.startsWith('{')) continue;
    try {
      const rec = JSON.parse(l) as { level?: unknown; msg?: unknown; err?: { message?: unknown; stack?: unknown } };
      const lv = rec.level;
      if (!((typeof lv === 'number' && lv >= 50) || lv === 'error' || lv === 'fatal' || lv === 'panic')) continue;
      const frame = String(rec.err?.stack ?? '')
        .split('\n')
        .find((f) => f.includes('/src/'))
        ?.trim();
      return [rec.msg, rec.err?.message, frame].filter((x) => x !== undefined && x !== '').map(String).join(' — ');
    } catch {
      continue;
    }
  }
  const last = lines[lines.length - 1];
  if (last === undefined) return 'empty log';
  try {
    return `no error in its log (last message: ${String((JSON.parse(last) as { msg?: unknown }).msg)})`;
  } catch {
    return `last log lines: ${lines.slice(-3).join(' ').replace(/\s+/g, ' ').slice(0, 400)}`;
  }
}

function crashesOf(procs: Iterable<ServerProcess>): string[] {
  const out: string[] = [];
  for (const p of procs) {
    const c = p.crash;
    if (c !== undefined) out.push(`${c}: ${lastWords(p.tail(10))}`);
  }
  return out;
}

// ---------------------------------------------------------------- chainkv

export interface ChainkvOptions {
  durability: Durability;
  /** Start nodes with `node --cpu-prof --cpu-prof-dir DIR`. */
  cpuProfDir?: string;
  logLevel?: string;
  /** Run the nodes of another chainkv checkout (its bin/chainkv.mjs); default this one. */
  root?: string;
}

interface ClusterView {
  configuration?: { leader?: string; role?: string };
  nodes: { name: string; state: string }[];
  local: { partition: number; ready: boolean; mode: string }[];
  lease: boolean;
  epoch: number;
}

export class ChainkvCluster implements ServerHandle {
  readonly ring: Ring;
  readonly procs = new Map<string, ServerProcess>();
  readonly configFile: string;

  private constructor(
    readonly dir: string,
    readonly config: ClusterConfig,
    private readonly opts: ChainkvOptions,
  ) {
    this.ring = new Ring(config.nodes.map((n) => n.name), config.replication);
    this.configFile = join(dir, 'cluster.json');
    writeFileSync(this.configFile, JSON.stringify(config, null, 2));
  }

  static async start(opts: ChainkvOptions): Promise<ChainkvCluster> {
    const dir = makeTmpDir(`chainkv-bench-${opts.durability}-`);
    const config = await localClusterConfig(dir, 'bench', DEFAULT_NAMES, { durability: opts.durability, logLevel: opts.logLevel ?? 'info' });
    const c = new ChainkvCluster(dir, config, opts);
    try {
      await Promise.all(c.names.map((n) => c.startNode(n)));
      await c.waitAllUp(60_000);
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  get names(): string[] {
    return this.config.nodes.map((n) => n.name);
  }

  node(name: string): NodeAddress {
    const n = this.config.nodes.find((x) => x.name === name);
    if (n === undefined) throw new Error(`no node ${name}`);
    return n;
  }

  http(name: string): string {
    const n = this.node(name);
    return `http://${n.host}:${n.httpPort}`;
  }

  processes(): { label: string; pid: number }[] {
    return [...this.procs.entries()].filter(([, p]) => p.running).map(([n, p]) => ({ label: `chainkv-${this.opts.durability} ${n}`, pid: p.pid }));
  }

  crashes(): string[] {
    return crashesOf(this.procs.values());
  }

  /** Spawns a node process and waits until it answers /health. */
  async startNode(name: string): Promise<ServerProcess> {
    const old = this.procs.get(name);
    if (old !== undefined && old.running) throw new Error(`node ${name} is already running`);
    const nodeArgs: string[] = [...NODE_PROCESS_FLAGS];
    if (this.opts.cpuProfDir !== undefined) {
      // One directory per node: node writes one profile per thread (the main thread and tsx's
      // module-loader thread), named by pid and thread id.
      const dir = join(this.opts.cpuProfDir, name);
      mkdirSync(dir, { recursive: true });
      nodeArgs.push('--cpu-prof', '--cpu-prof-dir', dir);
    }
    const p = new ServerProcess(
      `chainkv ${name}`,
      process.execPath,
      [...nodeArgs, this.opts.root !== undefined ? join(this.opts.root, 'bin', 'chainkv.mjs') : BIN, 'node', '--config', this.configFile, '--name', name],
      join(this.dir, `node-${name}.log`),
    );
    this.procs.set(name, p);
    await this.waitHealthy(name, 30_000);
    return p;
  }

  async waitHealthy(name: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const p = this.procs.get(name);
    while (Date.now() < deadline) {
      if (p !== undefined && !p.running) throw new Error(`chainkv node ${name} exited during start:\n${p.tail()}`);
      try {
        const r = await fetch(`${this.http(name)}/health`, { signal: AbortSignal.timeout(1000) });
        if (r.ok) return;
      } catch {
        // not listening yet
      }
      await sleep(25);
    }
    throw new Error(`chainkv node ${name} did not answer /health within ${timeoutMs} ms`);
  }

  async clusterView(name: string): Promise<ClusterView | undefined> {
    try {
      const r = await fetch(`${this.http(name)}/cluster`, { signal: AbortSignal.timeout(2000) });
      if (!r.ok) return undefined;
      return (await r.json()) as ClusterView;
    } catch {
      return undefined;
    }
  }

  /** True when every running node sees every node up, holds a lease and is ready in all its partitions. */
  async allUp(): Promise<boolean> {
    const views = await Promise.all(this.names.map((n) => this.clusterView(n)));
    return views.every(
      (v) => v !== undefined && v.lease && v.nodes.every((n) => n.state === 'up') && v.local.every((l) => l.ready && l.mode === 'member'),
    );
  }

  async waitAllUp(timeoutMs: number, pollMs = 50): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await this.allUp()) return;
      for (const [n, p] of this.procs) if (!p.running) throw new Error(`chainkv node ${n} exited:\n${p.tail()}`);
      await sleep(pollMs);
    }
    throw new Error(`chainkv cluster not all up within ${timeoutMs} ms`);
  }

  /** The configuration (Raft) leader as the first answering node sees it. */
  async leader(): Promise<string | undefined> {
    for (const n of this.names) {
      const v = await this.clusterView(n);
      if (v?.configuration?.leader !== undefined) return v.configuration.leader;
    }
    return undefined;
  }

  /** True when every node other than `name` sees `name` in `state`. */
  async othersSee(name: string, state: string): Promise<boolean> {
    const views = await Promise.all(this.names.filter((n) => n !== name).map((n) => this.clusterView(n)));
    return views.every((v) => v !== undefined && v.nodes.find((x) => x.name === name)?.state === state);
  }

  async killNode(name: string): Promise<void> {
    const p = this.procs.get(name);
    if (p !== undefined) await p.kill();
  }

  async stop(): Promise<void> {
    await Promise.all([...this.procs.values()].map((p) => p.stop()));
  }

  /** The key's canonical chain (head first). */
  chainOf(key: string | Uint8Array): readonly string[] {
    return this.ring.canonicalChain(this.ring.partitionOf(key));
  }
}

// ---------------------------------------------------------------- etcd

export class EtcdCluster implements ServerHandle {
  readonly members: { name: string; clientPort: number; peerPort: number; proc: ServerProcess }[] = [];

  private constructor(readonly dir: string) {}

  static async start(size = 3): Promise<EtcdCluster> {
    const dir = makeTmpDir('etcd-bench-');
    const ports = await freePorts(size * 2);
    const c = new EtcdCluster(dir);
    const names = Array.from({ length: size }, (_, i) => `m${i + 1}`);
    const initial = names.map((n, i) => `${n}=http://127.0.0.1:${ports[2 * i + 1]!}`).join(',');
    const token = `bench-${Math.random().toString(36).slice(2, 8)}`;
    for (const [i, name] of names.entries()) {
      const clientPort = ports[2 * i]!;
      const peerPort = ports[2 * i + 1]!;
      const client = `http://127.0.0.1:${clientPort}`;
      const peer = `http://127.0.0.1:${peerPort}`;
      const proc = new ServerProcess(
        `etcd ${name}`,
        '/usr/bin/etcd',
        [
          '--name', name,
          '--data-dir', join(dir, name),
          '--listen-client-urls', client,
          '--advertise-client-urls', client,
          '--listen-peer-urls', peer,
          '--initial-advertise-peer-urls', peer,
          '--initial-cluster', initial,
          '--initial-cluster-token', token,
          '--initial-cluster-state', 'new',
          '--logger', 'zap',
          '--log-outputs', 'stderr',
          '--log-level', 'warn',
        ],
        join(dir, `${name}.log`),
      );
      c.members.push({ name, clientPort, peerPort, proc });
    }
    try {
      const deadline = Date.now() + 60_000;
      for (const m of c.members) {
        const h = new EtcdHttp('127.0.0.1', m.clientPort, 1);
        try {
          while (!(await h.health())) {
            if (!m.proc.running) throw new Error(`etcd ${m.name} exited:\n${m.proc.tail()}`);
            if (Date.now() > deadline) throw new Error(`etcd ${m.name} not healthy within 60 s:\n${m.proc.tail()}`);
            await sleep(100);
          }
        } finally {
          h.close();
        }
      }
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  processes(): { label: string; pid: number }[] {
    return this.members.filter((m) => m.proc.running).map((m) => ({ label: `etcd ${m.name}`, pid: m.proc.pid }));
  }

  crashes(): string[] {
    return crashesOf(this.members.map((m) => m.proc));
  }

  async stop(): Promise<void> {
    await Promise.all(this.members.map((m) => m.proc.stop()));
  }
}

// ---------------------------------------------------------------- Redis

export class RedisServer implements ServerHandle {
  private constructor(
    readonly dir: string,
    readonly port: number,
    readonly proc: ServerProcess,
  ) {}

  static async start(): Promise<RedisServer> {
    const dir = makeTmpDir('redis-bench-');
    const [port] = await freePorts(1);
    const proc = new ServerProcess(
      'redis',
      '/usr/bin/redis-server',
      ['--port', String(port!), '--bind', '127.0.0.1', '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--dir', dir, '--daemonize', 'no'],
      join(dir, 'redis.log'),
    );
    const r = new RedisServer(dir, port!, proc);
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (!proc.running) throw new Error(`redis-server exited:\n${proc.tail()}`);
      try {
        const c = await RespConnection.open('127.0.0.1', port!);
        const pong = await c.call(['PING']);
        c.close();
        if (pong === 'PONG') break;
      } catch {
        // not yet
      }
      if (Date.now() > deadline) {
        await r.stop();
        throw new Error(`redis-server did not answer PING within 20 s:\n${proc.tail()}`);
      }
      await sleep(50);
    }
    return r;
  }

  processes(): { label: string; pid: number }[] {
    return this.proc.running ? [{ label: 'redis', pid: this.proc.pid }] : [];
  }

  crashes(): string[] {
    return crashesOf([this.proc]);
  }

  async stop(): Promise<void> {
    await this.proc.stop();
  }
}

// ---------------------------------------------------------------- versions

export function etcdVersion(): string {
  const r = spawnSync('/usr/bin/etcd', ['--version'], { encoding: 'utf8' });
  return /etcd Version:\s*(\S+)/.exec(r.stdout ?? '')?.[1] ?? 'unknown';
}

export function redisVersion(): string {
  const r = spawnSync('/usr/bin/redis-server', ['--version'], { encoding: 'utf8' });
  return /v=(\S+)/.exec(r.stdout ?? '')?.[1] ?? 'unknown';
}
