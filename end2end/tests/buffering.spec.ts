// The original report's symptom, diagnosed in the page: behind an imitation of
// HttpPlatformHandler (it holds the response until about 8 KB have gathered), steady ticks
// arrive in bursts and the page says something is buffering; with the server's padding for
// HttpPlatformHandler (EVENTS_PAD=on) the same path delivers live and the page says so.
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test, expect } from './server';

/** HttpPlatformHandler's output path, as measured: nothing leaves until 8 KB are held. */
async function httpPlatformHandler(upstream: string): Promise<{ url: string; close: () => void }> {
  const target = new URL(upstream);
  const server = http.createServer((req, res) => {
    const forward = http.request(
      { host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        let held: Buffer[] = [];
        let size = 0;
        up.on('data', (chunk: Buffer) => {
          held.push(chunk);
          size += chunk.length;
          if (size >= 8192) {
            res.write(Buffer.concat(held));
            held = [];
            size = 0;
          }
        });
        up.on('end', () => res.end(Buffer.concat(held)));
      },
    );
    forward.on('error', () => res.destroy());
    req.pipe(forward);
    res.on('close', () => forward.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

test.describe('unpadded, behind the 8 KB buffer', () => {
  test.use({ serverOptions: { tick: '50ms', env: { EVENTS_PAD: 'off' } } });

  test('the page says the stream is buffered and names the causes', async ({ page, server }) => {
    const proxy = await httpPlatformHandler(server.url);
    try {
      await page.goto(proxy.url + '/');
      const verdict = page.getByTestId('buffering');
      await expect(verdict).toHaveAttribute('data-verdict', 'buffered', { timeout: 20_000 });
      await expect(verdict).toContainText('HttpPlatformHandler');
      await expect(verdict).toContainText('compression');
      await expect(verdict).toContainText('Troubleshooting');
    } finally {
      proxy.close();
    }
  });
});

test.describe('padded for HttpPlatformHandler', () => {
  test.use({ serverOptions: { tick: '200ms', env: { EVENTS_PAD: 'on' } } });

  test('the same path delivers live and the page says so', async ({ page, server }) => {
    const proxy = await httpPlatformHandler(server.url);
    try {
      await page.goto(proxy.url + '/');
      await expect(page.getByTestId('status')).toHaveText('live', { timeout: 10_000 });
      const verdict = page.getByTestId('buffering');
      await expect(verdict).toHaveAttribute('data-verdict', 'live', { timeout: 10_000 });
      // Keep watching for a few seconds' worth of ticks: still live, never buffered.
      await expect
        .poll(async () => Number(await page.getByTestId('received').textContent()), { timeout: 10_000 })
        .toBeGreaterThan(15);
      await expect(verdict).toHaveAttribute('data-verdict', 'live');
    } finally {
      proxy.close();
    }
  });
});
