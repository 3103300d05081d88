/**
 * Coalescing of one turn's outputs. Under load a node handles many inputs per event-loop turn,
 * and each write produces its own `fwd` to the successor and its own `ack` to the predecessor:
 * measured at c=64 on the benchmark's busiest node, about eight `fwd` and twelve `ack`
 * messages per turn went to the same peer for the same partition. Each costs an encoding,
 * a frame, a decoding and a handler call at the receiver, whose handler then sends one
 * message per message received. Merged, a turn sends one of each per (peer, partition).
 *
 * Why this is safe: the protocol already tolerates messages that are lost, duplicated or
 * reordered (the simulator injects all three), and merging amounts to delivering some
 * messages a little later, or not at all, in a way that loses nothing:
 *  - `ack` carries a cumulative seq, so an earlier ack is covered by the later one, which is
 *    kept where it was (later in the turn) with the larger seq; it is durable if either was,
 *    so it never goes out before a commit it acknowledges is on disk.
 *  - `fwd` entries of the same partition and epoch that continue each other (seq n+1 after n)
 *    are appended to the first message, which the receiver handles exactly as it would have
 *    handled the two in a row. Any other message to the same peer in between, other than a
 *    `fwd` or `ack` of another partition, ends the merging, so a merged message never
 *    overtakes anything that could depend on it.
 * A merged `fwd` holds at most MAX_MERGED_ENTRIES entries and MAX_MERGED_BYTES of keys and
 * values, well under the transport's frame limit.
 */
import { itemsBytes } from './store.ts';
import type { Entry } from './store.ts';
import type { Output } from './replica.ts';

export const MAX_MERGED_ENTRIES = 1000;
export const MAX_MERGED_BYTES = 4 * 1024 * 1024;

type SendOutput = Extract<Output, { type: 'send' }>;

interface FwdGroup {
  /** Index of the first fwd of the group, which receives the merged entries. */
  index: number;
  e: number;
  entries: Entry[];
  bytes: number;
  merged: boolean;
}

/** Merges the `fwd` and `ack` outputs of one turn as described above; other outputs are kept as they are, in order. */
export function coalesce(outputs: Output[]): Output[] {
  // Fast path: a turn with at most one send needs nothing.
  let sends = 0;
  for (const o of outputs) if (o.type === 'send' && ++sends > 1) break;
  if (sends <= 1) return outputs;

  const keep: (Output | null)[] = outputs.slice();
  const groups: FwdGroup[] = [];
  /** Per peer, by partition: the open fwd group, and the index of the last ack. */
  const openFwd = new Map<string, Map<number, FwdGroup>>();
  const lastAck = new Map<string, Map<number, number>>();
  const of = <V>(m: Map<string, Map<number, V>>, to: string): Map<number, V> => {
    let x = m.get(to);
    if (x === undefined) m.set(to, (x = new Map()));
    return x;
  };

  for (let i = 0; i < keep.length; i++) {
    const o = keep[i]!;
    if (o.type !== 'send') continue;
    const msg = o.msg;
    if (msg.t === 'fwd') {
      const open = of(openFwd, o.to);
      const g = open.get(msg.p);
      const bytes = itemsBytes(msg.entries);
      const first = msg.entries[0];
      const last = g?.entries[g.entries.length - 1];
      if (
        g !== undefined &&
        !o.durable &&
        g.e === msg.e &&
        first !== undefined &&
        last !== undefined &&
        first.seq === last.seq + 1 &&
        g.entries.length + msg.entries.length <= MAX_MERGED_ENTRIES &&
        g.bytes + bytes <= MAX_MERGED_BYTES
      ) {
        for (const entry of msg.entries) g.entries.push(entry);
        g.bytes += bytes;
        g.merged = true;
        keep[i] = null;
      } else if (o.durable) {
        open.delete(msg.p);
      } else {
        const fresh: FwdGroup = { index: i, e: msg.e, entries: msg.entries.slice(), bytes, merged: false };
        groups.push(fresh);
        open.set(msg.p, fresh);
      }
      continue;
    }
    if (msg.t === 'ack') {
      const acks = of(lastAck, o.to);
      const j = acks.get(msg.p);
      const prev = j === undefined ? null : keep[j];
      if (prev !== null && prev !== undefined && prev.type === 'send' && prev.msg.t === 'ack' && prev.msg.e === msg.e) {
        keep[i] = { type: 'send', to: o.to, msg: { ...msg, seq: Math.max(msg.seq, prev.msg.seq) }, durable: o.durable || prev.durable };
        keep[j!] = null;
      }
      acks.set(msg.p, i);
      // An ack to a peer ends merging of fwds to it for the same partition (never both in a
      // well-formed chain, but the rule costs nothing).
      openFwd.get(o.to)?.delete(msg.p);
      continue;
    }
    // Anything else to this peer is a barrier for both kinds.
    openFwd.delete(o.to);
    lastAck.delete(o.to);
  }

  for (const g of groups) {
    if (!g.merged) continue;
    const o = keep[g.index] as SendOutput;
    const msg = o.msg as Extract<SendOutput['msg'], { t: 'fwd' }>;
    keep[g.index] = { ...o, msg: { ...msg, entries: g.entries } };
  }
  return keep.filter((o): o is Output => o !== null);
}
