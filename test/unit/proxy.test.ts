import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { TcpProxy } from '../support/proxy.ts';

/** The fault tests' TCP proxy: forwards, cuts without ever refusing, heals, mirrors a dead target. */
let echo: Server;
let proxy: TcpProxy;

before(async () => {
  echo = createServer((s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  });
  echo.listen(0, '127.0.0.1');
  await once(echo, 'listening');
  proxy = new TcpProxy((echo.address() as AddressInfo).port, 'test');
  await proxy.start();
});

after(async () => {
  await proxy.close();
  echo.close();
});

function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.off('error', reject);
      // A cut connection may end with a reset: expected here.
      s.on('error', () => undefined);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** Resolves when the socket closes (events.once would reject on the reset that may come first). */
function closed(s: Socket): Promise<void> {
  return new Promise((resolve) => (s.closed ? resolve() : s.once('close', () => resolve())));
}

/** Writes and waits for the echo; null if nothing came back in `ms`. */
async function roundTrip(s: Socket, text: string, ms = 300): Promise<string | null> {
  s.write(text);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      s.off('data', onData);
      resolve(null);
    }, ms);
    const onData = (d: Buffer): void => {
      clearTimeout(timer);
      resolve(d.toString());
    };
    s.once('data', onData);
  });
}

test('forwards, cuts existing connections on block, holds new ones silently, heals', async () => {
  const a = await dial(proxy.port);
  assert.equal(await roundTrip(a, 'one'), 'one');

  const aClosed = closed(a);
  proxy.block();
  await aClosed;

  // Accepted (not refused), but silent.
  const b = await dial(proxy.port);
  assert.equal(await roundTrip(b, 'two'), null);

  const bClosed = closed(b);
  proxy.unblock();
  await bClosed;
  const c = await dial(proxy.port);
  assert.equal(await roundTrip(c, 'three'), 'three');
  c.destroy();
});

test('mirrors a dead target: refused while down, held while down and blocked', async () => {
  proxy.targetDown();
  await assert.rejects(dial(proxy.port), (err: NodeJS.ErrnoException) => err.code === 'ECONNREFUSED');
  proxy.block();
  await new Promise((r) => setTimeout(r, 20));
  const held = await dial(proxy.port);
  assert.equal(await roundTrip(held, 'x'), null);
  const heldClosed = closed(held);
  proxy.unblock();
  await heldClosed;
  await assert.rejects(dial(proxy.port), (err: NodeJS.ErrnoException) => err.code === 'ECONNREFUSED');
  await proxy.targetUp();
  const s = await dial(proxy.port);
  assert.equal(await roundTrip(s, 'back'), 'back');
  s.destroy();
});
