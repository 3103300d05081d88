/** How a node's process is started: Node and V8 options (memory against CPU). */

/**
 * V8 flags a node runs with. By default the old generation may grow to twice what the last
 * full collection left live (V8 otherwise allows up to four times when collections are fast),
 * the same policy as Go's GOGC=100 that etcd runs with. On the benchmark's busiest node,
 * loading 1M keys, it cut the peak anonymous memory from about 230 to 147 MiB with no
 * measurable change in writes per second at c=64 (docs/benchmarks.md). `CHAINKV_V8_FLAGS`
 * comes after, so its flags win.
 */
export const DEFAULT_NODE_V8_FLAGS = '--heap-growing-percent=100';

/**
 * Options for a node's `node` process, given when it starts: V8 sizes its young generation
 * when it sets up its heap, so these cannot go through `setFlagsFromString` as the flags above
 * do. With semi-spaces of at most 8 MiB instead of 16, the busiest node's peak RSS loading the
 * benchmark's 1M keys fell from 366 to 347 MiB, and writes per second at c=64 did not change
 * measurably; 4 MiB saved 32 MiB but cost 4-5% of the writes (docs/benchmarks.md). Every
 * launcher here (`chainkv start`, the benchmark, the test harness) passes them; a node
 * started by hand runs with Node's defaults unless given them (`node --max-semi-space-size=8
 * bin/chainkv.mjs node ...`, or NODE_OPTIONS).
 */
export const NODE_PROCESS_FLAGS: readonly string[] = ['--max-semi-space-size=8'];

export function nodeV8Flags(env: NodeJS.ProcessEnv): string[] {
  const extra = env.CHAINKV_V8_FLAGS?.trim();
  return extra === undefined || extra === '' ? [DEFAULT_NODE_V8_FLAGS] : [DEFAULT_NODE_V8_FLAGS, extra];
}
