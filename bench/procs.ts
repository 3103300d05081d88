import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Server processes of the benchmark. Every server is started in a process group of its own
 * (detached), its output goes to a log file, and it is registered until it exits, so that
 * `killEverything()` can SIGKILL every group synchronously: on Ctrl-C, on SIGTERM, on an
 * uncaught error and on exit. Temporary directories are registered too and removed at exit
 * (unless kept for a post-mortem).
 */
const live = new Set<ServerProcess>();
const tmpDirs = new Set<string>();
let keepTmp = false;

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class ServerProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<ExitInfo>;
  exitInfo: ExitInfo | undefined;
  /** Set when the benchmark itself kills or stops the process (an exit is then expected). */
  stopping = false;
  readonly startedAt = performance.now();

  constructor(readonly label: string, command: string, args: readonly string[], readonly logFile: string) {
    const fd = openSync(logFile, 'a');
    try {
      this.child = spawn(command, args, { detached: true, stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    if (this.child.pid === undefined) throw new Error(`${label}: could not start ${command}`);
    this.pid = this.child.pid;
    live.add(this);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        live.delete(this);
        resolve(this.exitInfo);
      });
    });
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  /** Signals the whole process group (the server and anything it started). */
  signal(sig: NodeJS.Signals): void {
    if (!this.running) return;
    try {
      process.kill(-this.pid, sig);
    } catch {
      // already gone
    }
  }

  /** An exit the benchmark did not ask for (a crash), described; undefined otherwise. */
  get crash(): string | undefined {
    if (this.exitInfo === undefined || this.stopping) return undefined;
    return `${this.label} (pid ${this.pid}) exited by itself (${this.exitInfo.signal ?? `code ${String(this.exitInfo.code)}`})`;
  }

  async kill(): Promise<ExitInfo> {
    this.stopping = true;
    this.signal('SIGKILL');
    return this.exited;
  }

  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
  async stop(graceMs = 15_000): Promise<ExitInfo> {
    this.stopping = true;
    if (!this.running) return this.exitInfo!;
    this.signal('SIGTERM');
    const timer = setTimeout(() => this.signal('SIGKILL'), graceMs);
    const info = await this.exited;
    clearTimeout(timer);
    // Anything left in the group (children of the server) goes too.
    try {
      process.kill(-this.pid, 'SIGKILL');
    } catch {
      // group empty
    }
    return info;
  }

  tail(lines = 20): string {
    try {
      return readFileSync(this.logFile, 'utf8').split('\n').slice(-lines - 1).join('\n');
    } catch {
      return '';
    }
  }
}

export function killEverything(): void {
  for (const p of live) {
    try {
      process.kill(-p.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

export function makeTmpDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tmpDirs.add(d);
  return d;
}

export function keepTmpDirs(): void {
  keepTmp = true;
}

export function removeTmpDirs(): void {
  if (keepTmp) return;
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
  tmpDirs.clear();
}

let installed = false;
/** Kills every server and removes temporary directories on exit, Ctrl-C, SIGTERM and crashes. */
export function installCleanup(): void {
  if (installed) return;
  installed = true;
  process.on('exit', () => {
    killEverything();
    removeTmpDirs();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      console.error(`\nbench: ${sig}, stopping every server`);
      killEverything();
      removeTmpDirs();
      process.exit(130);
    });
  }
  process.on('uncaughtException', (err) => {
    console.error('bench: uncaught exception:', err);
    killEverything();
    process.exit(1);
  });
  process.on('unhandledRejection', (err) => {
    console.error('bench: unhandled rejection:', err);
    killEverything();
    process.exit(1);
  });
}

export { freePorts, localClusterConfig, localNodes } from '../test/support/ports.ts';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Installs a Debian package when `binary` is missing (we run as root). */
export function ensureDebianPackage(binary: string, pkg: string, log: (s: string) => void): void {
  if (existsSync(binary)) return;
  log(`${binary} is missing: apt-get install -y ${pkg}`);
  let r = spawnSync('apt-get', ['install', '-y', pkg], { stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  if (r.status !== 0 || !existsSync(binary)) {
    spawnSync('apt-get', ['update'], { stdio: 'ignore' });
    r = spawnSync('apt-get', ['install', '-y', pkg], { stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  }
  if (!existsSync(binary)) throw new Error(`could not install ${pkg} (apt-get exit ${String(r.status)}); install it and run again`);
}

// ---- /proc sampling: peak RSS and CPU time of server processes ----

export interface MemSample {
  /** Peak resident set (VmHWM), KiB. */
  hwmKb: number;
  rssKb: number;
  anonKb: number;
  fileKb: number;
}

export function readMem(pid: number): MemSample | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const field = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text);
    return m === null ? 0 : Number(m[1]);
  };
  return { hwmKb: field('VmHWM'), rssKb: field('VmRSS'), anonKb: field('RssAnon'), fileKb: field('RssFile') };
}

const TICKS = 100; // USER_HZ on Linux

/** User + system CPU seconds of a process so far (undefined once it is gone). */
export function readCpuSeconds(pid: number): number | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // fields after the command: state(3) ... utime(14) stime(15) -> indexes 11, 12 here
  return (Number(rest[11]) + Number(rest[12])) / TICKS;
}

export interface PeakMem {
  label: string;
  pid: number;
  hwmKb: number;
  maxRssKb: number;
  maxAnonKb: number;
  maxFileKb: number;
}

/** Polls /proc/<pid>/status of every watched process every `intervalMs` and keeps the peaks. */
export class MemMonitor {
  private readonly peaks = new Map<string, PeakMem>();
  private readonly watched = new Map<string, { label: string; pid: number }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly intervalMs = 200) {}

  watch(label: string, pid: number): void {
    this.watched.set(`${label}#${pid}`, { label, pid });
    this.sample();
  }

  unwatch(label: string, pid: number): void {
    this.sample();
    this.watched.delete(`${label}#${pid}`);
  }

  start(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    this.sample();
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  sample(): void {
    for (const [k, w] of this.watched) {
      const m = readMem(w.pid);
      if (m === undefined) continue;
      const p = this.peaks.get(k) ?? { label: w.label, pid: w.pid, hwmKb: 0, maxRssKb: 0, maxAnonKb: 0, maxFileKb: 0 };
      p.hwmKb = Math.max(p.hwmKb, m.hwmKb);
      p.maxRssKb = Math.max(p.maxRssKb, m.rssKb);
      p.maxAnonKb = Math.max(p.maxAnonKb, m.anonKb);
      p.maxFileKb = Math.max(p.maxFileKb, m.fileKb);
      this.peaks.set(k, p);
    }
  }

  /** Peaks per label (the largest over the label's processes, e.g. across restarts). */
  results(): PeakMem[] {
    const byLabel = new Map<string, PeakMem>();
    for (const p of this.peaks.values()) {
      const q = byLabel.get(p.label);
      if (q === undefined || p.hwmKb > q.hwmKb) byLabel.set(p.label, { ...p });
    }
    return [...byLabel.values()];
  }
}
