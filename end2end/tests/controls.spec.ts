// Pausing the view and filtering by topic.
import { test, expect, openLive, rowIds, row } from './server';

test('pause freezes the list and counts what waits; resume shows it', async ({ page, server }) => {
  await openLive(page);
  const first = await server.publish('chat', 'before pause');
  await expect(row(page, first.id)).toHaveCount(1);

  const pause = page.getByTestId('pause');
  await pause.click();
  await expect(pause).toHaveText('Resume');
  const frozen = await rowIds(page);

  const waiting = [];
  for (let i = 1; i <= 3; i++) waiting.push(await server.publish('chat', `while paused ${i}`));
  // The stream took them in (the counters move) ...
  await expect(page.getByTestId('waiting')).toHaveText('3 new');
  await expect(page.getByTestId('received')).toHaveText('4');
  // ... but the list did not change.
  expect(await rowIds(page)).toEqual(frozen);

  await pause.click();
  await expect(pause).toHaveText('Pause');
  await expect(page.getByTestId('waiting')).toHaveCount(0);
  await expect(row(page, waiting[2].id)).toHaveCount(1);
  expect(await rowIds(page)).toEqual([...waiting.map((p) => p.id).reverse(), first.id]);
});

test('unchecking a topic hides its rows; checking it shows them again', async ({ page, server }) => {
  await openLive(page);
  const chat1 = await server.publish('chat', 'chat one');
  const alert1 = await server.publish('alert', 'alert one');
  await expect(row(page, alert1.id)).toHaveCount(1);

  const chatBox = page.getByTestId('filter-chat');
  await expect(chatBox).toBeChecked();
  await chatBox.uncheck();
  await expect(page.locator('li.event[data-topic=chat]')).toHaveCount(0);
  expect(await rowIds(page)).toEqual([alert1.id]);

  // Rows of a hidden topic that arrive meanwhile stay hidden, others still show.
  const chat2 = await server.publish('chat', 'chat two');
  const alert2 = await server.publish('alert', 'alert two');
  await expect(row(page, alert2.id)).toHaveCount(1);
  await expect(page.getByTestId('received')).toHaveText('4');
  expect(await rowIds(page)).toEqual([alert2.id, alert1.id]);

  await chatBox.check();
  await expect(page.locator('li.event[data-topic=chat]')).toHaveCount(2);
  expect(await rowIds(page)).toEqual([alert2.id, chat2.id, alert1.id, chat1.id]);
  await expect(page.getByTestId('filter-alert')).toBeChecked();
  await expect(page.getByTestId('filter-tick')).toBeChecked();
});
