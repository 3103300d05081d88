/**
 * Request ids. A coordinator names each request `node.incarnation.counter` (replica.ts), and
 * every member and the log keep the ids of recent writes to recognise retries. Held whole,
 * as strings, they are most of what the request-id window and a log row cost, so both keep
 * the counter as a number under its `node.incarnation` prefix instead.
 */

/**
 * `node.incarnation.counter` -> [`node.incarnation`, counter]. Any other id (none is made that
 * way here, but a peer's message may carry one) comes back whole under the prefix ''. Only a
 * canonical decimal counter (no leading zero, at most 15 digits) is split, so that
 * `${prefix}.${counter}` gives back the id exactly: "x.007" and "x.7" stay different ids.
 */
export function splitRequestId(id: string): [string, number | string] {
  const dot = id.lastIndexOf('.');
  const digits = id.length - dot - 1;
  if (dot <= 0 || digits === 0 || digits > 15) return ['', id];
  if (digits > 1 && id.charCodeAt(dot + 1) === 48) return ['', id];
  let counter = 0;
  for (let i = dot + 1; i < id.length; i++) {
    const c = id.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return ['', id];
    counter = counter * 10 + c;
  }
  return [id.slice(0, dot), counter];
}

/**
 * A flat copy of a string. A string sliced out of a longer one (as msgpack decodes a frame's
 * short strings) keeps the longer one alive for as long as it is held.
 */
export const copyOf = (s: string): string => Buffer.from(s, 'utf8').toString('utf8');
