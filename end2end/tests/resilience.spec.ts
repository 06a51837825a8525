// "Keep every viewer live", the connection: a stream that is refused (503 while IIS recycles
// the application pool) or held (a proxy that stops passing bytes) is taken up again by the
// page itself, without a reload, and every event is shown exactly once.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Page } from '@playwright/test';
import { test, expect, rowIds, row, startServer, RESULTS_DIR, type Published, type Server } from './server';
import { Proxy } from './proxies';

// What Chromium itself logs about refused and cut streams; the page logs nothing of its own.
test.use({
  allowedConsoleErrors: [/503|502|Service Unavailable|MIME type|EventSource|net::ERR_/i],
});

/** Keeps every text the badge shows, with the time it changed (Date.now() in the page). */
async function recordBadge(page: Page): Promise<void> {
  await page.evaluate(() => {
    const el = document.querySelector('[data-testid=status]')!;
    const w = window as unknown as { __badge: { at: number; text: string }[] };
    w.__badge = [{ at: Date.now(), text: el.textContent ?? '' }];
    new MutationObserver(() => w.__badge.push({ at: Date.now(), text: el.textContent ?? '' })).observe(el, {
      childList: true,
      subtree: true,
      characterData: true,
    });
  });
}

function badgeHistory(page: Page): Promise<{ at: number; text: string }[]> {
  return page.evaluate(() => (window as unknown as { __badge: { at: number; text: string }[] }).__badge);
}

function saveResult(name: string, result: object): void {
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(path.join(RESULTS_DIR, name), JSON.stringify(result, null, 2) + '\n');
}

async function expectExactly(page: Page, published: Published[]): Promise<void> {
  await expect(row(page, published.at(-1)!.id)).toHaveCount(1);
  const ids = await rowIds(page);
  expect(new Set(ids).size, 'no duplicate row').toBe(ids.length);
  expect(ids, 'every event, in order, nothing missing').toEqual(published.map((p) => p.id).reverse());
}

async function publishSome(server: Server, out: Published[], n: number, label: string, gapMs = 0) {
  for (let i = 0; i < n; i++) {
    out.push(await server.publish('chat', `${label} ${i}`));
    if (gapMs) await new Promise((r) => setTimeout(r, gapMs)); // publishing pace, not an assertion
  }
}

let proxy: Proxy | undefined;
test.afterEach(async () => {
  await proxy?.stop();
  proxy = undefined;
});

test('503s while the application recycles: the page reconnects with backoff and misses nothing', async ({
  page,
  server,
}) => {
  proxy = await Proxy.start(server.url);
  await page.goto(`${proxy.url}/`);
  await expect(page.getByTestId('status')).toHaveText('live');
  const published: Published[] = [];
  await publishSome(server, published, 3, 'before');
  await expect(row(page, published.at(-1)!.id)).toHaveCount(1);
  await recordBadge(page);

  // The recycle: the stream is cut, and the next two attempts are refused.
  proxy.failNext(2, 503);
  proxy.cutStreams();
  // Events keep being published while the page is away.
  await publishSome(server, published, 6, 'during', 150);

  await expect(page.getByTestId('status')).toHaveText('live', { timeout: 15_000 });
  await publishSome(server, published, 3, 'after');
  await expectExactly(page, published);

  expect(proxy.failures.map((f) => f.status)).toEqual([503, 503]);
  const history = await badgeHistory(page);
  const texts = history.map((h) => h.text);
  expect(texts.some((t) => /^reconnecting in \d+ s$/.test(t)), `badge went ${texts.join(' → ')}`).toBe(true);
  const firstFailure = proxy.failures[0].at;
  const liveAgain = history.find((h) => h.at >= firstFailure && h.text === 'live');
  expect(liveAgain, `badge went ${texts.join(' → ')}`).toBeDefined();
  const recoveryMs = liveAgain!.at - firstFailure;
  console.log(`recovery after 2× 503: ${recoveryMs} ms from the first 503 to "live"; badge: ${texts.join(' → ')}`);
  saveResult('recovery-503.json', {
    what: 'first 503 answered by the proxy until the badge says live again (two 503s in a row)',
    recovery_ms: recoveryMs,
    badge: history.map((h) => ({ ms: h.at - firstFailure, text: h.text })),
    measured_at: new Date().toISOString(),
  });
  expect(recoveryMs).toBeLessThan(10_000);
});

for (const status of [502, 204]) {
  test(`a ${status} answer is not final either`, async ({ page, server }) => {
    proxy = await Proxy.start(server.url);
    await page.goto(`${proxy.url}/`);
    await expect(page.getByTestId('status')).toHaveText('live');
    await recordBadge(page);
    proxy.failNext(1, status);
    proxy.cutStreams();
    const published: Published[] = [];
    await publishSome(server, published, 2, 'during', 100);
    await expect(page.getByTestId('status')).toHaveText('live', { timeout: 15_000 });
    await publishSome(server, published, 2, 'after');
    await expectExactly(page, published);
    expect(proxy.failures.map((f) => f.status)).toEqual([status]);
    const texts = (await badgeHistory(page)).map((h) => h.text);
    expect(texts.some((t) => /^reconnecting in \d+ s$/.test(t)), `badge went ${texts.join(' → ')}`).toBe(true);
  });
}

test.describe('a held stream', () => {
  test.use({ serverOptions: { env: { EVENTS_HEARTBEAT: '1s' } } });

  test('the watchdog notices a stream that stopped breathing and takes it up again', async ({ page, server }) => {
    proxy = await Proxy.start(server.url);
    await page.goto(`${proxy.url}/`);
    await expect(page.getByTestId('status')).toHaveText('live');
    const published: Published[] = [];
    await publishSome(server, published, 2, 'before');
    await expect(row(page, published.at(-1)!.id)).toHaveCount(1);

    const requestsBefore = proxy.streamRequests.length;
    const heldAt = Date.now();
    proxy.holdStreams();
    // Published into the held stream: the page only gets these by resuming.
    await publishSome(server, published, 3, 'held', 100);

    await expect.poll(() => proxy!.heldClosed.length, { timeout: 8_000 }).toBe(1);
    await expect.poll(() => proxy!.streamRequests.length, { timeout: 8_000 }).toBeGreaterThan(requestsBefore);
    await expect(page.getByTestId('status')).toHaveText('live');
    await publishSome(server, published, 2, 'after');
    await expectExactly(page, published);

    const detectionMs = proxy.heldClosed[0] - heldAt;
    const reconnectMs = proxy.streamRequests[requestsBefore] - heldAt;
    console.log(
      `watchdog (heartbeat 1 s, limit 2.5 s): held stream closed after ${detectionMs} ms, ` +
        `new stream requested after ${reconnectMs} ms`,
    );
    saveResult('watchdog.json', {
      what: 'proxy stops passing bytes until the page closes that stream / asks for a new one (EVENTS_HEARTBEAT=1s)',
      detection_ms: detectionMs,
      reconnect_ms: reconnectMs,
      measured_at: new Date().toISOString(),
    });
    expect(detectionMs).toBeLessThan(2_500 + 500);
    expect(reconnectMs).toBeLessThan(2_500 + 1_500);
  });
});

test('a server restart keeps the list and resets no one: the history is in the event log', async ({ page }) => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'sse-live-e2e-restart-'));
  const servers: Server[] = [];
  try {
    const first = await startServer({ dataDir });
    servers.push(first);
    proxy = await Proxy.start(first.url);
    await page.goto(`${proxy.url}/`);
    await expect(page.getByTestId('status')).toHaveText('live');
    const published: Published[] = [];
    await publishSome(first, published, 3, 'before');
    await expect(row(page, published.at(-1)!.id)).toHaveCount(1);

    // The recycle: the process stops (its streams end), a new one starts on its own port and
    // the front sends new requests to it.
    await first.stop();
    const second = await startServer({ dataDir });
    servers.push(second);
    proxy.retarget(second.url);
    await publishSome(second, published, 3, 'after');
    await expect(page.getByTestId('status')).toHaveText('live', { timeout: 15_000 });
    await expectExactly(page, published);
    await expect(page.getByTestId('resets'), 'no history reset').toHaveCount(0);

    // A viewer arriving after the recycle sees the history from before it.
    await page.reload();
    await expect(page.getByTestId('status')).toHaveText('live');
    await expectExactly(page, published);
  } finally {
    for (const s of servers) await s.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
