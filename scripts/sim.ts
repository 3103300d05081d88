/**
 * The simulator from the command line:
 *   npm run sim -- --seeds 100000            many seeds (default from 1)
 *   npm run sim -- --seed 4711 --verbose     replay one seed with the nodes' logs and the fault timeline
 * Options: --from N, --duration MS (virtual load time per seed), --clients N, --no-faults,
 * --trace-key K (with --verbose: every delivered message about key K, and every view change),
 * --keep-log-seqs N, --id-horizon-ms MS (request ids storage keeps per partition, by count and
 * by time since commit; defaults 200,000 and requestTimeoutMs + 1 s), --wipes (a quarter of the
 * crashes come back with an empty disk), --raft-log-keep N (committed Raft entries kept when the
 * log is compacted; default 256, 1 makes lagging followers get snapshots).
 * Exit code 1 if any seed fails; each failure prints the command that replays it.
 */
import { parseArgs } from 'node:util';
import { runSeed } from '../src/sim/run.ts';

const { values } = parseArgs({
  options: {
    seeds: { type: 'string', default: '100' },
    from: { type: 'string', default: '1' },
    seed: { type: 'string' },
    duration: { type: 'string', default: '6000' },
    clients: { type: 'string', default: '8' },
    'no-faults': { type: 'boolean', default: false },
    verbose: { type: 'boolean', default: false },
    'trace-key': { type: 'string', default: '' },
    'keep-log-seqs': { type: 'string' },
    'id-horizon-ms': { type: 'string' },
    wipes: { type: 'boolean', default: false },
    'raft-log-keep': { type: 'string' },
  },
});

const durationMs = Number(values.duration);
// Seqs per partition whose request ids storage keeps (default KEEP_LOG_SEQS); 0 shows what they are for.
const keep = values['keep-log-seqs'];
const horizon = values['id-horizon-ms'];
const logKeep = values['raft-log-keep'];
const timing = {
  ...(keep === undefined ? {} : { keepLogSeqs: Number(keep) }),
  ...(horizon === undefined ? {} : { idHorizonMs: Number(horizon) }),
  ...(logKeep === undefined ? {} : { logKeep: Number(logKeep) }),
};
const wipes = values.wipes;
const keepFlag = `${keep === undefined ? '' : ` --keep-log-seqs ${keep}`}${horizon === undefined ? '' : ` --id-horizon-ms ${horizon}`}${wipes ? ' --wipes' : ''}${logKeep === undefined ? '' : ` --raft-log-keep ${logKeep}`}`;
const clients = Number(values.clients);
const faults = !values['no-faults'];
const one = values.seed !== undefined;
const from = one ? Number(values.seed) : Number(values.from);
const count = one ? 1 : Number(values.seeds);
const started = Date.now();
let failed = 0;
let ops = 0;
for (let seed = from; seed < from + count; seed++) {
  const r = runSeed({ seed, durationMs, clients, faults, keepLogs: values.verbose, traceKey: values['trace-key'], timing, wipes });
  ops += r.ops;
  if (values.verbose) {
    console.log(r.logs.join('\n'));
    console.log(`faults: ${r.faults.join('; ')}`);
    console.log(`ops: ${r.okOps} ok of ${r.ops}`);
  }
  if (!r.ok) {
    failed++;
    console.log(`seed ${seed} FAILED:\n  ${r.problems.join('\n  ')}`);
    console.log(`  faults: ${r.faults.join('; ')}`);
    console.log(`  replay: npm run sim -- --seed ${seed} --duration ${durationMs} --clients ${clients}${faults ? '' : ' --no-faults'}${keepFlag} --verbose`);
  }
  const done = seed - from + 1;
  if (!one && (done % 100 === 0 || done === count)) {
    console.log(`${done}/${count} seeds, ${failed} failed, ${ops} operations checked, ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
}
process.exit(failed === 0 ? 0 : 1);
