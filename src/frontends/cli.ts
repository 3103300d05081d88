import v8 from 'node:v8';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import type { ClusterConfig } from '../runtime/config.ts';
import { ConfigError, loadConfig } from '../runtime/config.ts';
import { MIN_SECRET_LENGTH } from '../runtime/transport.ts';
import { ChainKvClient, ChainKvError } from './client.ts';
import { startNode } from './node-main.ts';
import { NODE_PROCESS_FLAGS, nodeV8Flags } from './node-flags.ts';
import { TurnTrace } from '../runtime/turn-trace.ts';
import { VERSION } from './version.ts';

/** The `chainkv` command: run a local cluster or one node, and talk to a cluster. */

/** The `chainkv` executable, for `start` to run the nodes with; set by `main`. */
let BIN = fileURLToPath(new URL('../../bin/chainkv.mjs', import.meta.url));

interface ConfigOpts {
  config?: string;
  dataDir?: string;
  durability?: string;
}

function configFrom(opts: ConfigOpts): ClusterConfig {
  const overrides: Partial<ClusterConfig> = {};
  if (opts.dataDir !== undefined) overrides.dataDir = opts.dataDir;
  if (opts.durability !== undefined) overrides.durability = opts.durability as ClusterConfig['durability'];
  return loadConfig(opts.config, overrides);
}

function withConfigOptions(cmd: Command): Command {
  return cmd
    .option('-c, --config <file>', 'cluster configuration (JSON); default: the local five-node cluster')
    .option('-d, --data-dir <dir>', 'data directory (one folder per node inside it)')
    .addOption(new Option('--durability <mode>', 'fsync: on disk before ok; process: survives a process kill').choices(['fsync', 'process']));
}

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/** Prints a child's pino JSON lines as "[name] LEVEL message key=value". */
function pipeLogs(name: string, child: ChildProcess): void {
  for (const stream of [child.stdout, child.stderr]) {
    if (stream === null) continue;
    createInterface({ input: stream }).on('line', (line) => {
      try {
        const rec = JSON.parse(line) as Record<string, unknown>;
        const { level, msg, time: _t, pid: _p, hostname: _h, node: _n, ...rest } = rec;
        const extra = Object.entries(rest)
          .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
          .join(' ');
        console.log(`[${name}] ${LEVELS[level as number] ?? level} ${String(msg)}${extra ? '  ' + extra : ''}`);
      } catch {
        console.log(`[${name}] ${line}`);
      }
    });
  }
}

async function startCluster(opts: ConfigOpts): Promise<void> {
  const cfg = configFrom(opts);
  const passOn = [
    ...(opts.config !== undefined ? ['--config', opts.config] : []),
    ...(opts.dataDir !== undefined ? ['--data-dir', opts.dataDir] : []),
    ...(opts.durability !== undefined ? ['--durability', opts.durability] : []),
  ];
  console.log(`chainkv ${VERSION}: starting ${cfg.nodes.length} nodes, data under ${cfg.dataDir}, durability ${cfg.durability}`);
  console.log('');
  console.log('  node    HTTP                    RESP (redis-cli -p)   peer');
  for (const n of cfg.nodes) {
    console.log(`  ${n.name.padEnd(7)} http://${n.host}:${String(n.httpPort).padEnd(8)} ${`${n.host}:${n.respPort}`.padEnd(21)} ${n.host}:${n.peerPort}`);
  }
  console.log('');
  console.log(`  try: redis-cli -p ${cfg.nodes[0]!.respPort} set hello world;  curl http://${cfg.nodes[0]!.host}:${cfg.nodes[0]!.httpPort}/cluster`);
  console.log('  Ctrl-C stops every node.');
  console.log('');
  const children = new Map<string, ChildProcess>();
  let stopping = false;
  for (const n of cfg.nodes) {
    const child = spawn(process.execPath, [...NODE_PROCESS_FLAGS, BIN, 'node', '--name', n.name, ...passOn], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.set(n.name, child);
    pipeLogs(n.name, child);
    child.on('exit', (code, signal) => {
      children.delete(n.name);
      if (!stopping) console.log(`[${n.name}] exited (${signal ?? `code ${code}`}); the others keep serving`);
      if (children.size === 0) process.exit(0);
    });
  }
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    console.log('\nstopping every node...');
    for (const c of children.values()) c.kill('SIGTERM');
    setTimeout(() => {
      for (const c of children.values()) c.kill('SIGKILL');
      process.exit(1);
    }, 10_000).unref();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

async function runNode(name: string, opts: ConfigOpts): Promise<void> {
  for (const flags of nodeV8Flags(process.env)) v8.setFlagsFromString(flags);
  const cfg = configFrom(opts);
  // The cluster's shared secret for peer connections, from the environment (not the config
  // file, which is often shared more widely); `chainkv start` passes its environment on.
  const peerSecret = process.env.CHAINKV_PEER_SECRET || undefined;
  if (peerSecret !== undefined && peerSecret.length < MIN_SECRET_LENGTH) {
    throw new ConfigError(`CHAINKV_PEER_SECRET must be at least ${MIN_SECRET_LENGTH} characters`);
  }
  const node = await startNode(cfg, name, undefined, { peerSecret, trace: TurnTrace.fromEnv(process.env, name) });
  const stop = (): void => {
    node.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

function seedsFrom(opts: ClientOpts): string[] {
  if (opts.node !== undefined) return [opts.node];
  return configFrom(opts).nodes.map((n) => `http://${n.host}:${n.httpPort}`);
}

async function withClient<T>(opts: ClientOpts, fn: (c: ChainKvClient) => Promise<T>): Promise<T> {
  const client = await ChainKvClient.connect(seedsFrom(opts));
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

type ClientOpts = ConfigOpts & { node?: string };

function isReserved(key: string): boolean {
  return key === '*' || key === '@';
}

/** Refuses a command line before any request is sent (exit status 2, like a request error). */
function refuse(message: string): Promise<never> {
  return Promise.reject(new ChainKvError(0, 'KV_ERR_BAD_REQUEST', message));
}

function clientCommand(cmd: Command): Command {
  return withConfigOptions(cmd).option('-n, --node <url>', 'HTTP address of a node to ask first (default: every node of the config)');
}

export function buildCli(): Command {
  const program = new Command('chainkv')
    .version(VERSION)
    .description('chainkv: a Dynamo-style key-value store with chain replication');
  withConfigOptions(program.command('start').description('start a local cluster (five nodes by default) in the foreground')).action(startCluster);
  withConfigOptions(program.command('node').description('run one node of the cluster in the foreground'))
    .requiredOption('--name <name>', 'node name (default cluster: 5554, 5556, 5558, 5560, 5562)')
    .action((o: ConfigOpts & { name: string }) => runNode(o.name, o));
  clientCommand(program.command('put').argument('<key>').argument('<value>').description('insert or overwrite a key')).action(
    (key: string, value: string, o: ClientOpts) => {
      if (isReserved(key)) return refuse(`the keys "*" and "@" are reserved (they mean all pairs and a node's pairs) and cannot be written`);
      return withClient(o, async (c) => {
        await c.put(key, value);
        console.log('OK');
      });
    },
  );
  clientCommand(program.command('get').argument('<key>').description('print the value of a key')).action((key: string, o: ClientOpts) => {
    if (isReserved(key)) return refuse(`"${key}" is not a key: list every pair with "chainkv all", a node's pairs with "chainkv local NODE"`);
    return withClient(o, async (c) => {
      const v = await c.get(key);
      if (v === null) {
        console.error(`(not found) ${key}`);
        process.exitCode = 1;
      } else process.stdout.write(v.toString('utf8') + '\n');
    });
  });
  clientCommand(
    program
      .command('del')
      .argument('<key>')
      .description('delete a key ("*": every pair in the cluster; "@" with --node URL: every pair stored on that node, from every replica)'),
  ).action((key: string, o: ClientOpts) => {
    if (key === '@' && o.node === undefined) {
      return refuse('"del @" deletes every pair stored on one node: name the node with --node URL (e.g. chainkv del @ --node http://127.0.0.1:8001)');
    }
    return withClient(o, async (c) => {
      if (key === '*') {
        await c.deleteAll();
        console.log('deleted every key');
      } else if (key === '@') {
        await c.deleteLocal(c.seedNode);
        console.log(`deleted every pair stored on node ${c.seedNode} (its partitions, on every replica)`);
      } else console.log((await c.del(key)) ? 'deleted' : '(did not exist)');
    });
  });
  clientCommand(program.command('all').description('print every pair in the cluster (query "*")')).action((o: ConfigOpts) =>
    withClient(o, async (c) => {
      let n = 0;
      for await (const p of c.all()) {
        console.log(`${p.key}\t${p.value}`);
        n++;
      }
      console.error(`(${n} pairs)`);
    }),
  );
  clientCommand(program.command('local').argument('<node>').description('print every pair stored on one node, replicas included (query "@")')).action(
    (node: string, o: ConfigOpts) =>
      withClient(o, async (c) => {
        let n = 0;
        for await (const p of c.local(node)) {
          console.log(`${p.key}\t${p.value}`);
          n++;
        }
        console.error(`(${n} pairs on ${node})`);
      }),
  );
  clientCommand(program.command('status').description('show the ring, the chains and every node')).action((o: ConfigOpts) =>
    withClient(o, async (c) => {
      const info = await c.cluster();
      // Each node's own view of its partitions (pairs stored, catch-up progress), if it answers
      // within 2 s (a paused node would not answer at all).
      const within = <T,>(p: Promise<T>, ms: number): Promise<T | undefined> =>
        Promise.race([p.catch(() => undefined), delay(ms, undefined, { ref: false })]);
      const theirs = new Map(await Promise.all(info.nodes.map(async (n) => [n.name, await within(c.cluster(n.name), 2000)] as const)));
      console.log(`cluster ${info.cluster}, epoch ${info.epoch}, replication ${info.replication}`);
      for (const n of info.nodes) {
        const local = theirs.get(n.name)?.local;
        const pairs = local === undefined ? 'keys ?' : `keys ${local.reduce((sum, x) => sum + x.pairs, 0)}`;
        console.log(`  ${n.name.padEnd(8)} ${n.state.padEnd(8)} ${n.http.padEnd(24)} resp ${n.resp}  ring ${n.position.slice(0, 8)}  ${pairs}`);
      }
      console.log('partitions (head -> tail):');
      for (const p of info.partitions) {
        console.log(`  ${String(p.partition).padStart(3)} owner ${p.owner.padEnd(8)} ${(p.share * 100).toFixed(1).padStart(5)}%  ${p.serving.join(' -> ')}`);
      }
      const cfg = info.configuration;
      console.log(`configuration: leader ${cfg.leader ?? '(none known)'}, term ${cfg.term}, view ${info.epoch} (as seen by ${info.self})`);
      for (const [name, theirInfo] of theirs) {
        const a = theirInfo?.configuration.startedWithoutState;
        if (a === undefined) continue;
        const what =
          a.waitingFor.length > 0
            ? `waiting for ${a.waitingFor.join(', ')} to answer before it votes or serves`
            : a.rejoin
              ? 'copying its data back before it serves'
              : 'waiting for the leader to bring its configuration log up to date before it votes';
        console.log(`  ${name} started without state (empty data directory): ${what}`);
      }
      for (const n of info.nodes) {
        if (n.state === 'up') continue;
        const local = theirs.get(n.name)?.local;
        if (local === undefined) {
          console.log(`  ${n.name} is ${n.state} and does not answer`);
          continue;
        }
        const progress = local.map((x) => `partition ${x.partition}: ${x.mode} ${x.committed}${x.catchupTarget !== undefined ? `/${x.catchupTarget}` : ''}`);
        console.log(`  ${n.name} is ${n.state}: ${progress.join(', ')}`);
      }
    }),
  );
  clientCommand(program.command('verify').description('compare per-partition digests across the members of every chain'))
    .option('--tries <n>', 'attempts while writes are in flight', '10')
    .action((o: ConfigOpts & { tries: string }) => withClient(o, (c) => verify(c, Number(o.tries))));
  return program;
}

/**
 * `chainkv verify`: asks every node for the digest of each partition it stores and compares
 * the members of every chain. Members at different committed seqs are compared again (writes
 * may be in flight) up to `tries` times. Exit code 1 if a chain's members differ.
 */
async function verify(c: ChainKvClient, tries: number): Promise<void> {
  for (let attempt = 1; attempt <= tries; attempt++) {
    const info = await c.cluster();
    const byPartition = new Map<number, { node: string; committed: number; digest: string; keys: number; mode: string; pending: number }[]>();
    const unreachable: string[] = [];
    for (const n of info.nodes) {
      try {
        const d = await c.digests(n.name);
        for (const x of d.partitions) byPartition.set(x.partition, [...(byPartition.get(x.partition) ?? []), x]);
      } catch {
        unreachable.push(n.name);
      }
    }
    let differ = 0;
    let unsettled = 0;
    const lines: string[] = [];
    for (const p of info.partitions) {
      const members = (byPartition.get(p.partition) ?? []).filter((m) => m.mode === 'member');
      const others = (byPartition.get(p.partition) ?? []).filter((m) => m.mode !== 'member').map((m) => `${m.node} (${m.mode})`);
      const seqs = new Set(members.map((m) => m.committed));
      const digests = new Set(members.map((m) => m.digest));
      const busy = seqs.size > 1 || members.some((m) => m.pending > 0);
      const note = others.length > 0 ? `; not compared: ${others.join(', ')}` : '';
      if (digests.size <= 1 && !busy) {
        lines.push(`  partition ${p.partition} (${p.chain.join(' -> ')}): ${members.length} members agree, ${members[0]?.keys ?? 0} keys at seq ${members[0]?.committed ?? 0}${note}`);
      } else if (busy) {
        unsettled++;
        lines.push(`  partition ${p.partition}: writes in flight (seqs ${[...seqs].join(', ')})${note}`);
      } else {
        differ++;
        lines.push(`  partition ${p.partition}: DIFFER at seq ${[...seqs][0]}: ${members.map((m) => `${m.node}=${m.digest.slice(0, 10)} (${m.keys} keys)`).join(', ')}${note}`);
      }
    }
    if (unsettled > 0 && attempt < tries) {
      await new Promise((r) => setTimeout(r, 300));
      continue;
    }
    console.log(`verify (view ${info.epoch}${unreachable.length > 0 ? `, unreachable: ${unreachable.join(', ')}` : ''}):`);
    for (const l of lines) console.log(l);
    if (differ > 0) {
      console.log(`${differ} partition(s) differ across their chain`);
      process.exitCode = 1;
    } else if (unsettled > 0) {
      console.log(`${unsettled} partition(s) kept changing during ${tries} attempts; no difference seen`);
      process.exitCode = 3;
    } else console.log('all chains agree');
    return;
  }
}

/** Runs the CLI; `bin` is the path of bin/chainkv.mjs (the bundle does not know where it is). */
export async function main(argv: string[], bin?: string): Promise<void> {
  if (bin !== undefined) BIN = bin;
  try {
    await buildCli().parseAsync(argv);
  } catch (err) {
    if (err instanceof ConfigError || err instanceof ChainKvError) {
      console.error(`chainkv: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
}
