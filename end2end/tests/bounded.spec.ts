// The list keeps at most EVENTS_PAGE_ROWS rows, on the server-rendered page and live.
import { test, expect, openLive, rowIds, row, type Published } from './server';

test.use({ serverOptions: { pageRows: 20 } });

test('the list stays bounded at EVENTS_PAGE_ROWS', async ({ page, server }) => {
  const before: Published[] = [];
  for (let i = 1; i <= 30; i++) before.push(await server.publish('tick', `before ${i}`));
  await openLive(page);
  expect(await rowIds(page)).toEqual(before.slice(-20).map((p) => p.id).reverse());

  const live: Published[] = [];
  for (let i = 1; i <= 50; i++) live.push(await server.publish(i % 5 ? 'chat' : 'alert', `live ${i}`));
  const newest = live.at(-1)!;
  await expect(row(page, newest.id)).toHaveCount(1);
  await expect(page.locator('ol[data-testid=events] > li.event')).toHaveCount(20);
  const ids = await rowIds(page);
  expect(ids[0]).toBe(newest.id);
  expect(ids).toEqual(live.slice(-20).map((p) => p.id).reverse());
  await expect(page.locator('li.event').first().locator('.text')).toHaveText('live 50');
  await expect(page.getByTestId('received')).toHaveText('50');
});
