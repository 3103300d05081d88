import { readFileSync } from 'node:fs';

/**
 * Summarises a V8 .cpuprofile (as written by `node --cpu-prof`): self time per function,
 * summed over every profile node with the same function name, script and line (the same
 * function reached through different call paths), largest first.
 */
interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface SelfTime {
  /** "functionName url:line" (url shortened to the part after the project root or node_modules). */
  fn: string;
  selfMs: number;
  /** Share of the profile's busy time (sampled time less idle). */
  share: number;
}

export interface ProfileSummary {
  totalMs: number;
  /** Sampled time outside (idle), i.e. waiting in the event loop. */
  idleMs: number;
  /** The busiest functions by self time, idle excluded. */
  top: SelfTime[];
}

export function shortenUrl(url: string, root: string): string {
  let u = url.replace(/^file:\/\//, '');
  const nm = u.lastIndexOf('/node_modules/');
  if (nm >= 0) u = u.slice(nm + 1);
  else if (u.startsWith(root)) u = u.slice(root.length).replace(/^\//, '');
  return u;
}

export function summariseProfile(file: string, root: string, topN = 15): ProfileSummary {
  const prof = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  for (const n of prof.nodes) byId.set(n.id, n);
  const selfUs = new Map<number, number>();
  const samples = prof.samples ?? [];
  const deltas = prof.timeDeltas ?? [];
  // timeDeltas[i] is the time before sample i; attribute the interval after a sample to it
  // (as Chrome DevTools does), the last sample getting the remaining time up to endTime.
  let t = prof.startTime;
  const times: number[] = [];
  for (let i = 0; i < samples.length; i++) {
    t += deltas[i] ?? 0;
    times.push(t);
  }
  for (let i = 0; i < samples.length; i++) {
    const dur = (i + 1 < samples.length ? times[i + 1]! : prof.endTime) - times[i]!;
    const id = samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + Math.max(0, dur));
  }
  const byFn = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (n === undefined) continue;
    total += us;
    const cf = n.callFrame;
    const name = cf.functionName === '' ? '(anonymous)' : cf.functionName;
    if (name === '(idle)') {
      idle += us;
      continue;
    }
    const where = cf.url === '' ? '' : ` ${shortenUrl(cf.url, root)}:${cf.lineNumber + 1}`;
    const key = `${name}${where}`;
    byFn.set(key, (byFn.get(key) ?? 0) + us);
  }
  const top = [...byFn.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, topN)
    .map(([fn, us]) => ({ fn, selfMs: us / 1000, share: total - idle <= 0 ? 0 : us / (total - idle) }));
  return { totalMs: total / 1000, idleMs: idle / 1000, top };
}
