// One stream per browser, not per tab: the tabs of one browser elect a leader (Web Locks) that
// holds the only stream and relays it (BroadcastChannel); when it closes, another takes over
// and resumes from the last id, with no gap and no duplicate in any tab.
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Page } from '@playwright/test';
import { test, expect, rowIds, row, RESULTS_DIR, type Published } from './server';
import { serverOpenStreams, serverStreamsOpened } from './proxies';

const TABS = 8;

function role(page: Page): Promise<string | null> {
  return page.evaluate(() => document.documentElement.getAttribute('data-sse-role'));
}

async function expectEverywhere(pages: Page[], published: Published[]): Promise<void> {
  for (const p of pages) {
    await expect(row(p, published.at(-1)!.id)).toHaveCount(1);
    const ids = await rowIds(p);
    expect(new Set(ids).size, 'no duplicate row').toBe(ids.length);
    expect(ids, 'every event, in order, nothing missing').toEqual(published.map((e) => e.id).reverse());
  }
}

test(`${TABS} tabs share one stream, and another tab takes over when the leader closes`, async ({
  page,
  server,
}) => {
  test.setTimeout(60_000);
  const published: Published[] = [await server.publish('chat', 'before the tabs')];
  const pages = [page];
  for (let i = 1; i < TABS; i++) pages.push(await page.context().newPage());
  for (const p of pages) {
    await p.goto('/');
    await expect(p.getByTestId('status')).toHaveText('live');
  }
  const roles = await Promise.all(pages.map(role));
  expect(roles.filter((r) => r === 'leader'), roles.join(',')).toHaveLength(1);
  expect(roles.filter((r) => r === 'follower'), roles.join(',')).toHaveLength(TABS - 1);
  await expect.poll(() => serverOpenStreams(server.logs)).toBe(1);
  expect(serverStreamsOpened(server.logs)).toBe(1);

  published.push(await server.publish('chat', 'to every tab'));
  await expectEverywhere(pages, published);

  // The leader goes; one event is published at once, before anyone took over.
  const leader = pages[roles.indexOf('leader')];
  const rest = pages.filter((p) => p !== leader);
  const openedBefore = serverStreamsOpened(server.logs);
  for (const p of rest) {
    await p.evaluate(() => {
      const html = document.documentElement;
      new MutationObserver(() => {
        if (html.getAttribute('data-sse-role') === 'leader') (window as unknown as { __ledAt: number }).__ledAt = Date.now();
      }).observe(html, { attributes: true, attributeFilter: ['data-sse-role'] });
    });
  }
  const closedAt = Date.now();
  await leader.close();
  published.push(await server.publish('chat', 'during the hand-over'));
  await expect.poll(async () => (await Promise.all(rest.map(role))).filter((r) => r === 'leader').length).toBe(1);
  const newLeader = rest[(await Promise.all(rest.map(role))).indexOf('leader')];
  const newLeaderAt = await newLeader.evaluate(() => (window as unknown as { __ledAt: number }).__ledAt);
  await expect.poll(() => serverStreamsOpened(server.logs)).toBe(openedBefore + 1);
  // The server's own time stamp of the new stream (same clock).
  const openedLine = server.logs.join('').split('\n').filter((l) => /stream opened/.test(l)).at(-1)!;
  const streamAt = Date.parse(openedLine.split(/\s/)[0]);
  published.push(await server.publish('chat', 'after the hand-over'));
  await expectEverywhere(rest, published);
  const shownAt = Date.now();
  await expect.poll(() => serverOpenStreams(server.logs)).toBe(1);
  for (const p of rest) await expect(p.getByTestId('status')).toHaveText('live');

  const handOver = {
    lock_ms: newLeaderAt - closedAt,
    stream_open_ms: streamAt - closedAt,
    event_in_every_tab_ms: shownAt - closedAt,
  };
  console.log(
    `hand-over (${TABS} tabs): new leader after ${handOver.lock_ms} ms, its stream open at the server after ${handOver.stream_open_ms} ms, ` +
      `the next event in all ${TABS - 1} tabs after ${handOver.event_in_every_tab_ms} ms (from page.close())`,
  );
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(
    path.join(RESULTS_DIR, 'hand-over.json'),
    JSON.stringify({ what: 'leader tab closed until ...', tabs: TABS, ...handOver, measured_at: new Date().toISOString() }, null, 2) +
      '\n',
  );
  expect(handOver.stream_open_ms).toBeLessThan(3_000);
});

test('the lock is named after the path base', async ({ page }) => {
  // Keyed by the path base (empty at the site root), so two applications on one origin, such as
  // `/live` and `/live-test` under one IIS site, never share a stream.
  await page.goto('/');
  await expect(page.getByTestId('status')).toHaveText('live');
  const names = await page.evaluate(async () => (await navigator.locks.query()).held?.map((l) => l.name));
  expect(names).toEqual(['sse-live-stream']);
});
