import type { NodeState, View } from './view.ts';

/**
 * Configuration agreement and read leases, pure and deterministic.
 *
 * Views are decided by Raft among all nodes (any majority decides; one failure never
 * blocks it). The Raft log holds views; the state machine is "the latest committed view".
 * The leader plays the master of the chain replication paper: it watches every node,
 * proposes a view marking a silent or dead node down, marks a returning node joining, and
 * marks it up once it has caught up. It proposes one change at a time.
 *
 * Leases are granted by a majority, not by the leader. A node asks every node for a lease
 * on its current view epoch; a node grants it only if the latest view in its own log (even
 * uncommitted) is that epoch with the asker up, and then promises: "until my clock passes
 * grant + leaseGrantMs, I will not append a view that takes you out of 'up'". A lease is
 * held from the moment the request was sent, for leaseHoldMs (shorter than leaseGrantMs by
 * the clock drift bound and a margin), once a majority granted. Any majority that commits a
 * view removing X intersects any majority that granted X a lease; the node in both appended
 * the removal only after its promise expired, or refused to grant after appending it. So no
 * node ever holds a lease on a view after a view removing it was decided. The promise is
 * dropped early for a node proven dead (its port refused a connection, or it came back as a
 * new incarnation), so a crash costs no lease wait. See docs/design.md §4.
 *
 * A node that starts with no Raft state at all (a new cluster, or a wiped disk: it cannot
 * tell which) is amnesiac: it may have voted, acknowledged entries and promised leases in a
 * life it forgot. It asks every other node for its term, last log index and whether it holds
 * data (`probe`), and until each has answered or been proven dead (its connection refused),
 * and enough have answered to make a majority with it, it votes for no one, grants and asks
 * no lease, and does not campaign. Then it never votes in a term up to the highest answered
 * (every term it could have voted in is known to the candidate it voted for); it votes at all
 * only once its log holds every committed entry: at once if every log answered is the initial
 * one, otherwise after a leader's append reached the end of the leader's log. If any node
 * holds data, its own data is gone and it must rejoin through catch-up (`rejoin`).
 */

export interface LogEntry {
  term: number;
  view: View;
}

export interface MembershipState {
  term: number;
  votedFor: string | null;
  /** The entries held, from index `base` on (earlier ones are compacted away). */
  log: LogEntry[];
  /** Index of `log[0]`: a committed entry standing for everything before it; 0 if never compacted. */
  base?: number;
  /** Highest log index known committed (persisted so that a restart knows its last decided view). */
  commit: number;
  /** Present while recovering from a start without Raft state (see the class comment). */
  amnesia?: Amnesia;
}

export interface Amnesia {
  /** Every other node has answered the probe. */
  resolved: boolean;
  /** No vote is granted in a term up to this one (the highest term answered). */
  noVoteThrough: number;
  /** The log holds every committed entry: votes and lease grants are safe again. */
  logTrusted: boolean;
  /** The node's data is gone while others hold data: it must leave its chains and catch up. */
  rejoin: boolean;
}

export type MembershipMsg =
  | { t: 'rv'; term: number; last: number; lastTerm: number }
  | { t: 'rvr'; term: number; granted: boolean }
  | { t: 'ae'; term: number; prev: number; prevTerm: number; entries: LogEntry[]; commit: number }
  | { t: 'aer'; term: number; ok: boolean; match: number; blocked?: boolean }
  | { t: 'lq'; e: number; r: number; inc: string }
  | { t: 'lg'; e: number; r: number }
  /** node -> leader: I am back (new incarnation or reset) and want to rejoin; `reset`: my data is gone. */
  | { t: 'join'; inc: string; reset?: boolean }
  /** leader -> follower whose next entry was compacted away: the committed entry at `index` stands for the log up to it. */
  | { t: 'snap'; term: number; index: number; entry: LogEntry; commit: number }
  /** amnesiac node -> every node: what do you know? */
  | { t: 'probe' }
  | { t: 'probed'; term: number; last: number; data: boolean }
  /** node -> leader: I have caught up every partition of mine under `e`. */
  | { t: 'caught'; e: number; inc: string };

export interface MembershipTiming {
  heartbeatMs: number;
  electionMinMs: number;
  electionMaxMs: number;
  /** Silence after which the leader proposes marking a node down. */
  detectMs: number;
  leaseGrantMs: number;
  leaseRenewMs: number;
  /** Bound on relative clock rate drift between any two nodes (e.g. 0.01 = 1%). */
  clockDrift: number;
  leaseMarginMs: number;
  /** Committed entries kept behind the commit index when the log is compacted (it is once twice as many are held). */
  logKeep: number;
}

export const defaultMembershipTiming: MembershipTiming = {
  heartbeatMs: 50,
  electionMinMs: 300,
  electionMaxMs: 500,
  detectMs: 400,
  leaseGrantMs: 900,
  leaseRenewMs: 150,
  clockDrift: 0.01,
  leaseMarginMs: 20,
  logKeep: 256,
};

export function leaseHoldMs(t: MembershipTiming): number {
  return t.leaseGrantMs * (1 - 2 * t.clockDrift) - t.leaseMarginMs;
}

export interface MembershipHost {
  readonly self: string;
  readonly names: readonly string[];
  /** Sends a membership message; `durable` = only after the persisted state is on disk. Self-sends must go through the runtime. */
  send(to: string, msg: MembershipMsg, durable: boolean): void;
  persist(state: MembershipState): void;
  /** A uniform number in [0, 1) from the node's seeded generator. */
  random(): number;
  /** Called when the committed view changes. */
  onCommittedView(view: View): void;
  /** An operator-facing log line (why the leader changes a view). */
  log?(msg: string, data: Record<string, unknown>): void;
  /** Whether this node holds any committed data (answered to an amnesiac node's probe). */
  hasData(): boolean;
  /** An amnesiac node heard from every other node; `rejoin`: its data must be copied back. */
  onResolved(rejoin: boolean): void;
}

/** Entries per append message; an append with fewer reaches the end of the leader's log. */
const APPEND_MAX_ENTRIES = 64;

type Role = 'follower' | 'candidate' | 'leader';

/** What /cluster shows of this node's part in the configuration group. */
export interface MembershipStatus {
  role: Role;
  term: number;
  leader: string | null;
  commitIndex: number;
  logLength: number;
  leaseMs: number;
  /** Present while a start without state is not settled (design.md §4.7). */
  startedWithoutState?: { waitingFor: string[]; noVoteThrough: number; logTrusted: boolean; rejoin: boolean };
}

/** A joining node is taken for dead after this many times `detectMs` of silence. */
const JOINING_SILENCE_FACTOR = 5;

export class Membership {
  private readonly host: MembershipHost;
  private readonly timing: MembershipTiming;
  private readonly majority: number;
  private readonly incarnation: string;

  private term: number;
  private votedFor: string | null;
  private log: LogEntry[];
  /** Index of log[0]; entries before it were compacted (the state machine is the latest committed view, so nothing else is lost). */
  private base = 0;
  private commit: number;
  private role: Role = 'follower';
  private leader: string | null = null;
  private now = 0;
  private electionAt = 0;
  private votes = new Set<string>();

  // leader state
  private nextIndex = new Map<string, number>();
  private matchIndex = new Map<string, number>();
  private lastHeard = new Map<string, number>();
  private heartbeatAt = 0;
  private leaderSince = 0;
  private readonly joinRequests = new Map<string, { inc: string; reset: boolean }>();
  private readonly caughtUp = new Map<string, number>();

  // lease holder state
  private leaseRound = 0;
  private readonly rounds = new Map<number, { e: number; t0: number; grants: Set<string> }>();
  private leaseEpoch = -1;
  private leaseUntil = -Infinity;
  private leaseAskAt = -Infinity;

  // lease granter state: promises made, per node, and the incarnation they were made to
  private readonly promises = new Map<string, { until: number; inc: string }>();
  /** Nodes proven dead (refused connection), with the time. */
  private readonly deadAt = new Map<string, number>();
  /** Nodes the leader of the given term is removing: no new lease promise to them in that term. */
  private readonly noLeaseInTerm = new Map<string, number>();
  /** Until then, appending a view that takes a node out waits: promises from before the start are forgotten. */
  private startHoldUntil = 0;

  // amnesia (a start without Raft state): null once nothing is left to guard
  private amnesia: Amnesia | null;
  private readonly probeAnswers = new Map<string, { term: number; last: number; data: boolean }>();
  private probeAt = -Infinity;
  /** When to log (again) whom an amnesiac node is still waiting for: 5 s after its first probe, then every 5 s. */
  private probeLogAt = -1;

  constructor(host: MembershipHost, initial: View, persisted: MembershipState | null, timing: MembershipTiming, incarnation: string) {
    this.host = host;
    this.timing = timing;
    this.incarnation = incarnation;
    this.majority = Math.floor(host.names.length / 2) + 1;
    if (persisted !== null) {
      this.term = persisted.term;
      this.votedFor = persisted.votedFor;
      this.log = persisted.log;
      this.base = persisted.base ?? 0;
      this.commit = Math.min(persisted.commit, this.base + persisted.log.length - 1);
      this.amnesia = persisted.amnesia ?? null;
    } else {
      this.term = 0;
      this.votedFor = null;
      this.log = [{ term: 0, view: initial }];
      this.commit = 0;
      this.amnesia = { resolved: false, noVoteThrough: 0, logTrusted: false, rejoin: false };
    }
    this.electionAt = this.randomElectionTimeout();
  }

  // ------------------------------------------------------------------ queries

  get committedView(): View {
    return this.entry(this.commit).view;
  }

  get latestView(): View {
    return this.log[this.log.length - 1]!.view;
  }

  get isLeader(): boolean {
    return this.role === 'leader';
  }

  get leaderName(): string | null {
    return this.leader;
  }

  get currentTerm(): number {
    return this.term;
  }

  /** False while an amnesiac node has not heard from every node (it must not serve yet). */
  get resolved(): boolean {
    return this.amnesia === null || this.amnesia.resolved;
  }

  /** True while an amnesiac node's data must be copied back before it serves. */
  get mustRejoin(): boolean {
    return this.amnesia?.rejoin === true;
  }

  /** Votes and lease grants are safe: no forgotten vote, promise or entry can be contradicted. */
  private get trusted(): boolean {
    return this.amnesia === null || (this.amnesia.resolved && this.amnesia.logTrusted);
  }

  /** The node left its chains (its view says down or joining): its catch-up restores its data. */
  rejoined(): void {
    if (this.amnesia === null || !this.amnesia.rejoin) return;
    this.amnesia.rejoin = false;
    this.persist();
  }

  /** Whether this node holds a read lease on view epoch `e` at time `now`. */
  hasLease(e: number, now: number): boolean {
    return this.leaseEpoch === e && now < this.leaseUntil;
  }

  leaseRemainingMs(now: number): number {
    return Math.max(0, this.leaseUntil - now);
  }

  // ------------------------------------------------------------------ inputs

  start(now: number): void {
    this.now = now;
    this.startHoldUntil = now + this.timing.leaseGrantMs;
    this.electionAt = now + this.randomElectionTimeout();
  }

  tick(now: number): void {
    this.now = now;
    this.resolveIfAnswered(); // a cluster of one has no one to ask
    if (this.amnesia !== null && !this.amnesia.resolved && now >= this.probeAt) {
      this.probeAt = now + 2 * this.timing.heartbeatMs;
      // Nodes proven dead are asked too: one that comes back answers.
      for (const n of this.host.names) if (n !== this.host.self && !this.probeAnswers.has(n)) this.host.send(n, { t: 'probe' }, false);
      if (this.probeLogAt < 0) this.probeLogAt = now + 5000;
      else if (now >= this.probeLogAt) {
        this.probeLogAt = now + 5000;
        const missing = this.unanswered();
        this.host.log?.(
          `started without state: waiting for ${missing.length > 0 ? missing.join(', ') : 'a majority'} to answer before voting or serving (design.md §4.7)`,
          { missing },
        );
      }
    }
    if (this.role === 'leader') {
      if (now >= this.heartbeatAt) this.broadcastAppend();
      this.master();
    } else if (now >= this.electionAt) {
      if (this.trusted) this.campaign();
      else this.electionAt = now + this.randomElectionTimeout();
    }
    if (now >= this.leaseAskAt && this.trusted) this.askLease();
  }

  /** The runtime saw a connection to `node` refused: its process is gone. */
  refused(node: string, now: number): void {
    this.now = now;
    this.deadAt.set(node, now);
    this.promises.delete(node);
    this.resolveIfAnswered();
  }

  onMessage(from: string, msg: MembershipMsg, now: number): void {
    this.now = now;
    if (this.role === 'leader') this.lastHeard.set(from, now);
    // Anything from a node proves it runs again (a new incarnation).
    this.deadAt.delete(from);
    switch (msg.t) {
      case 'rv':
        return this.onRequestVote(from, msg);
      case 'rvr':
        return this.onVote(from, msg);
      case 'ae':
        return this.onAppend(from, msg);
      case 'aer':
        return this.onAppendReply(from, msg);
      case 'lq':
        return this.onLeaseRequest(from, msg);
      case 'lg':
        return this.onLeaseGrant(from, msg);
      case 'join':
        this.deadAt.delete(from);
        if (this.promises.get(from)?.inc !== msg.inc) this.promises.delete(from);
        if (this.role === 'leader') this.joinRequests.set(from, { inc: msg.inc, reset: msg.reset === true });
        return;
      case 'snap':
        return this.onSnapshot(from, msg);
      case 'probe':
        this.host.send(from, { t: 'probed', term: this.term, last: this.lastIndex(), data: this.host.hasData() }, false);
        return;
      case 'probed':
        return this.onProbed(from, msg);
      case 'caught':
        if (this.role === 'leader' && msg.e === this.committedView.epoch) this.caughtUp.set(from, msg.e);
        return;
    }
  }

  /** Asks the leader to take this node back (after a restart, or after finding itself removed). */
  requestJoin(): void {
    const to = this.leader;
    const msg: MembershipMsg = { t: 'join', inc: this.incarnation, ...(this.mustRejoin ? { reset: true } : {}) };
    if (to === null) {
      for (const n of this.host.names) if (n !== this.host.self) this.host.send(n, msg, false);
    } else this.host.send(to, msg, false);
  }

  reportCaughtUp(e: number): void {
    const msg: MembershipMsg = { t: 'caught', e, inc: this.incarnation };
    if (this.leader === null) {
      for (const n of this.host.names) if (n !== this.host.self) this.host.send(n, msg, false);
    } else this.host.send(this.leader, msg, false);
  }

  // ------------------------------------------------------------------ raft

  private randomElectionTimeout(): number {
    const { electionMinMs: lo, electionMaxMs: hi } = this.timing;
    return lo + this.host.random() * (hi - lo);
  }

  private lastIndex(): number {
    return this.base + this.log.length - 1;
  }

  /** The entry at log index `i` (base ≤ i ≤ lastIndex). */
  private entry(i: number): LogEntry {
    const e = this.log[i - this.base];
    if (e === undefined) throw new Error(`raft: no entry ${i} (held ${this.base}..${this.lastIndex()})`);
    return e;
  }

  /**
   * Drops committed entries far behind the commit index: the log would otherwise grow by a
   * few entries per failure for ever, and every persist writes it whole. The entry at the new
   * base stays, standing for everything before it; a follower that needs an older one gets it
   * as a snapshot (`snap`).
   */
  private compact(): void {
    const keep = this.timing.logKeep;
    if (this.commit - this.base < 2 * keep) return;
    const base = this.commit - keep;
    this.log = this.log.slice(base - this.base);
    this.base = base;
  }

  private persist(): void {
    this.settleAmnesia();
    this.compact();
    this.host.persist({
      term: this.term,
      votedFor: this.votedFor,
      log: this.log,
      ...(this.base > 0 ? { base: this.base } : {}),
      commit: this.commit,
      ...(this.amnesia !== null ? { amnesia: this.amnesia } : {}),
    });
  }

  private onProbed(from: string, msg: Extract<MembershipMsg, { t: 'probed' }>): void {
    const a = this.amnesia;
    if (a === null || a.resolved) return;
    this.probeAnswers.set(from, { term: msg.term, last: msg.last, data: msg.data });
    this.resolveIfAnswered();
  }

  /** Nodes an amnesiac node still waits for: neither answered nor proven dead (connection refused). */
  private unanswered(): string[] {
    return this.host.names.filter((n) => n !== this.host.self && !this.probeAnswers.has(n) && !this.deadAt.has(n));
  }

  private resolveIfAnswered(): void {
    const a = this.amnesia;
    // And at least a majority with this node: with every other node refusing (a whole cluster
    // restarting at once) there is nothing to go by.
    if (a === null || a.resolved || this.unanswered().length > 0 || this.probeAnswers.size < this.majority - 1) return;
    // Nodes proven dead are left out: a vote we gave one of them in a life we forgot counted
    // only for a candidacy its process held in memory, which died with it.
    const answers = [...this.probeAnswers.values()];
    const maxTerm = Math.max(0, ...answers.map((x) => x.term));
    a.resolved = true;
    a.noVoteThrough = maxTerm;
    // A committed entry is on a majority, so on some node other than this one: if every
    // other log is the initial one, nothing beyond it was ever committed.
    if (answers.every((x) => x.last === 0)) a.logTrusted = true;
    a.rejoin = answers.some((x) => x.data);
    if (maxTerm > this.term) {
      this.term = maxTerm;
      this.votedFor = null;
    }
    this.host.log?.(
      a.rejoin
        ? `started without state while the cluster holds data: catching up before serving (no vote through term ${maxTerm})`
        : `started without state in a cluster without data (no vote through term ${maxTerm})`,
      { noVoteThrough: maxTerm, logTrusted: a.logTrusted, rejoin: a.rejoin },
    );
    this.persist();
    this.host.onResolved(a.rejoin);
  }

  /** Drops the amnesia record once it guards nothing: resolved, log trusted, no rejoin, past its term. */
  private settleAmnesia(): void {
    const a = this.amnesia;
    if (a !== null && a.resolved && a.logTrusted && !a.rejoin && this.term > a.noVoteThrough) this.amnesia = null;
  }

  private becomeFollower(term: number, leader: string | null): void {
    const changed = term !== this.term || this.votedFor !== null;
    if (term > this.term) {
      this.term = term;
      this.votedFor = null;
    }
    this.role = 'follower';
    this.leader = leader;
    this.electionAt = this.now + this.randomElectionTimeout();
    if (changed) this.persist();
  }

  private campaign(): void {
    this.term++;
    this.role = 'candidate';
    this.leader = null;
    this.votedFor = this.host.self;
    this.votes = new Set();
    this.electionAt = this.now + this.randomElectionTimeout();
    this.persist();
    const last = this.lastIndex();
    const msg: MembershipMsg = { t: 'rv', term: this.term, last, lastTerm: this.entry(last).term };
    // Our own vote counts once it is durable, like everyone else's.
    this.host.send(this.host.self, { t: 'rvr', term: this.term, granted: true }, true);
    for (const n of this.host.names) if (n !== this.host.self) this.host.send(n, msg, false);
  }

  private onRequestVote(from: string, msg: Extract<MembershipMsg, { t: 'rv' }>): void {
    if (msg.term > this.term) this.becomeFollower(msg.term, null);
    const last = this.lastIndex();
    const lastTerm = this.entry(last).term;
    const upToDate = msg.lastTerm > lastTerm || (msg.lastTerm === lastTerm && msg.last >= last);
    const amnesiaAllows = this.amnesia === null || (this.trusted && msg.term > this.amnesia.noVoteThrough);
    const granted = msg.term === this.term && upToDate && amnesiaAllows && (this.votedFor === null || this.votedFor === from);
    if (granted && this.votedFor !== from) {
      this.votedFor = from;
      this.electionAt = this.now + this.randomElectionTimeout();
      this.persist();
    }
    this.host.send(from, { t: 'rvr', term: this.term, granted }, true);
  }

  private onVote(from: string, msg: Extract<MembershipMsg, { t: 'rvr' }>): void {
    if (msg.term > this.term) return this.becomeFollower(msg.term, null);
    if (this.role !== 'candidate' || msg.term !== this.term || !msg.granted) return;
    this.votes.add(from);
    if (this.votes.size >= this.majority) this.becomeLeader();
  }

  private becomeLeader(): void {
    this.role = 'leader';
    this.leader = this.host.self;
    this.leaderSince = this.now;
    this.nextIndex = new Map(this.host.names.map((n) => [n, this.lastIndex() + 1]));
    this.matchIndex = new Map(this.host.names.map((n) => [n, 0]));
    // A node already proven dead stays so: it can be removed at once, not after detectMs.
    this.lastHeard = new Map(this.host.names.map((n) => [n, this.deadAt.has(n) ? Math.min(this.now, this.deadAt.get(n)! - 1) : this.now]));
    this.joinRequests.clear();
    this.caughtUp.clear();
    // Commit an entry of our own term (Raft's rule), carrying the latest view unchanged.
    this.append(this.latestView);
  }

  private append(view: View): void {
    this.log.push({ term: this.term, view });
    this.persist();
    this.matchIndex.set(this.host.self, this.lastIndex());
    this.broadcastAppend();
  }

  private broadcastAppend(): void {
    this.heartbeatAt = this.now + this.timing.heartbeatMs;
    for (const n of this.host.names) if (n !== this.host.self) this.sendAppend(n);
  }

  private sendAppend(to: string): void {
    const next = this.nextIndex.get(to) ?? this.lastIndex() + 1;
    const prev = Math.max(0, next - 1);
    if (prev < this.base) {
      // What it needs was compacted: the entry at our base stands for it (it is committed).
      this.host.send(to, { t: 'snap', term: this.term, index: this.base, entry: this.log[0]!, commit: this.commit }, false);
      return;
    }
    const entries = this.log.slice(prev + 1 - this.base, prev + 1 - this.base + APPEND_MAX_ENTRIES);
    // Entries go out only once durable here (a leader counts itself in the majority).
    this.host.send(to, { t: 'ae', term: this.term, prev, prevTerm: this.entry(prev).term, entries, commit: this.commit }, entries.length > 0);
  }

  /**
   * An append or snapshot from `from` in `term`: refused (and answered so) from a stale term;
   * otherwise `from` is our leader, and the election timer starts over.
   */
  private heedLeader(from: string, term: number): boolean {
    if (term < this.term) {
      this.host.send(from, { t: 'aer', term: this.term, ok: false, match: 0 }, false);
      return false;
    }
    if (term > this.term || this.role !== 'follower' || this.leader !== from) this.becomeFollower(term, from);
    this.electionAt = this.now + this.randomElectionTimeout();
    return true;
  }

  /** A snapshot from the leader: our log lacks entries it compacted away. */
  private onSnapshot(from: string, msg: Extract<MembershipMsg, { t: 'snap' }>): void {
    if (!this.heedLeader(from, msg.term)) return;
    if (msg.index > this.commit) {
      if (this.blockedByPromise(this.latestView, msg.entry.view)) return this.answerBlocked(from, this.latestView, msg.entry.view, this.commit);
      // Keep what follows the entry if our log holds it (Raft's rule); otherwise start over from it.
      if (msg.index <= this.lastIndex() && this.entry(msg.index).term === msg.entry.term) this.log = this.log.slice(msg.index - this.base);
      else this.log = [msg.entry];
      this.base = msg.index;
      this.commit = msg.index;
      this.host.log?.(`took the view log up to index ${msg.index} from leader ${from} as a snapshot (its older entries were compacted)`, { index: msg.index });
      this.appended();
      this.persist();
      this.host.send(from, { t: 'aer', term: this.term, ok: true, match: msg.index }, true);
      this.host.onCommittedView(this.committedView);
      return;
    }
    this.host.send(from, { t: 'aer', term: this.term, ok: true, match: msg.index }, false);
  }

  private onAppend(from: string, msg: Extract<MembershipMsg, { t: 'ae' }>): void {
    if (!this.heedLeader(from, msg.term)) return;
    // An append with fewer entries than the most reaches the end of the leader's log.
    const reachesEnd = msg.entries.length < APPEND_MAX_ENTRIES;
    if (msg.prev < this.base) {
      // Entries up to our base are committed here, so the leader's match them: skip them.
      msg = { ...msg, prev: this.base, prevTerm: this.log[0]!.term, entries: msg.entries.slice(this.base - msg.prev) };
    }
    if (msg.prev > this.lastIndex() || this.entry(msg.prev).term !== msg.prevTerm) {
      this.host.send(from, { t: 'aer', term: this.term, ok: false, match: Math.min(this.lastIndex(), msg.prev - 1) }, false);
      return;
    }
    // Find the first entry that is new or conflicting.
    let i = 0;
    while (i < msg.entries.length) {
      const idx = msg.prev + 1 + i;
      if (idx > this.lastIndex() || this.entry(idx).term !== msg.entries[i]!.term) break;
      i++;
    }
    const fresh = msg.entries.slice(i);
    if (fresh.length > 0) {
      const base = msg.prev + 1 + i;
      // Lease promises: never append a view that takes a node we promised out of 'up'.
      let before = this.entry(base - 1).view;
      for (const e of fresh) {
        if (this.blockedByPromise(before, e.view)) return this.answerBlocked(from, before, e.view, base - 1);
        before = e.view;
      }
      if (base <= this.commit) throw new Error(`raft: leader ${from} overwrites committed index ${base}`);
      this.log.length = base - this.base;
      for (const e of fresh) this.log.push(e);
      this.appended();
    }
    const match = msg.prev + msg.entries.length;
    const newCommit = Math.min(msg.commit, match);
    const changed = newCommit > this.commit;
    if (changed) this.commit = newCommit;
    // An amnesiac log that now reaches the end of a leader's log holds every committed entry.
    const trustedNow = this.amnesia !== null && !this.amnesia.logTrusted && reachesEnd;
    if (trustedNow) this.amnesia!.logTrusted = true;
    if (fresh.length > 0 || changed || trustedNow) this.persist();
    this.host.send(from, { t: 'aer', term: this.term, ok: true, match }, fresh.length > 0);
    if (changed) this.host.onCommittedView(this.committedView);
  }

  private onAppendReply(from: string, msg: Extract<MembershipMsg, { t: 'aer' }>): void {
    if (msg.term > this.term) return this.becomeFollower(msg.term, null);
    if (this.role !== 'leader' || msg.term !== this.term) return;
    if (msg.ok) {
      if (msg.match > (this.matchIndex.get(from) ?? 0)) this.matchIndex.set(from, msg.match);
      this.nextIndex.set(from, msg.match + 1);
      this.advanceCommit();
      if ((this.nextIndex.get(from) ?? 0) <= this.lastIndex()) this.sendAppend(from);
    } else if (!msg.blocked) {
      this.nextIndex.set(from, Math.max(1, Math.min(msg.match + 1, (this.nextIndex.get(from) ?? 1) - 1)));
      this.sendAppend(from);
    }
    // blocked: the follower waits for a lease promise to run out; the next heartbeat retries.
  }

  private advanceCommit(): void {
    for (let n = this.lastIndex(); n > this.commit; n--) {
      if (this.entry(n).term !== this.term) break;
      let count = 0;
      for (const name of this.host.names) if ((this.matchIndex.get(name) ?? 0) >= n) count++;
      if (count >= this.majority) {
        this.commit = n;
        this.persist();
        this.host.onCommittedView(this.committedView);
        this.broadcastAppend();
        return;
      }
    }
  }

  /**
   * The leader of this term wants us to append `next`, which takes nodes out of 'up', and our
   * promises to them hold it up: we say so (the leader retries), and promise them nothing more
   * in this term, so that the promises run out. Otherwise a node the leader is removing that
   * still talks to us (it came back, or only the leader cannot hear it) would renew them for
   * ever, and no view could change again.
   */
  private answerBlocked(leader: string, prev: View, next: View, match: number): void {
    for (const node of this.host.names) {
      if (node !== this.host.self && prev.states[node] === 'up' && next.states[node] !== 'up') this.noLeaseInTerm.set(node, this.term);
    }
    this.host.send(leader, { t: 'aer', term: this.term, ok: false, match, blocked: true }, false);
  }

  /** After views were added to our log (appended, or a snapshot taken). */
  private appended(): void {
    const latest = this.latestView;
    // Once our log holds a node's removal, the refusal of leases to it has done its work (and a
    // later view may take the node back).
    for (const node of this.noLeaseInTerm.keys()) if (latest.states[node] !== 'up') this.noLeaseInTerm.delete(node);
    if (latest.states[this.host.self] !== 'up') {
      // A view that takes us out is in our log: we stop serving reads at once.
      this.dropLease();
      this.promises.delete(this.host.self);
    }
  }

  /** True if `next` takes a node out of 'up' that we promised a lease to (still running, node not proven dead). */
  private blockedByPromise(prev: View, next: View): boolean {
    for (const [node, p] of this.promises) {
      // Our promise to ourselves protects our own reads: we drop our lease instead (below).
      if (node === this.host.self) continue;
      if (prev.states[node] === 'up' && next.states[node] !== 'up' && this.now < p.until) return true;
    }
    // Promises made before this process started are forgotten (they live in memory): for one
    // grant period after start, as if every node but the proven dead held one.
    if (this.now < this.startHoldUntil) {
      for (const node of this.host.names) {
        if (node === this.host.self || this.deadAt.has(node)) continue;
        if (prev.states[node] === 'up' && next.states[node] !== 'up') return true;
      }
    }
    return false;
  }

  // ------------------------------------------------------------------ master

  private master(): void {
    // One change at a time: wait until everything we appended is committed.
    if (this.commit < this.lastIndex()) return;
    const view = this.committedView;
    const next = (node: string, state: NodeState): View => ({ epoch: view.epoch + 1, states: { ...view.states, [node]: state } });
    for (const node of this.host.names) {
      const state = view.states[node];
      const heard = this.lastHeard.get(node) ?? this.leaderSince;
      const dead = (this.deadAt.get(node) ?? -Infinity) > heard - 1 && node !== this.host.self;
      // A joining node serves nothing, so taking it for dead late costs no availability, and
      // while it applies catch-up pages its replies can lag by a few hundred ms.
      const silenceMs = state === 'joining' ? this.timing.detectMs * JOINING_SILENCE_FACTOR : this.timing.detectMs;
      const silent = node !== this.host.self && this.now - heard > silenceMs;
      if ((state === 'up' || state === 'joining') && (dead || silent)) {
        // Our own promise must have run out first (followers check theirs when appending).
        if (this.blockedByPromise(view, next(node, 'down'))) continue;
        this.joinRequests.delete(node);
        this.host.log?.(
          dead ? `marking ${node} down: its connection was refused` : `marking ${node} down: nothing heard from it for ${Math.round(this.now - heard)} ms`,
          { target: node, reason: dead ? 'refused' : 'silent', silentMs: Math.round(this.now - heard) },
        );
        return this.append(next(node, 'down'));
      }
    }
    for (const [node, { reset }] of this.joinRequests) {
      this.joinRequests.delete(node);
      if (view.states[node] === 'down') return this.append(next(node, 'joining'));
      if (reset && view.states[node] === 'up' && !this.blockedByPromise(view, next(node, 'down'))) {
        this.host.log?.(`marking ${node} down: it restarted without its data`, { target: node, reason: 'reset' });
        return this.append(next(node, 'down'));
      }
    }
    for (const [node, e] of this.caughtUp) {
      this.caughtUp.delete(node);
      if (view.states[node] === 'joining' && e === view.epoch) return this.append(next(node, 'up'));
    }
  }

  // ------------------------------------------------------------------ leases

  private askLease(): void {
    this.leaseAskAt = this.now + this.timing.leaseRenewMs;
    const view = this.committedView;
    // A node whose data is gone serves nothing; a lease would only hold up its removal.
    if (view.states[this.host.self] !== 'up' || this.mustRejoin) return;
    const r = ++this.leaseRound;
    this.rounds.set(r, { e: view.epoch, t0: this.now, grants: new Set() });
    this.rounds.delete(r - 8);
    for (const n of this.host.names) {
      const msg: MembershipMsg = { t: 'lq', e: view.epoch, r, inc: this.incarnation };
      if (n === this.host.self) this.onLeaseRequest(n, msg);
      else this.host.send(n, msg, false);
    }
  }

  private onLeaseRequest(from: string, msg: Extract<MembershipMsg, { t: 'lq' }>): void {
    // An amnesiac node may have appended (and forgotten) a view that removes the asker.
    if (!this.trusted) return;
    // The leader of this term is removing the asker (refuseLeasesToRemoved).
    if (this.noLeaseInTerm.get(from) === this.term) return;
    const latest = this.latestView;
    // Grant only on the view we would also decide next: no newer view in our log, asker up.
    if (latest.epoch !== msg.e || this.committedView.epoch !== msg.e || latest.states[from] !== 'up') return;
    const prev = this.promises.get(from);
    const until = this.now + this.timing.leaseGrantMs;
    this.promises.set(from, { until: Math.max(until, prev?.inc === msg.inc ? prev.until : 0), inc: msg.inc });
    if (from === this.host.self) this.onLeaseGrant(from, { t: 'lg', e: msg.e, r: msg.r });
    else this.host.send(from, { t: 'lg', e: msg.e, r: msg.r }, false);
  }

  private onLeaseGrant(from: string, msg: Extract<MembershipMsg, { t: 'lg' }>): void {
    const round = this.rounds.get(msg.r);
    if (round === undefined || round.e !== msg.e) return;
    round.grants.add(from);
    if (round.grants.size >= this.majority) {
      const until = round.t0 + leaseHoldMs(this.timing);
      if (this.leaseEpoch !== round.e) {
        this.leaseEpoch = round.e;
        this.leaseUntil = until;
      } else if (until > this.leaseUntil) this.leaseUntil = until;
    }
  }

  /** Ask for a lease on the current view at the next tick (after a view change). */
  renewLeaseNow(): void {
    this.leaseAskAt = -Infinity;
  }

  /** Forget any lease held (on a view change or reset). */
  dropLease(): void {
    this.leaseEpoch = -1;
    this.leaseUntil = -Infinity;
    this.leaseAskAt = -Infinity;
  }

  /** Status for /cluster; `startedWithoutState` while an amnesiac start is not settled (design.md §4.7). */
  status(now: number): MembershipStatus {
    const out: MembershipStatus = { role: this.role, term: this.term, leader: this.leader, commitIndex: this.commit, logLength: this.lastIndex() + 1, leaseMs: Math.round(this.leaseRemainingMs(now)) };
    const a = this.amnesia;
    // (Once resolved, log trusted and rejoined, only the term it does not vote in is left: not worth showing.)
    if (a !== null && (!a.resolved || a.rejoin || !a.logTrusted)) {
      out.startedWithoutState = { waitingFor: a.resolved ? [] : this.unanswered(), noVoteThrough: a.noVoteThrough, logTrusted: a.logTrusted, rejoin: a.rejoin };
    }
    return out;
  }
}
