import { connect, createServer } from 'node:net';
import type { Server, Socket } from 'node:net';

/**
 * A TCP forwarder used to cut the network between chainkv nodes without touching them.
 *
 * It listens on 127.0.0.1:<port> and forwards every accepted connection to a target port.
 *
 *  - `block()` cuts the link: every existing connection (both halves) is destroyed, and new
 *    connections are still ACCEPTED but then held silently: nothing is read from them, nothing
 *    is forwarded, nothing is sent back, and the held socket is never closed by us. It is never
 *    refused: chainkv takes a refused peer connection (ECONNREFUSED) as proof that the process
 *    behind the port is dead, and a cut network proves nothing of the kind. What the dialer
 *    sees is what a partition looks like: a connection that is up but silent.
 *  - `unblock()` restores the link: the held connections are destroyed, so the dialer notices
 *    and redials, and new connections are forwarded again.
 *
 * The proxy can also mirror the liveness of its target (`targetDown()` / `targetUp()`): while
 * the target process is not running and the link is not blocked, the proxy stops listening so
 * a dialer gets ECONNREFUSED exactly as it would without a proxy (chainkv's fast death
 * detection keeps working). While blocked, it keeps listening and holds, dead target or not.
 */
export class TcpProxy {
  private server: Server | null = null;
  private listening: Promise<void> | null = null;
  private blockedFlag = false;
  private targetAlive = true;
  private closed = false;
  /** Forwarded connections: client side -> upstream side. */
  private readonly pairs = new Map<Socket, Socket>();
  /** Accepted while blocked, never forwarded. */
  private readonly held = new Set<Socket>();
  private boundPort = 0;
  readonly stats = { accepted: 0, forwarded: 0, held: 0, cut: 0 };

  constructor(
    readonly targetPort: number,
    readonly label = `-> ${targetPort}`,
    readonly targetHost = '127.0.0.1',
    readonly host = '127.0.0.1',
  ) {}

  /** The port it listens on (after `start`). */
  get port(): number {
    return this.boundPort;
  }

  get blocked(): boolean {
    return this.blockedFlag;
  }

  /** Starts listening (port 0 = a free port); resolves with the port. */
  async start(port = 0): Promise<number> {
    this.boundPort = port;
    await this.openServer();
    return this.boundPort;
  }

  /** Cuts the link: existing connections are destroyed, new ones are accepted and held. */
  block(): void {
    if (this.blockedFlag) return;
    this.blockedFlag = true;
    this.cutForwarded();
    // Held connections need a listener even when the target is dead (never refuse).
    this.openServer().catch((err: unknown) => process.stderr.write(`proxy ${this.label}: cannot listen on ${this.boundPort}: ${String(err)}\n`));
  }

  /** Restores the link: held connections are destroyed (the dialer redials), new ones are forwarded. */
  unblock(): void {
    if (!this.blockedFlag) return;
    this.blockedFlag = false;
    for (const s of this.held) s.destroy();
    this.held.clear();
    if (!this.targetAlive) this.closeServer();
  }

  /** The target process is gone: refuse like its port would (unless blocked). */
  targetDown(): void {
    this.targetAlive = false;
    if (!this.blockedFlag) {
      this.closeServer();
      this.cutForwarded();
    }
  }

  /** The target process is (being) started: accept and forward again. */
  async targetUp(): Promise<void> {
    this.targetAlive = true;
    await this.openServer();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.cutForwarded();
    for (const s of this.held) s.destroy();
    this.held.clear();
    await this.closeServer();
  }

  private cutForwarded(): void {
    for (const [client, upstream] of this.pairs) {
      client.destroy();
      upstream.destroy();
      this.stats.cut++;
    }
    this.pairs.clear();
  }

  private openServer(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.listening !== null) return this.listening;
    const server = createServer({ pauseOnConnect: true }, (socket) => this.onConnection(socket));
    this.server = server;
    this.listening = new Promise<void>((resolve, reject) => {
      server.once('error', (err) => {
        if (this.server === server) {
          this.server = null;
          this.listening = null;
        }
        reject(err);
      });
      server.listen(this.boundPort, this.host, () => {
        server.removeAllListeners('error');
        server.on('error', () => undefined);
        const addr = server.address();
        if (typeof addr === 'object' && addr !== null) this.boundPort = addr.port;
        resolve();
      });
    });
    return this.listening;
  }

  private closeServer(): Promise<void> {
    const server = this.server;
    if (server === null) return Promise.resolve();
    this.server = null;
    this.listening = null;
    return new Promise((resolve) => server.close(() => resolve()));
  }

  private onConnection(client: Socket): void {
    this.stats.accepted++;
    client.on('error', () => undefined);
    if (this.closed) {
      client.destroy();
      return;
    }
    if (this.blockedFlag) {
      // Held: paused (pauseOnConnect), so nothing is read; the dialer's writes fill the
      // kernel buffers and then its own queue, as over a link that went silent.
      this.stats.held++;
      this.held.add(client);
      client.on('close', () => this.held.delete(client));
      return;
    }
    this.stats.forwarded++;
    const upstream = connect({ host: this.targetHost, port: this.targetPort });
    upstream.setNoDelay(true);
    client.setNoDelay(true);
    this.pairs.set(client, upstream);
    const teardown = (): void => {
      this.pairs.delete(client);
      client.destroy();
      upstream.destroy();
    };
    upstream.on('error', teardown);
    client.on('error', teardown);
    upstream.on('close', teardown);
    client.on('close', teardown);
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
  }
}
