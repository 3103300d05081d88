import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_PROCESS_FLAGS } from '../../src/frontends/node-flags.ts';
import { DEFAULT_NAMES } from '../../src/runtime/config.ts';
import { freePorts, localClusterConfig } from './ports.ts';
import type { ClusterConfig, NodeAddress } from '../../src/runtime/config.ts';
import { TcpProxy } from './proxy.ts';

/**
 * Test harness: a real cluster of separate node processes on 127.0.0.1, each started with
 * `chainkv node --config FILE --name NAME`, on free ports, with a fresh data directory.
 * Nodes can be killed (SIGKILL), paused (SIGSTOP), resumed and restarted one at a time.
 */
const BIN = fileURLToPath(new URL('../../bin/chainkv.mjs', import.meta.url));

export interface TestClusterOptions {
  names?: string[];
  settings?: Partial<Omit<ClusterConfig, 'nodes'>>;
  /** Print node logs to stderr (also: CHAINKV_TEST_LOGS=1). */
  logs?: boolean;
  /**
   * 'proxy': every peer connection goes through a TCP proxy of the harness, so that a node can
   * be cut off from the others (`isolate` / `heal`) while its process keeps running. See
   * `TestCluster.create`. Default 'none': nodes dial each other directly.
   */
  isolation?: 'none' | 'proxy';
  /** Environment variables for every node process (on top of this process's). */
  env?: Record<string, string>;
}

export class TestCluster {
  readonly dir: string;
  /** The cluster's configuration with every node's real ports (what clients and tools use). */
  readonly configFile: string;
  readonly config: ClusterConfig;
  private readonly procs = new Map<string, ChildProcess>();
  private readonly logs: boolean;
  readonly output = new Map<string, string[]>();
  /** Every node process exit so far, in order (killed, stopped or crashed). */
  readonly exits: { name: string; pid: number | undefined; code: number | null; signal: NodeJS.Signals | null; at: number }[] = [];
  /** isolation 'proxy': one proxy per ordered pair, keyed "from>to". */
  private readonly proxies = new Map<string, TcpProxy>();
  /** isolation 'proxy': the config file each node is started with. */
  private readonly nodeConfigFiles = new Map<string, string>();
  private readonly isolated = new Set<string>();
  private env: Record<string, string> = {};

  private constructor(dir: string, config: ClusterConfig, logs: boolean) {
    this.dir = dir;
    this.config = config;
    this.logs = logs;
    this.configFile = join(dir, 'cluster.json');
    writeFileSync(this.configFile, JSON.stringify(config, null, 2));
  }

  static async create(opts: TestClusterOptions = {}): Promise<TestCluster> {
    const dir = mkdtempSync(join(tmpdir(), 'chainkv-test-'));
    // The product's defaults, on free ports, in a fresh directory, under a cluster id of its own.
    const config = await localClusterConfig(dir, 'test', opts.names ?? DEFAULT_NAMES, opts.settings);
    const cluster = new TestCluster(dir, config, opts.logs ?? process.env.CHAINKV_TEST_LOGS === '1');
    cluster.env = opts.env ?? {};
    if (opts.isolation === 'proxy') await cluster.setUpProxies();
    return cluster;
  }

  /**
   * Network isolation without touching the nodes (isolation: 'proxy').
   *
   * chainkv's peer transport has one TCP connection per ordered pair of nodes, dialed by the
   * sender to the peerPort its config names for the receiver. For every ordered pair X->Y the
   * harness runs a TcpProxy (test/support/proxy.ts) that listens on a port of its own and
   * forwards to Y's real peer port. Each node gets its own config file (node-X.json in the
   * cluster dir): its own entry keeps its real peerPort (where it listens), and every other
   * node Y's entry has peerPort = the port of proxy X->Y. Everything else (names, HTTP/RESP
   * ports, cluster id, data dir, settings) is identical to cluster.json, so every node sees the
   * same ring. So all of X's traffic to Y goes through proxy X->Y and nothing else.
   *
   * `isolate(X)` blocks every proxy into and out of X: existing peer connections are cut, and
   * redials are accepted and then held silently (never refused, since chainkv takes a refused
   * connection as proof that the process is dead). X keeps running and keeps serving its
   * clients (RESP/HTTP are not proxied); it just hears nothing from its peers and they hear
   * nothing from it. `heal(X)` unblocks them: held connections are dropped, the dialers
   * reconnect through the proxies. The proxies also mirror their target's process: while Y is
   * not running (and the link is not blocked) proxy X->Y does not listen, so X's dial is
   * refused just as it would be without the proxy.
   *
   * The proxies run in the test process: a test that blocks its event loop for long stalls the
   * cluster's network.
   */
  private async setUpProxies(): Promise<void> {
    // Ports of their own: a proxy on an ephemeral port could take one of the nodes' ports,
    // which are free until the nodes start ("127.0.0.1:N is used twice").
    const used = new Set(this.config.nodes.flatMap((n) => [n.httpPort, n.respPort, n.peerPort]));
    const need = this.names.length * (this.names.length - 1);
    const ports: number[] = [];
    while (ports.length < need) {
      for (const port of await freePorts(need - ports.length)) {
        if (used.has(port)) continue;
        used.add(port);
        ports.push(port);
      }
    }
    for (const from of this.names) {
      for (const to of this.names) {
        if (from === to) continue;
        const proxy = new TcpProxy(this.node(to).peerPort, `${from}->${to}`);
        await proxy.start(ports.pop()!);
        this.proxies.set(`${from}>${to}`, proxy);
      }
    }
    for (const self of this.names) {
      const nodes = this.config.nodes.map((n) => (n.name === self ? { ...n } : { ...n, peerPort: this.proxy(self, n.name).port }));
      const file = join(this.dir, `node-${self}.json`);
      writeFileSync(file, JSON.stringify({ ...this.config, nodes }, null, 2));
      this.nodeConfigFiles.set(self, file);
    }
  }

  get isolation(): 'none' | 'proxy' {
    return this.proxies.size > 0 ? 'proxy' : 'none';
  }

  /** The proxy carrying `from`'s traffic to `to` (isolation 'proxy'). */
  proxy(from: string, to: string): TcpProxy {
    const p = this.proxies.get(`${from}>${to}`);
    if (p === undefined) throw new Error(this.proxies.size === 0 ? 'the cluster was not created with isolation: \'proxy\'' : `no proxy ${from}->${to}`);
    return p;
  }

  /** The config file node `name` is started with. */
  configFileOf(name: string): string {
    return this.nodeConfigFiles.get(name) ?? this.configFile;
  }

  /** Cuts every peer link into and out of the node (it keeps running and serving its clients). */
  isolate(name: string): void {
    this.node(name);
    for (const other of this.names) {
      if (other === name) continue;
      this.proxy(name, other).block();
      this.proxy(other, name).block();
    }
    this.isolated.add(name);
  }

  /** Restores the peer links of an isolated node (links to another isolated node stay cut). */
  heal(name: string): void {
    this.node(name);
    this.isolated.delete(name);
    for (const other of this.names) {
      if (other === name || this.isolated.has(other)) continue;
      this.proxy(name, other).unblock();
      this.proxy(other, name).unblock();
    }
  }

  /** Heals every isolated node. */
  healAll(): void {
    for (const n of [...this.isolated]) this.heal(n);
  }

  isIsolated(name: string): boolean {
    return this.isolated.has(name);
  }

  private proxiesInto(name: string): TcpProxy[] {
    return this.names.filter((n) => n !== name && this.proxies.has(`${n}>${name}`)).map((n) => this.proxy(n, name));
  }

  node(name: string): NodeAddress {
    const n = this.config.nodes.find((x) => x.name === name);
    if (n === undefined) throw new Error(`no node ${name}`);
    return n;
  }

  get names(): string[] {
    return this.config.nodes.map((n) => n.name);
  }

  http(name: string): string {
    const n = this.node(name);
    return `http://${n.host}:${n.httpPort}`;
  }

  /** Starts every node (or the named ones) and waits until each answers /health. */
  async start(names: string[] = this.names): Promise<void> {
    await Promise.all(names.map((n) => this.startNode(n)));
  }

  /** Starts one node; `env` adds to (and overrides) the cluster's environment for this start. */
  async startNode(name: string, env: Record<string, string> = {}): Promise<void> {
    if (this.procs.has(name)) throw new Error(`node ${name} is already running`);
    await Promise.all(this.proxiesInto(name).map((p) => p.targetUp()));
    const child = spawn(process.execPath, [...NODE_PROCESS_FLAGS, BIN, 'node', '--config', this.configFileOf(name), '--name', name], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...this.env, ...env },
    });
    this.procs.set(name, child);
    const lines: string[] = this.output.get(name) ?? [];
    this.output.set(name, lines);
    const collect = (chunk: Buffer): void => {
      const text = chunk.toString('utf8');
      for (const l of text.split('\n')) if (l !== '') lines.push(l);
      if (lines.length > 5000) lines.splice(0, lines.length - 5000);
      if (this.logs) process.stderr.write(text.replace(/^/gm, `[${name}] `));
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    child.on('exit', (code, signal) => {
      this.exits.push({ name, pid: child.pid, code, signal, at: Date.now() });
      lines.push(`[harness] process ${child.pid ?? '?'} exited (${signal ?? `code ${code}`})`);
      if (this.logs) process.stderr.write(`[${name}] [harness] exited (${signal ?? `code ${code}`})\n`);
      if (this.procs.get(name) === child) {
        this.procs.delete(name);
        for (const p of this.proxiesInto(name)) p.targetDown();
      }
    });
    await this.waitHealthy(name, 20_000);
  }

  async waitHealthy(name: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.procs.has(name)) throw new Error(`node ${name} exited during start:\n${(this.output.get(name) ?? []).slice(-20).join('\n')}`);
      try {
        const r = await fetch(`${this.http(name)}/health`);
        if (r.ok) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`node ${name} did not become healthy in ${timeoutMs} ms`);
  }

  /**
   * Waits until every running node sees every node up, all in one view, and each holds its
   * partitions as a ready chain member (restarted and rejoined nodes have levelled up).
   */
  async waitAllUp(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      try {
        const infos = await Promise.all(
          this.names
            .filter((n) => this.isRunning(n))
            .map(async (n) => (await (await fetch(`${this.http(n)}/cluster`)).json()) as { epoch: number; nodes: { state: string }[]; local: { ready: boolean; mode: string }[] }),
        );
        const up = infos.every((i) => i.nodes.every((n) => n.state === 'up') && i.local.every((l) => l.mode === 'member' && l.ready));
        if (up && new Set(infos.map((i) => i.epoch)).size === 1) return;
      } catch {
        // a node is restarting
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`the cluster did not come back to all-up within ${timeoutMs} ms`);
  }

  isRunning(name: string): boolean {
    return this.procs.has(name);
  }

  pid(name: string): number {
    const p = this.procs.get(name)?.pid;
    if (p === undefined) throw new Error(`node ${name} is not running`);
    return p;
  }

  /** SIGKILL: the process dies at once, with no chance to flush or say goodbye. */
  async kill(name: string): Promise<void> {
    const child = this.procs.get(name);
    if (child === undefined) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  }

  pause(name: string): void {
    process.kill(this.pid(name), 'SIGSTOP');
  }

  resume(name: string): void {
    process.kill(this.pid(name), 'SIGCONT');
  }

  /** SIGTERM, waiting for a clean exit. */
  async stopNode(name: string): Promise<number | null> {
    const child = this.procs.get(name);
    if (child === undefined) return null;
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill('SIGTERM');
    return exited;
  }

  async stop(): Promise<void> {
    await Promise.all(
      [...this.procs.keys()].map(async (n) => {
        try {
          this.resume(n);
        } catch {
          // not paused
        }
        const code = this.stopNode(n);
        const timer = setTimeout(() => void this.kill(n), 5000);
        await code;
        clearTimeout(timer);
      }),
    );
  }

  async destroy(): Promise<void> {
    await this.stop();
    await Promise.all([...this.proxies.values()].map((p) => p.close()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}
