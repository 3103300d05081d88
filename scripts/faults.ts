/**
 * Fault injection on a real five-process cluster:
 *   node --import tsx scripts/faults.ts [--duration 60] [--clients 12] [--keys 8] [--seed N]
 *
 * Concurrent clients on a small hot key set while a nemesis kills (SIGKILL) and restarts,
 * pauses (SIGSTOP) and resumes, and isolates (TCP proxies) and heals one node at a time:
 * the head, middle and tail of the chain of "a", random nodes, and a node in the middle of
 * catch-up. Then everything heals, every key is read through every node, the history is
 * checked for linearizability, lost acknowledged writes and returning deletes, and every
 * chain's members must hold the same pairs. See test/support/faults.ts.
 *
 * Options: --min-faults N (keep going until N faults are done), --keep-history (write the
 * history even when the run passes), --verbose (node logs on stderr).
 * Exit code 0 only with zero violations, agreeing chains and no other problem.
 */
import { parseArgs } from 'node:util';
import { formatReport, runFaults } from '../test/support/faults.ts';

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '60' },
    clients: { type: 'string', default: '12' },
    keys: { type: 'string', default: '8' },
    seed: { type: 'string' },
    'min-faults': { type: 'string', default: '0' },
    'keep-history': { type: 'boolean', default: false },
    verbose: { type: 'boolean', default: false },
  },
});

function positive(name: string, raw: string, min = 1): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) {
    console.error(`--${name} must be an integer of at least ${min}, got "${raw}"`);
    process.exit(2);
  }
  return n;
}

const seed = values.seed === undefined ? Math.floor(Math.random() * 1_000_000) : positive('seed', values.seed, 0);
const durationS = positive('duration', values.duration);
const clients = positive('clients', values.clients);
const keys = positive('keys', values.keys);
const minFaults = positive('min-faults', values['min-faults'], 0);

const started = Date.now();
console.log(`faults: seed ${seed}, ${durationS} s, ${clients} clients, ${keys} keys`);
const report = await runFaults({
  durationMs: durationS * 1000,
  clients,
  keys,
  seed,
  minFaults,
  keepHistory: values['keep-history'],
  nodeLogs: values.verbose,
  log: (line) => console.log(line),
});
console.log('');
console.log(formatReport(report));
console.log(`(${((Date.now() - started) / 1000).toFixed(0)} s in all; replay the schedule with --seed ${seed})`);
process.exit(report.ok ? 0 : 1);
