import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Input, Output } from '../core/replica.ts';

/**
 * An opt-in record of a node's event-loop turns, for finding where a request's time goes
 * (`scripts/probe.ts timeline` reads it; docs/benchmarks.md cites what it found). With
 * `CHAINKV_TURN_TRACE=DIR` in a node's environment, the node notes, with a wall-clock time
 * in microseconds (comparable across the processes of one machine), every input as it
 * arrives, the start of each turn, what the core decided, each fdatasync and the outputs it
 * released, and each client reply; it writes them to `DIR/<name>.trace` when the process
 * exits. Memory grows with every event (up to `MAX_EVENTS`), so this is for short diagnostic
 * runs, never for production.
 */
export class TurnTrace {
  static readonly MAX_EVENTS = 2_000_000;
  private readonly events: string[] = [];

  constructor(
    private readonly file: string,
    private readonly name: string,
  ) {
    process.once('exit', () => {
      try {
        this.write();
      } catch (err) {
        // A diagnostic must not change how the process ends.
        process.stderr.write(`turn trace: could not write ${this.file}: ${(err as Error).message}\n`);
      }
    });
  }

  static fromEnv(env: NodeJS.ProcessEnv, name: string): TurnTrace | undefined {
    const dir = env.CHAINKV_TURN_TRACE?.trim();
    return dir === undefined || dir === '' ? undefined : new TurnTrace(join(dir, `${name}.trace`), name);
  }

  /** One event: `<time µs> <node> <what> <detail>`. */
  note(what: string, detail = ''): void {
    if (this.events.length >= TurnTrace.MAX_EVENTS) return;
    this.events.push(`${((performance.timeOrigin + performance.now()) * 1000).toFixed(0)} ${this.name} ${what} ${detail}`);
  }

  write(): void {
    writeFileSync(this.file, this.events.join('\n') + '\n');
  }
}

/** `fwd<5558`, `client:put`: an input's kind and, for a message, its sender. */
export function describeInput(i: Input): string {
  switch (i.type) {
    case 'message':
      return `${i.msg.t}<${i.from}`;
    case 'client':
      return `client:${i.req.op}`;
    default:
      return i.type;
  }
}

/** `fwd>5560`, `wres>5558!`, `reply`: an output's kind and destination; `!` waits for an fdatasync. */
export function describeOutput(o: Output): string {
  const gate = o.type !== 'log' && o.durable ? '!' : '';
  return o.type === 'send' ? `${o.msg.t}>${o.to}${gate}` : o.type === 'reply' ? `reply${gate}` : 'log';
}
