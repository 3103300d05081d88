import type { Ring } from './ring.ts';

/**
 * A view is the cluster configuration every data-path decision is made against: an epoch
 * number and the state of every node. Chains are derived from the ring and the view, never
 * stored, so two nodes holding the same view always agree on every chain.
 *
 *  - up:      serving in its canonical place in every chain it belongs to;
 *  - down:    removed from every chain (the chain closes up around it);
 *  - joining: back from a failure and catching up; receives writes at the tail end of its
 *             chains but answers no reads and acknowledges nothing until a later view marks it up.
 */
export type NodeState = 'up' | 'down' | 'joining';

export interface View {
  readonly epoch: number;
  readonly states: Readonly<Record<string, NodeState>>;
}

export function initialView(ring: Ring): View {
  const states: Record<string, NodeState> = {};
  for (const n of ring.nodes) states[n.name] = 'up';
  return { epoch: 1, states };
}

/** The serving chain of a partition under a view: its canonical chain without nodes that are not up. */
export function servingChain(ring: Ring, view: View, partition: number): string[] {
  return ring.canonicalChain(partition).filter((n) => view.states[n] === 'up');
}

export function headOf(chain: readonly string[]): string | undefined {
  return chain[0];
}

export function tailOf(chain: readonly string[]): string | undefined {
  return chain[chain.length - 1];
}
