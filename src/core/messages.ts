import type { ErrorCode } from './errors.ts';
import type { Entry, EntryKind } from './store.ts';

/**
 * Peer messages. Every data-path message carries the sender's view epoch (`e`); a node
 * refuses messages of another epoch and the sender retries once its view is current.
 * Replies are addressed by request id to the node that coordinates the client request.
 */
export type PeerMsg =
  /** coordinator -> head: a write to order. */
  | { t: 'write'; e: number; id: string; p: number; kind: EntryKind; key: Buffer; value: Buffer | null; origin: string }
  /** head -> coordinator: the write committed on every member (or failed). */
  | { t: 'wres'; id: string; r: Result }
  /** predecessor -> successor: consecutive entries of a partition's history. */
  | { t: 'fwd'; e: number; p: number; entries: Entry[] }
  /** successor -> predecessor: everything up to `seq` is committed downstream (cumulative). */
  | { t: 'ack'; e: number; p: number; seq: number }
  /** successor -> predecessor: a gap; resend from `from`. */
  | { t: 'nack'; e: number; p: number; from: number }
  /** coordinator -> chain member: read one key (a member with a dirty copy passes it to the tail). */
  | { t: 'read'; e: number; id: string; p: number; key: Buffer; origin: string }
  | { t: 'rres'; id: string; r: Result }
  /** coordinator -> tail: a page of a partition's live pairs. */
  | { t: 'scan'; e: number; id: string; p: number; after: Buffer | null; limit: number; origin: string }
  | { t: 'sres'; id: string; r: Result }
  /** restarted member -> successor: send me your history after `committed`. */
  | { t: 'sync'; e: number; p: number; committed: number }
  /** successor -> restarted member: its committed seq and every entry it holds after the asked one. */
  | { t: 'syncr'; e: number; p: number; committed: number; entries: Entry[] };

/** Outcome of a request: `retry` means "not here, not now" (wrong node, stale view, not ready). */
export type Result =
  | { ok: true; value?: Buffer | null; existed?: boolean; items?: [Buffer, Buffer][]; done?: boolean }
  | { ok: false; retry: true; why: string }
  | { ok: false; retry: false; code: ErrorCode; message: string };
