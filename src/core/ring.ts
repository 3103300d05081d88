import { createHash } from 'node:crypto';

/**
 * The placement ring: a plain value with pure functions (no processes, no I/O).
 *
 * Node names and keys are hashed with SHA-1 onto one 160-bit ring. A key belongs to the
 * partition of the first node at or after its position, wrapping around; partition `p` is
 * identified by the index of its owner in ring order. The canonical chain of a partition is
 * its owner followed by the next `replication - 1` nodes clockwise (head first, tail last).
 */
export interface RingNode {
  readonly name: string;
  /** SHA-1 of the name, 40 lowercase hex digits. */
  readonly position: string;
}

export function sha1Hex(data: string | Uint8Array): string {
  return createHash('sha1').update(data).digest('hex');
}

export class Ring {
  /** Nodes sorted by ring position; index = partition id of the range that node owns. */
  readonly nodes: readonly RingNode[];
  readonly replication: number;
  private readonly indexByName: ReadonlyMap<string, number>;
  private readonly chains: readonly (readonly string[])[];

  constructor(names: readonly string[], replication = 3) {
    if (names.length === 0) throw new RangeError('a ring needs at least one node');
    if (new Set(names).size !== names.length) throw new RangeError('node names must be unique');
    if (!Number.isInteger(replication) || replication < 1 || replication > names.length) {
      throw new RangeError(`replication factor ${replication} must be between 1 and the node count ${names.length}`);
    }
    this.replication = replication;
    this.nodes = names
      .map((name) => ({ name, position: sha1Hex(name) }))
      .sort((a, b) => (a.position < b.position ? -1 : a.position > b.position ? 1 : 0));
    for (let i = 1; i < this.nodes.length; i++) {
      if (this.nodes[i]!.position === this.nodes[i - 1]!.position) throw new RangeError('two node names hash to one position');
    }
    this.indexByName = new Map(this.nodes.map((n, i) => [n.name, i]));
    this.chains = this.nodes.map((_, p) => {
      const chain: string[] = [];
      for (let i = 0; i < replication; i++) chain.push(this.nodes[(p + i) % this.nodes.length]!.name);
      return chain;
    });
  }

  get size(): number {
    return this.nodes.length;
  }

  /** Partition of a key: the first node at or after the key's SHA-1 position, wrapping. */
  partitionOf(key: string | Uint8Array): number {
    return this.partitionOfPosition(sha1Hex(key));
  }

  partitionOfPosition(position: string): number {
    // Binary search for the first node with position >= key position. Equal-length lowercase
    // hex strings compare like the numbers they spell.
    let lo = 0;
    let hi = this.nodes.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.nodes[mid]!.position < position) lo = mid + 1;
      else hi = mid;
    }
    return lo === this.nodes.length ? 0 : lo;
  }

  ownerOf(partition: number): string {
    return this.node(partition).name;
  }

  /** Owner followed by the next replication-1 nodes clockwise: head first, tail last. */
  canonicalChain(partition: number): readonly string[] {
    const chain = this.chains[partition];
    if (chain === undefined) throw new RangeError(`no partition ${partition}`);
    return chain;
  }

  /** Partitions whose canonical chain contains the node, in ring order. */
  partitionsOf(name: string): number[] {
    const out: number[] = [];
    for (let p = 0; p < this.chains.length; p++) if (this.chains[p]!.includes(name)) out.push(p);
    return out;
  }

  indexOf(name: string): number {
    const i = this.indexByName.get(name);
    if (i === undefined) throw new RangeError(`unknown node ${name}`);
    return i;
  }

  has(name: string): boolean {
    return this.indexByName.has(name);
  }

  /** Fraction of the ring (0..1) covered by a partition: from its predecessor's position (exclusive) to its owner's. */
  share(partition: number): number {
    const size = 2n ** 160n;
    const end = BigInt('0x' + this.node(partition).position);
    const prev = this.node((partition - 1 + this.nodes.length) % this.nodes.length);
    const start = BigInt('0x' + prev.position);
    const span = this.nodes.length === 1 ? size : (end - start + size) % size;
    return Number((span * 1_000_000n) / size) / 1_000_000;
  }

  private node(partition: number): RingNode {
    const n = this.nodes[partition];
    if (n === undefined) throw new RangeError(`no partition ${partition}`);
    return n;
  }
}
