// Hidden pages: when every tab of the view has been hidden for `?hidden_release_ms=` the
// leader lets the stream go (badge "paused (hidden)"), and resumes it from the last id when a
// tab is shown again. Headless Chromium keeps every page visible, so the test overrides
// `document.visibilityState` in the page and dispatches `visibilitychange` itself.
import type { Page } from '@playwright/test';
import { test, expect, rowIds, row, type Published } from './server';
import { serverOpenStreams, serverStreamsOpened } from './proxies';

async function setHidden(page: Page, hidden: boolean): Promise<void> {
  await page.evaluate((hidden) => {
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (hidden ? 'hidden' : 'visible') });
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => hidden });
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
}

async function expectExactly(page: Page, published: Published[]): Promise<void> {
  await expect(row(page, published.at(-1)!.id)).toHaveCount(1);
  const ids = await rowIds(page);
  expect(new Set(ids).size, 'no duplicate row').toBe(ids.length);
  expect(ids, 'every event, in order, nothing missing').toEqual(published.map((e) => e.id).reverse());
}

test('the stream is let go while every tab is hidden, and resumed without a gap', async ({ page, server }) => {
  const other = await page.context().newPage();
  for (const p of [page, other]) {
    await p.goto('/?hidden_release_ms=1000');
    await expect(p.getByTestId('status')).toHaveText('live');
  }
  const [leader, follower] = (await page.evaluate(() => document.documentElement.dataset.sseRole)) === 'leader'
    ? [page, other]
    : [other, page];
  await expect.poll(() => serverOpenStreams(server.logs)).toBe(1);
  const published: Published[] = [await server.publish('chat', 'before')];
  await expectExactly(follower, published);

  // Only the leader hidden: someone still looks, the stream stays.
  await setHidden(leader, true);
  await new Promise((r) => setTimeout(r, 2000)); // longer than the release delay, on purpose
  expect(serverOpenStreams(server.logs)).toBe(1);
  await expect(leader.getByTestId('status')).toHaveText('live');

  // Every tab hidden: released after about a second.
  const hiddenAt = Date.now();
  await setHidden(follower, true);
  await expect.poll(() => serverOpenStreams(server.logs), { timeout: 5_000 }).toBe(0);
  const releasedMs = Date.now() - hiddenAt;
  for (const p of [leader, follower]) await expect(p.getByTestId('status')).toHaveText('paused (hidden)');

  // Published while nobody streams.
  for (let i = 0; i < 3; i++) published.push(await server.publish('chat', `while paused ${i}`));
  const opened = serverStreamsOpened(server.logs);

  // One tab visible again: the leader resumes from the last id.
  await setHidden(follower, false);
  await expect.poll(() => serverStreamsOpened(server.logs)).toBe(opened + 1);
  await expect.poll(() => serverOpenStreams(server.logs)).toBe(1);
  published.push(await server.publish('chat', 'after'));
  for (const p of [leader, follower]) {
    await expect(p.getByTestId('status')).toHaveText('live');
    await expectExactly(p, published);
  }
  expect(server.logs.join('')).toMatch(/stream opened[^\n]*resume=/);
  console.log(`hidden release: stream closed at the server ≤${releasedMs} ms after the last tab was hidden (delay 1000 ms)`);
});

test('a tab alone pauses and resumes too', async ({ page, server }) => {
  await page.goto('/?hidden_release_ms=500');
  await expect(page.getByTestId('status')).toHaveText('live');
  const published: Published[] = [await server.publish('chat', 'before')];
  await expectExactly(page, published);
  await setHidden(page, true);
  await expect(page.getByTestId('status')).toHaveText('paused (hidden)');
  await expect.poll(() => serverOpenStreams(server.logs)).toBe(0);
  published.push(await server.publish('chat', 'while hidden'));
  await setHidden(page, false);
  await expect(page.getByTestId('status')).toHaveText('live');
  published.push(await server.publish('chat', 'after'));
  await expectExactly(page, published);
  await expect(page.getByTestId('received')).toHaveText('3');
});
