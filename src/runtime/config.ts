import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Durability } from './storage.ts';

/**
 * Cluster configuration. The local default needs no file: five nodes named 5554..5562 on
 * 127.0.0.1 (HTTP 8001-8005, RESP 7001-7005, peers 9001-9005), data under ./data. A JSON
 * file overrides any part of it; see docs/api.md ("Configuration").
 */
export interface NodeAddress {
  name: string;
  host: string;
  httpPort: number;
  respPort: number;
  peerPort: number;
}

export interface ClusterConfig {
  /** Cluster id: peers refuse connections from another cluster. */
  cluster: string;
  nodes: NodeAddress[];
  replication: number;
  dataDir: string;
  durability: Durability;
  /** Initial size of each node's LMDB map (and sparse data file), MiB; grown when the data outgrows it. */
  mapSizeMiB: number;
  maxKeyBytes: number;
  maxValueBytes: number;
  requestTimeoutMs: number;
  retryMs: number;
  retransmitMs: number;
  tickMs: number;
  /** Raft heartbeat interval of the configuration group. */
  heartbeatMs: number;
  /** Shortest election timeout (the longest is 1.6 times it). */
  electionTimeoutMs: number;
  /** Silence after which the leader marks a node down (a refused connection marks it at once). */
  failureDetectMs: number;
  /** Length of a lease promise; a node holds its read lease slightly less (drift bound and margin). */
  leaseMs: number;
  /** Bound on the relative drift of the nodes' clock rates (0.01 = 1%). */
  clockDrift: number;
  logLevel: string;
}

export const DEFAULT_NAMES = ['5554', '5556', '5558', '5560', '5562'];

export function defaultConfig(): ClusterConfig {
  return {
    cluster: 'chainkv-local',
    nodes: DEFAULT_NAMES.map((name, i) => ({
      name,
      host: '127.0.0.1',
      httpPort: 8001 + i,
      respPort: 7001 + i,
      peerPort: 9001 + i,
    })),
    replication: 3,
    dataDir: './data',
    durability: 'fsync',
    mapSizeMiB: 1024,
    maxKeyBytes: 1024,
    maxValueBytes: 1024 * 1024,
    requestTimeoutMs: 5000,
    retryMs: 300,
    retransmitMs: 200,
    tickMs: 10,
    heartbeatMs: 50,
    electionTimeoutMs: 300,
    failureDetectMs: 400,
    leaseMs: 900,
    clockDrift: 0.01,
    logLevel: 'info',
  };
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

const KNOWN = new Set(Object.keys(defaultConfig()));
const NODE_FIELDS = ['name', 'host', 'httpPort', 'respPort', 'peerPort'];
/** pino's levels. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** Reads a JSON config file over the defaults and validates the result. */
export function loadConfig(file?: string, overrides: Partial<ClusterConfig> = {}): ClusterConfig {
  let fromFile: Record<string, unknown> = {};
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
    }
    try {
      fromFile = JSON.parse(text) as Record<string, unknown>;
    } catch (err) {
      throw new ConfigError(`config file ${file} is not valid JSON: ${(err as Error).message}`);
    }
    if (typeof fromFile !== 'object' || fromFile === null || Array.isArray(fromFile)) {
      throw new ConfigError(`config file ${file} must hold a JSON object`);
    }
    for (const k of Object.keys(fromFile)) if (!KNOWN.has(k)) throw new ConfigError(`config file ${file}: unknown setting "${k}"`);
  }
  const cfg = { ...defaultConfig(), ...fromFile, ...overrides } as ClusterConfig;
  validate(cfg);
  return cfg;
}

function validate(cfg: ClusterConfig): void {
  const fail = (m: string): never => {
    throw new ConfigError(m);
  };
  if (typeof cfg.cluster !== 'string' || cfg.cluster === '') fail(`"cluster" must be a non-empty string, got ${JSON.stringify(cfg.cluster)}`);
  if (typeof cfg.dataDir !== 'string' || cfg.dataDir === '') fail(`"dataDir" must be a non-empty string, got ${JSON.stringify(cfg.dataDir)}`);
  if (typeof cfg.logLevel !== 'string' || !LOG_LEVELS.includes(cfg.logLevel)) {
    fail(`"logLevel" must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(cfg.logLevel)}`);
  }
  if (!Array.isArray(cfg.nodes) || cfg.nodes.length === 0) fail('"nodes" must be a non-empty list');
  const names = new Set<string>();
  const endpoints = new Set<string>();
  for (const [i, n] of cfg.nodes.entries()) {
    if (typeof n !== 'object' || n === null || Array.isArray(n)) fail(`nodes[${i}] must be an object with ${NODE_FIELDS.join(', ')}`);
    for (const k of Object.keys(n)) {
      if (!NODE_FIELDS.includes(k)) fail(`nodes[${i}]: unknown field "${k}" (a node has ${NODE_FIELDS.join(', ')})`);
    }
    if (typeof n.name !== 'string' || n.name === '') fail('every node needs a "name"');
    if (names.has(n.name)) fail(`node name "${n.name}" appears twice`);
    names.add(n.name);
    if (typeof n.host !== 'string' || n.host === '') fail(`node ${n.name}: "host" is required`);
    for (const port of ['httpPort', 'respPort', 'peerPort'] as const) {
      const v = n[port];
      if (!Number.isInteger(v) || v < 0 || v > 65535) fail(`node ${n.name}: "${port}" must be a port number, got ${String(v)}`);
      const ep = `${n.host}:${v}`;
      if (v !== 0 && endpoints.has(ep)) fail(`node ${n.name}: ${ep} is used twice`);
      endpoints.add(ep);
    }
  }
  if (!Number.isInteger(cfg.replication) || cfg.replication < 1 || cfg.replication > cfg.nodes.length) {
    fail(`"replication" must be between 1 and the node count (${cfg.nodes.length}), got ${cfg.replication}`);
  }
  if (cfg.durability !== 'fsync' && cfg.durability !== 'process') fail(`"durability" must be "fsync" or "process", got "${String(cfg.durability)}"`);
  const positive = ['mapSizeMiB', 'maxKeyBytes', 'maxValueBytes', 'requestTimeoutMs', 'retryMs', 'retransmitMs', 'tickMs', 'heartbeatMs', 'electionTimeoutMs', 'failureDetectMs', 'leaseMs'] as const;
  for (const k of positive) if (!Number.isInteger(cfg[k]) || cfg[k] <= 0) fail(`"${k}" must be a positive integer, got ${String(cfg[k])}`);
  if (!(typeof cfg.clockDrift === 'number' && cfg.clockDrift >= 0 && cfg.clockDrift < 0.2)) fail(`"clockDrift" must be a number in [0, 0.2), got ${String(cfg.clockDrift)}`);
  if (cfg.heartbeatMs * 3 > cfg.electionTimeoutMs) fail(`"electionTimeoutMs" (${cfg.electionTimeoutMs}) must be at least three heartbeats (${cfg.heartbeatMs * 3})`);
  if (cfg.maxKeyBytes > 1900) fail(`"maxKeyBytes" can be at most 1900 (the storage engine's key limit), got ${cfg.maxKeyBytes}`);
  if (cfg.mapSizeMiB > 1024 * 1024) fail(`"mapSizeMiB" can be at most 1048576 (1 TiB), got ${cfg.mapSizeMiB}`);
  if (cfg.maxValueBytes > 512 * 1024 * 1024) fail(`"maxValueBytes" can be at most 512 MiB, got ${cfg.maxValueBytes}`);
}

export function nodeAddress(cfg: ClusterConfig, name: string): NodeAddress {
  const n = cfg.nodes.find((x) => x.name === name);
  if (n === undefined) throw new ConfigError(`no node named "${name}" in the configuration (nodes: ${cfg.nodes.map((x) => x.name).join(', ')})`);
  return n;
}

export function nodeDataDir(cfg: ClusterConfig, name: string): string {
  return resolve(cfg.dataDir, name);
}
