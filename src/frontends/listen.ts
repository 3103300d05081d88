import type { Server } from 'node:net';

/** Starts a server listening; resolves with the port it got (port 0 picks a free one), rejects on EADDRINUSE and the like. */
export function listen(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const addr = server.address();
      resolve(typeof addr === 'object' && addr !== null ? addr.port : port);
    });
  });
}
