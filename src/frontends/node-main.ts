import { pino } from 'pino';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { KvApi } from '../runtime/api.ts';
import type { ClusterConfig } from '../runtime/config.ts';
import { nodeAddress } from '../runtime/config.ts';
import { NodeRuntime } from '../runtime/node.ts';
import type { NodeOptions } from '../runtime/node.ts';
import { HttpServer } from './http.ts';
import { RespServer } from './resp/server.ts';
import { VERSION } from './version.ts';

/** A running node with its front ends. */
export interface RunningNode {
  runtime: NodeRuntime;
  api: KvApi;
  http: HttpServer;
  resp: RespServer;
  ports: { http: number; resp: number };
  stop(): Promise<void>;
}

function metricsFor(runtime: NodeRuntime, resp: RespServer): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ node: runtime.name });
  collectDefaultMetrics({ register: registry });
  const c = runtime.counters;
  const counter = (name: string, help: string, read: () => number): void => {
    let last = 0;
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        const v = read();
        this.inc(v - last);
        last = v;
      },
    });
  };
  counter('chainkv_client_requests_total', 'Client requests submitted to the core', () => c.requests);
  counter('chainkv_core_steps_total', 'Inputs stepped through the protocol core', () => c.steps);
  counter('chainkv_fsync_batches_total', 'Group commits that waited for fdatasync', () => c.fsyncs);
  counter('chainkv_peer_messages_in_total', 'Peer messages received', () => c.messagesIn);
  counter('chainkv_resp_commands_total', 'RESP commands processed', () => resp.stats.commands);
  new Gauge({
    name: 'chainkv_partition_committed_seq',
    help: 'Highest committed sequence number per partition held here',
    labelNames: ['partition'],
    registers: [registry],
    collect() {
      for (const p of runtime.replica.partitions()) this.set({ partition: String(p.partition) }, p.committed);
    },
  });
  // Every request waits for the turns it crosses: a long turn (a collection pause, or the
  // process waiting for a core) shows up in the tail latency of everything in it.
  const turns = new Histogram({
    name: 'chainkv_turn_duration_seconds',
    help: 'Wall time of each event-loop turn that steps the protocol core (its inputs, the storage transaction, the outputs)',
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.4],
    registers: [registry],
  });
  runtime.onTurn = (ms) => turns.observe(ms / 1000);
  // On the path of every durable write: the tail answers only once its commit is on disk.
  const syncs = new Histogram({
    name: 'chainkv_fsync_wait_seconds',
    help: 'Wall time from a group commit asking for fdatasync to its outputs being released (the fdatasync in the thread pool, and the wait for one already running)',
    buckets: [0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.4],
    registers: [registry],
  });
  runtime.onSync = (ms) => syncs.observe(ms / 1000);
  new Gauge({
    name: 'chainkv_view_epoch',
    help: 'Epoch of the view this node acts on',
    registers: [registry],
    collect() {
      this.set(runtime.replica.currentView.epoch);
    },
  });
  return registry;
}

export async function startNode(config: ClusterConfig, name: string, logger?: Logger, opts: NodeOptions = {}): Promise<RunningNode> {
  const me = nodeAddress(config, name);
  const log = logger ?? pino({ level: config.logLevel, base: { node: name } });
  const runtime = new NodeRuntime(config, name, log, opts);
  const api = new KvApi(runtime);
  const resp = new RespServer(api, { host: me.host, port: me.respPort, logger: log.child({ component: 'resp' }), version: VERSION });
  const http = new HttpServer(api, { host: me.host, port: me.httpPort, logger: log.child({ component: 'http' }), metrics: metricsFor(runtime, resp) });
  await runtime.start();
  const ports = { http: await http.listen(), resp: await resp.listen() };
  log.info({ http: `http://${me.host}:${ports.http}`, resp: `${me.host}:${ports.resp}`, peer: `${me.host}:${runtime.transport.port}` }, `node ${name} serving`);
  let stopped: Promise<void> | null = null;
  return {
    runtime,
    api,
    http,
    resp,
    ports,
    stop() {
      stopped ??= (async () => {
        await Promise.all([http.close(), resp.close()]);
        await runtime.stop();
        log.info(`node ${name} stopped`);
      })();
      return stopped;
    },
  };
}
