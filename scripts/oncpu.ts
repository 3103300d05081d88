/**
 * Where the nodes' CPU goes, from an on-CPU profile of the whole machine: reads the output of
 * `perf script` on stdin and prints, for the samples of `node` processes, the share of each
 * part of a turn (bench/analysis.md cites it). V8's own profiler (`--cpu-prof`) samples wall
 * time, so a process waiting for a core is charged to whatever it was running; perf's
 * `cpu-clock` event counts only time on a CPU, kernel included.
 *
 *   NODE_OPTIONS=--perf-basic-prof node --import tsx scripts/probe.ts writes --concurrency 64 --duration 10 --skip-preload &
 *   sleep 6; perf record -a -e cpu-clock -F 1999 -g -o /tmp/perf.data -- sleep 4; wait
 *   perf script -i /tmp/perf.data | node --import tsx scripts/oncpu.ts
 *
 * (`perf` is Debian's linux-perf; --perf-basic-prof makes V8 write the names of its compiled
 * functions to /tmp/perf-<pid>.map, which `perf script` reads. The nodes inherit NODE_OPTIONS.)
 * The probe's generator runs in a node process too; its samples are counted apart.
 */
import { createInterface } from 'node:readline';

/** First matching rule names a sample's part; a rule matches if any frame of its stack matches one of its patterns. */
const PARTS: [string, (string | RegExp)[]][] = [
  ['load generator (bench/)', ['/bench/']],
  // LmdbStore.commit (src/runtime/storage.ts), in the bundle: a committed entry's kv record, log row and count.
  ['turn: protocol core, storage writes of commits (LMDB puts and reads)', [/JS:[*^~]?commit file:\S*\/dist\//]],
  ['turn: protocol core, the rest', ['stepAll']],
  ['turn: storage transaction outside the core (redo record, LMDB commit)', ['transactionSync']],
  ['turn: outputs (frames, socket writes)', ['dispatch', 'flushPeer', 'flushAfterTurn']],
  ['turn: other', ['drain dist']],
  ['socket reads, frame and RESP decoding', ['onStreamRead', 'onInboundData']],
  ['fdatasync (thread pool)', ['fdatasync', 'uv__fs_work']],
  // NodeRuntime's handler of a finished sync (JS frames only: the kernel's release_sock is not it).
  ['after an fdatasync: release of held outputs', [/JS:[*^~]?(release|store\.sync\S*) file:/]],
  ['garbage collection', ['Scavenge', 'MarkCompact', 'ConcurrentMarking', 'Sweeper', 'Heap::', 'ArrayBufferSweeper']],
  ['JIT compiler', ['compiler::', 'Compile', 'Maglev']],
  ['epoll (waiting for and waking on events)', ['epoll', 'uv__io_poll']],
];

const counts = new Map<string, number>();
let total = 0;
let idle = 0;
let nodeSamples = 0;
let comm: string | null = null;
let frames: string[] = [];

function endSample(): void {
  if (comm === null) return;
  total++;
  if (comm === 'swapper') idle++;
  else if (comm === 'node') {
    nodeSamples++;
    let part = 'other';
    for (const [name, needles] of PARTS) {
      if (frames.some((f) => needles.some((n) => (typeof n === 'string' ? f.includes(n) : n.test(f))))) {
        part = name;
        break;
      }
    }
    counts.set(part, (counts.get(part) ?? 0) + 1);
  }
  comm = null;
  frames = [];
}

for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() === '') endSample();
  else if (!/^\s/.test(line)) {
    endSample();
    comm = line.trim().split(/\s+/)[0] ?? null;
  } else frames.push(line);
}
endSample();

if (total === 0) {
  process.stderr.write('no samples on stdin: pipe `perf script` into this script (see its header)\n');
  process.exit(1);
}
const pct = (n: number, of: number): string => `${((100 * n) / of).toFixed(1)}%`;
console.log(`${total} samples: idle ${pct(idle, total)}, node processes ${pct(nodeSamples, total)}`);
console.log('of the node processes\' samples:');
for (const [part, n] of [...counts].sort((a, b) => b[1] - a[1])) console.log(`  ${pct(n, nodeSamples).padStart(6)}  ${part}`);
